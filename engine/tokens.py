"""Bearer tokens: personal access tokens bound to a space, stored only as a SHA-256 hash.

A token has scopes (`run`, `manage`, `admin`; admin implies the others) and an optional expiry.
The `operator` scope acts on what every space shares (the model registry, health details); no
space admin holds it or can grant it: only someone with database access makes it
(`relayflow tokens create --operator`). Its plaintext is returned once, at creation, and never stored.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import Forbidden, InvalidInputs, InvalidTransition, TokenNotFound, Unauthorized

if TYPE_CHECKING:  # the CLI imports this module for its constants: keep SQLAlchemy out of its start
    from engine.store import Store
    from engine.store.catalog import TokenInfo, TokenRecord

TOKEN_PREFIX = "rf_"
SPACE_SCOPES = ("run", "manage", "admin")
OPERATOR = "operator"
SCOPES = (*SPACE_SCOPES, OPERATOR)
DEFAULT_SPACE = "default"
DEFAULT_EXPIRY = timedelta(days=90)
MAX_EXPIRY = timedelta(days=3650)
NAME_MAX_CHARS = 200
_SPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    space_id: str
    token_id: int
    scopes: frozenset[str]
    owner: str = ""  # the person the token acts for (`--user`; by default the token's name)

    def require(self, scope: str) -> None:
        """Refuse with 403 unless the token has `scope` (admin implies the space scopes, never operator)."""
        if scope not in self.scopes and (scope == OPERATOR or "admin" not in self.scopes):
            raise Forbidden(f"This token lacks the '{scope}' scope.")

    @property
    def is_admin(self) -> bool:
        """True for a token with the space's admin scope."""
        return "admin" in self.scopes

    @property
    def is_operator(self) -> bool:
        """True for a token of the installation's operator (made with database access only)."""
        return OPERATOR in self.scopes


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only time its plaintext exists outside the caller's hands."""

    token_id: int
    token: str
    space_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    owner: str = ""


def _refuse(field: str, message: str) -> InvalidInputs:
    return InvalidInputs(f"{field}: {message}", errors=[{"field": field, "message": message}])


def parse_duration(text: str) -> timedelta | None:
    """`30d`, `12h`, `90m`, `45s`, `2w` as a timedelta; `never` as None."""
    cleaned = text.strip().lower()
    if cleaned == "never":
        return None
    match = _DURATION.fullmatch(cleaned)
    if match is None:
        raise _refuse("expires_in", f"'{text}' is not a duration; use a number and a unit "
                                    "(s, m, h, d, w) such as 30d, 12h or 90m, or 'never'")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, de-duplicated in order; refuses an unknown one by name, or none at all."""
    clean: list[str] = []
    for scope in scopes:
        if scope not in SCOPES:
            raise _refuse("scopes", f"unknown scope '{scope}'; the scopes are {', '.join(SCOPES)}")
        if scope not in clean:
            clean.append(scope)
    if not clean:
        raise _refuse("scopes", f"give at least one scope ({', '.join(SCOPES)})")
    return tuple(clean)


def check_grantable(scopes: Iterable[str]) -> None:
    """Refuse (403) a scope a token cannot grant through the API: only database access makes an operator."""
    if OPERATOR in scopes:
        raise Forbidden(f"scopes: the '{OPERATOR}' scope cannot be granted through the API; an operator "
                        "token is made with database access: `relayflow tokens create --operator`.")


def check_space_id(space_id: str) -> str:
    """A space id: 1-64 letters, digits, `_`, `.` or `-`, starting with a letter or digit."""
    if not _SPACE_ID.fullmatch(space_id):
        raise _refuse("space", f"'{space_id}' is not a space id; use 1-64 letters, digits, '_', '.' "
                               "or '-', starting with a letter or digit")
    return space_id


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, space_id: str, name: str, scopes: Iterable[str] = SCOPES,
                expires_in: timedelta | None = DEFAULT_EXPIRY, *, create_space: bool = False,
                owner: str | None = None) -> IssuedToken:
    """Create a token (and its space, if asked); the result holds its plaintext, shown once.

    `owner` is the person it acts for (a prompt's creator is an owner); by default its name.
    """
    check_space_id(space_id)
    if not name.strip() or len(name) > NAME_MAX_CHARS:
        raise _refuse("name", f"give a name of 1-{NAME_MAX_CHARS} characters")
    owner = name if owner is None else owner
    if not owner.strip() or len(owner) > NAME_MAX_CHARS:
        raise _refuse("user", f"give a user of 1-{NAME_MAX_CHARS} characters")
    clean = check_scopes(scopes)
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
        raise _refuse("expires_in", f"must be more than 0 and at most {MAX_EXPIRY.days} days (or never)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    token_id = store.catalog.insert_token(space_id, name, hash_token(token), clean, expires_at,
                                          create_space=create_space, owner=owner)
    return IssuedToken(token_id, token, space_id, name, clean, expires_at, owner)


def create_token(store: Store, space_id: str, name: str, scopes: tuple[str, ...] = SCOPES,
                 expires_in: timedelta | None = None, owner: str | None = None) -> str:
    """Create a token of an existing space and return its plaintext (shown once, never stored)."""
    return issue_token(store, space_id, name, scopes, expires_in, owner=owner).token


def list_tokens(store: Store, space_id: str | None) -> list[TokenInfo]:
    """The tokens of a space (None: every space), without their hashes."""
    return store.catalog.list_tokens(space_id)


def revoke_token(store: Store, token_id: int, space_id: str | None) -> datetime:
    """Revoke a token of the space (None: of any space); returns when. 404 if not there, 409 if already."""
    found, revoked_at = store.catalog.revoke_token(token_id, space_id)
    if not found:
        raise TokenNotFound(f"Token {token_id} not found.")
    if revoked_at is None:
        raise InvalidTransition(f"Token {token_id} is already revoked.")
    return revoked_at


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer …` header, or raise Unauthorized saying what is wrong."""
    if not header:
        raise Unauthorized("Missing Authorization header; send 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Malformed Authorization header; expected 'Bearer <token>'.")
    return token


def principal_of(record: TokenRecord | None, now: datetime | None = None) -> Principal:
    """Who a stored token acts as, or raise Unauthorized: unknown, revoked, or expired at `now`."""
    if record is None:
        raise Unauthorized("Unknown token; check that it was copied whole.")
    if record.revoked_at is not None:
        raise Unauthorized(f"This token was revoked at {record.revoked_at.isoformat(timespec='seconds')}.")
    if record.expires_at is not None and record.expires_at <= (now or datetime.now(UTC)):
        raise Unauthorized(f"This token expired at {record.expires_at.isoformat(timespec='seconds')}.")
    return Principal(record.space_id, record.id, frozenset(record.scopes), record.owner)


def authenticate(store: Store, header: str | None) -> Principal:
    """Resolve an `Authorization: Bearer …` header, or raise Unauthorized saying why (no cache:
    the web processes use engine/token_cache.py)."""
    return principal_of(store.catalog.use_token(hash_token(bearer_token(header))))


def ensure_local_token(database_url: str, token_file: Path | None = None) -> str:
    """The default space's local token: reuse the one in `token_file` if still valid, else create one."""
    from engine.db import get_engine
    from engine.settings import Settings
    from engine.store import Store

    store = Store.from_engine(get_engine(Settings(database_url=database_url)))
    store.catalog.ensure_space(DEFAULT_SPACE, "Default space")
    if token_file is not None and token_file.exists():
        token = token_file.read_text().strip()
        try:
            if authenticate(store, f"Bearer {token}").space_id == DEFAULT_SPACE:
                return token
        except Unauthorized:
            pass
    # whoever runs `up` owns the database, hence the installation: the local token is an operator's
    token = create_token(store, DEFAULT_SPACE, "local", SCOPES)
    if token_file is not None:
        token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token_file.unlink(missing_ok=True)  # created anew, private from its first byte
        with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(token + "\n")
    return token


def invalid_tokens(store: Store, token_ids: Iterable[int]) -> dict[int, str]:
    """Which of these (once valid) tokens are no longer, and why: revoked, expired or deleted.

    One read for all of them: open event streams re-check their tokens with it every few seconds.
    """
    ids = sorted(set(token_ids))
    states = store.catalog.token_states(ids)
    now = datetime.now(UTC)
    reasons: dict[int, str] = {}
    for token_id in ids:
        if token_id not in states:
            reasons[token_id] = "This token no longer exists."
            continue
        revoked_at, expires_at = states[token_id]
        if revoked_at is not None:
            reasons[token_id] = f"This token was revoked at {revoked_at.isoformat(timespec='seconds')}."
        elif expires_at is not None and expires_at <= now:
            reasons[token_id] = f"This token expired at {expires_at.isoformat(timespec='seconds')}."
    return reasons

"""Bearer tokens: personal access tokens bound to a space, stored only as a SHA-256 hash."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine.errors import Forbidden, Unauthorized
from engine.store import Store

TOKEN_PREFIX = "rf_"
SCOPES = ("run", "manage", "admin")
DEFAULT_SPACE = "default"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    space_id: str
    token_id: int
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Refuse with 403 unless the token has `scope` (admin implies all)."""
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"This token lacks the '{scope}' scope.")


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, space_id: str, name: str, scopes: tuple[str, ...] = SCOPES,
                 expires_in: timedelta | None = None) -> str:
    """Create a token and return its plaintext (shown once, never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(timezone.utc) + expires_in if expires_in else None
    store.catalog.insert_token(space_id, name, hash_token(token), scopes, expires_at)
    return token


def authenticate(store: Store, header: str | None) -> Principal:
    """Resolve an `Authorization: Bearer …` header, or raise Unauthorized saying why."""
    if not header:
        raise Unauthorized("Missing Authorization header; send 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Malformed Authorization header; expected 'Bearer <token>'.")
    record = store.catalog.use_token(hash_token(token))
    if record is None:
        raise Unauthorized("Unknown token.")
    if record.revoked_at is not None:
        raise Unauthorized("This token was revoked.")
    if record.expires_at is not None and record.expires_at <= datetime.now(timezone.utc):
        raise Unauthorized("This token has expired.")
    return Principal(record.space_id, record.id, frozenset(record.scopes))


def ensure_local_token(database_url: str, token_file: Path | None = None) -> str:
    """The default space's local token: reuse the one in `token_file` if still valid, else create one."""
    from engine.db import get_engine
    from engine.settings import Settings

    store = Store.from_engine(get_engine(Settings(database_url=database_url)))
    store.catalog.ensure_space(DEFAULT_SPACE, "Default space")
    if token_file is not None and token_file.exists():
        token = token_file.read_text().strip()
        try:
            if authenticate(store, f"Bearer {token}").space_id == DEFAULT_SPACE:
                return token
        except Unauthorized:
            pass
    token = create_token(store, DEFAULT_SPACE, "local")
    if token_file is not None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    return token

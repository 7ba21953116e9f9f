"""Storage of spaces, tokens, workflows and their immutable versions."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from engine.errors import VersionNotFound, WorkflowNotFound
from engine.store.sql import catalog as sql


@dataclass(frozen=True)
class TokenRecord:
    """A personal access token as stored (hash only)."""

    id: int
    space_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    revoked_at: datetime | None
    owner: str = ""


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed to its owners: everything but the hash."""

    id: int
    space_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    owner: str = ""


@dataclass(frozen=True)
class SpaceLoad:
    """A space's share of the workers: its own cap (None: the deployment's), running and waiting nodes."""

    id: str
    max_running_nodes: int | None
    running_nodes: int
    waiting_nodes: int


@dataclass(frozen=True)
class VersionRecord:
    """One immutable workflow version."""

    id: int
    workflow_id: str
    version: int
    definition: dict[str, Any]


class CatalogStore:
    """SQL for spaces, tokens and workflows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reads are single statements: autocommit spares the BEGIN and ROLLBACK round trips
        # (under READ COMMITTED a transaction would give them no common snapshot anyway).
        self.reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    def schema_revisions(self) -> set[str]:
        """The migration revision(s) the database is at (empty: never migrated)."""
        with self.reads.connect() as conn:
            return set(conn.execute(sql.SCHEMA_REVISION.clause).scalars())

    # -- spaces and tokens --------------------------------------------------------------------
    def ensure_space(self, space_id: str, name: str) -> None:
        """Create the space unless it exists."""
        with self.engine.begin() as conn:
            conn.execute(sql.INSERT_SPACE.clause,
                         {"id": space_id, "name": name})

    def set_space_cap(self, space_id: str, cap: int | None) -> bool:
        """Set the space's cap on running nodes (None: the deployment's default); False if no such space."""
        with self.engine.begin() as conn:
            return conn.execute(sql.SET_SPACE_CAP.clause,
                                {"id": space_id, "cap": cap}).rowcount == 1

    def space_loads(self) -> list[SpaceLoad]:
        """Every space with its cap, its running nodes and its nodes waiting for a slot."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.SPACE_LOADS.clause).all()
        return [SpaceLoad(r.id, r.max_running_nodes, r.running_nodes, r.waiting) for r in rows]

    def insert_token(self, space_id: str, name: str, token_hash: str, scopes: Sequence[str],
                     expires_at: datetime | None, create_space: bool = False, owner: str | None = None) -> int:
        """Store a token's hash (creating its space first if asked); returns its id."""
        with self.engine.begin() as conn:
            if create_space:
                conn.execute(sql.INSERT_SPACE_NAMED_BY_ID.clause,
                             {"id": space_id})
            return int(conn.execute(sql.INSERT_TOKEN.clause,
                {"space": space_id, "name": name, "owner": owner or name, "hash": token_hash, "scopes": list(scopes),
                 "expires": expires_at}).scalar_one())

    def list_tokens(self, space_id: str | None) -> list[TokenInfo]:
        """Tokens of a space (None: of every space), oldest first; never their hashes."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.LIST_TOKENS.clause, {"space": space_id}).all()
        return [TokenInfo(r.id, r.space_id, r.name, tuple(r.scopes), r.created_at, r.expires_at,
                          r.revoked_at, r.last_used_at, r.owner) for r in rows]

    def revoke_token(self, token_id: int, space_id: str | None) -> tuple[bool, datetime | None]:
        """Revoke a token of the space (None: of any space) unless it already is.

        Returns (found, revoked_at): revoked_at is when it was revoked now, or None if it was already.
        """
        with self.engine.begin() as conn:
            row = conn.execute(sql.REVOKE_TOKEN.clause,
                {"id": token_id, "space": space_id}).one()
        return bool(row.found), row.revoked_at

    def use_token(self, token_hash: str) -> TokenRecord | None:
        """Look a token up by hash and record its use (at most once a minute: not a write per request)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.USE_TOKEN.clause, {"hash": token_hash}).first()
        if row is None:
            return None
        return TokenRecord(row.id, row.space_id, row.name, tuple(row.scopes), row.expires_at, row.revoked_at,
                           row.owner)

    def use_token_cached(self, token_hash: str) -> tuple[TokenRecord | None, tuple[int, int, int]]:
        """`use_token` and, read in the same statement, the token table's generation (engine/token_cache.py)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.USE_TOKEN_CACHED.clause, {"hash": token_hash}).one()
        generation = (int(row.tokens), int(row.revoked), int(row.newest))
        if row.id is None:
            return None, generation
        return TokenRecord(row.id, row.space_id, row.name, tuple(row.scopes), row.expires_at, row.revoked_at,
                           row.owner), generation

    def token_generation(self) -> tuple[int, int, int]:
        """(tokens, revoked, newest id): any revocation, new or removed token changes it."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.TOKEN_GENERATION.clause).one()
        return int(row.tokens), int(row.revoked), int(row.newest)

    def token_states(self, token_ids: Sequence[int]) -> dict[int, tuple[datetime | None, datetime | None]]:
        """(revoked_at, expires_at) of each token that still exists, in one read (open streams re-check)."""
        if not token_ids:
            return {}
        with self.reads.connect() as conn:
            rows = conn.execute(sql.TOKEN_STATES.clause,
                                {"ids": list(token_ids)}).all()
        return {r.id: (r.revoked_at, r.expires_at) for r in rows}

    # -- workflows ------------------------------------------------------------------------------
    def insert_workflow(self, workflow_id: str, space_id: str, name: str, description: str | None,
                        definition: dict[str, Any], nodes: Sequence[tuple[str, str, list[str], bool]]) -> VersionRecord:
        """Create a workflow with its version 1."""
        with self.engine.begin() as conn:
            conn.execute(sql.INSERT_WORKFLOW.clause,
                {"id": workflow_id, "space": space_id, "name": name, "description": description})
            return self._insert_version(conn, workflow_id, 1, definition, nodes)

    def add_version(self, workflow_id: str, space_id: str, definition: dict[str, Any],
                    nodes: Sequence[tuple[str, str, list[str], bool]], name: str | None = None,
                    description: str | None = None) -> VersionRecord:
        """Store the next immutable version of a workflow."""
        with self.engine.begin() as conn:
            version = conn.execute(sql.NEXT_WORKFLOW_VERSION.clause,
                {"id": workflow_id, "space": space_id, "name": name, "description": description}).scalar()
            if version is None:
                raise WorkflowNotFound(f"Workflow {workflow_id} not found.")
            return self._insert_version(conn, workflow_id, version, definition, nodes)

    @staticmethod
    def _insert_version(conn: Any, workflow_id: str, version: int, definition: dict[str, Any],
                        nodes: Sequence[tuple[str, str, list[str], bool]]) -> VersionRecord:
        vid = conn.execute(sql.INSERT_VERSION.clause,
            {"wf": workflow_id, "version": version,
             "definition": json.dumps(definition, ensure_ascii=False)}).scalar_one()
        conn.execute(sql.INSERT_VERSION_NODE.clause,
            [{"vid": vid, "body": body, "node": n, "deps": deps, "needs": needs} for body, n, deps, needs in nodes])
        return VersionRecord(vid, workflow_id, version, definition)

    def publish(self, workflow_id: str, space_id: str, version: int | None) -> int:
        """Mark a version (default: the latest) as published; returns it."""
        with self.engine.begin() as conn:
            row = conn.execute(sql.LOCK_WORKFLOW.clause,
                               {"id": workflow_id, "space": space_id}).first()
            if row is None:
                raise WorkflowNotFound(f"Workflow {workflow_id} not found.")
            target = version if version is not None else row.latest_version
            if not 1 <= target <= row.latest_version:
                raise VersionNotFound(f"Workflow {workflow_id} has no version {target}.", field="version")
            conn.execute(sql.SET_PUBLISHED_VERSION.clause,
                         {"v": target, "id": workflow_id})
            return target

    def get_workflow(self, workflow_id: str, space_id: str) -> dict[str, Any]:
        """A workflow with its version list."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_WORKFLOW.clause,
                {"id": workflow_id, "space": space_id}).mappings().first()
            if row is None:
                raise WorkflowNotFound(f"Workflow {workflow_id} not found.")
            versions = conn.execute(sql.WORKFLOW_VERSIONS.clause,
                {"id": workflow_id}).mappings().all()
        return {**_workflow_dict(row), "versions": [{"version": v["version"], "created_at": v["created_at"].isoformat()}
                                                   for v in versions]}

    def list_workflows(self, space_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Workflows of a space, newest first."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.LIST_WORKFLOWS.clause,
                {"space": space_id, "limit": limit, "offset": offset}).mappings().all()
        return [_workflow_dict(r) for r in rows]

    def get_version(self, workflow_id: str, space_id: str, version: int | None) -> VersionRecord:
        """A version of a workflow of the space (default: the latest)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_VERSION.clause,
                {"id": workflow_id, "space": space_id, "version": version}).first()
        if row is None:
            if version is not None:
                self.get_workflow(workflow_id, space_id)  # raises WorkflowNotFound first
                raise VersionNotFound(f"Workflow {workflow_id} has no version {version}.", field="version")
            raise WorkflowNotFound(f"Workflow {workflow_id} not found.")
        return VersionRecord(row.id, row.workflow_id, row.version, row.definition)

    def resolve_workflow(self, space_id: str, ref: str, version: int | None) -> VersionRecord:
        """The version a reference means: `ref` is a workflow id or name of the space; without a
        version, its published version, else its latest. WorkflowNotFound / VersionNotFound otherwise."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.WORKFLOW_BY_REF.clause, {"space": space_id, "ref": ref}).first()
        if row is None:
            raise WorkflowNotFound(f"Workflow {ref} not found.")
        chosen = version if version is not None else (row.published_version or row.latest_version)
        return self.get_version(row.id, space_id, chosen)

    def get_version_by_id(self, version_id: int) -> VersionRecord:
        """A version by its row id (workers compile it once per process)."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_VERSION_BY_ID.clause,
                               {"id": version_id}).first()
        if row is None:
            raise VersionNotFound(f"Workflow version row {version_id} not found.")
        return VersionRecord(row.id, row.workflow_id, row.version, row.definition)


def _workflow_dict(row: Any) -> dict[str, Any]:
    return {"workflow_id": row["id"], "name": row["name"], "description": row["description"],
            "latest_version": row["latest_version"], "published_version": row["published_version"],
            "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}

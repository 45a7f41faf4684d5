"""Opening a store an operator inspects, without creating one by accident.

``eventstore.connect`` creates the event tables on first use: right for a runner,
wrong for an auditor. A mistyped path would leave an empty store behind that then
"verifies" clean. So the inspecting verbs first check that a Chronicle store is
there, and say what to do when it is not.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

import eventstore
from eventstore import EventStore
from eventstore.url import PostgresURL, SQLiteURL, parse_url

EVENTS_TABLE = "chronicle_events"


class AuditInputError(Exception):
    """Input an inspecting verb cannot work with; the message says what to do instead."""


@asynccontextmanager
async def open_existing(url: str) -> AsyncIterator[EventStore]:
    """The store at ``url``, refused (``AuditInputError``) when none is there.

    ``eventstore.connect`` then finds its tables in place and creates nothing.
    """
    config = parse_url(url)  # InvalidURL: an EventStoreError, reported as bad input
    if isinstance(config, SQLiteURL):
        _check_sqlite(config, url)
    else:
        await _check_postgres(config)
    async with eventstore.connect(url) as store:
        yield store


def _check_sqlite(config: SQLiteURL, url: str) -> None:
    path = Path(config.path)
    if not path.exists():
        raise AuditInputError(
            f"no store at {url}: {path.absolute()} does not exist; point --url "
            "(or CHRONICLE_URL) at an existing Chronicle store"
        )
    if not path.is_file():
        raise AuditInputError(f"no store at {url}: {path.absolute()} is not a file")
    if not (os.access(path, os.W_OK) and os.access(path.absolute().parent, os.W_OK)):
        # WAL readers need the -wal and -shm files next to the database
        raise AuditInputError(
            f"{path.absolute()} (or its directory) is read-only, and SQLite in WAL mode "
            "needs to write its -wal and -shm files even to read; copy the store (with "
            "any -wal file beside it) somewhere writable and point --url at the copy"
        )
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (EVENTS_TABLE,)
            ).fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise AuditInputError(
            f"{path.absolute()} is not a SQLite database ({exc}); point --url at a Chronicle store"
        ) from exc
    if found is None:
        raise AuditInputError(
            f"{path.absolute()} is a SQLite database without a Chronicle store in it "
            f"(no {EVENTS_TABLE} table); point --url at a Chronicle store"
        )


async def _check_postgres(config: PostgresURL) -> None:
    where = f"schema {config.schema!r} of {_redacted(config.dsn)}"
    try:
        conn = await asyncpg.connect(config.dsn, timeout=15)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise AuditInputError(
            f"cannot connect to PostgreSQL at {_redacted(config.dsn)}: {exc}; "
            "check the host, port, user and database in --url"
        ) from exc
    try:
        found = await conn.fetchval(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
            config.schema,
            EVENTS_TABLE,
        )
    finally:
        await conn.close()
    if found is None:
        raise AuditInputError(
            f"no Chronicle store in {where} (no {EVENTS_TABLE} table); check ?schema= in --url"
        )


def _redacted(dsn: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- what the log holds, for sizing work and refusing bad input ------------------------


async def table_exists(store: EventStore, name: str) -> bool:
    """Whether the store's database (its schema, on PostgreSQL) has table ``name``."""
    if store.backend == "sqlite":
        rows = await store.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1", (name,)
        )
    else:
        rows = await store.query(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
            "AND tablename = $1",
            (name,),
        )
    return bool(rows)


async def deployment_length(store: EventStore, deployment_id: str) -> int:
    """The deployment's last sequence number (its event count); 0 when it has none."""
    rows = await store.query(
        f"SELECT max(deployment_seq) FROM {EVENTS_TABLE} WHERE deployment_id = $1",
        (deployment_id,),
    )
    return int(rows[0][0] or 0) if rows else 0


async def deployment_lengths(store: EventStore) -> dict[str, int]:
    """Every deployment's event count, in deployment id order (code point order)."""
    rows = await store.query(
        f"SELECT deployment_id, max(deployment_seq) FROM {EVENTS_TABLE} GROUP BY deployment_id"
    )
    return {row[0]: int(row[1]) for row in sorted(rows, key=lambda row: str(row[0]))}


async def events_per_type(store: EventStore, deployment_id: str | None = None) -> dict[str, int]:
    """Events in the log per type (of one deployment, if given)."""
    where, params = ("WHERE deployment_id = $1", (deployment_id,)) if deployment_id else ("", ())
    rows = await store.query(
        f"SELECT type, count(*) FROM {EVENTS_TABLE} {where} GROUP BY type", params
    )
    return {row[0]: int(row[1]) for row in rows}


async def require_deployment(store: EventStore, deployment_id: str) -> int:
    """The deployment's length, refusing a deployment with no events."""
    length = await deployment_length(store, deployment_id)
    if length == 0:
        raise AuditInputError(
            f"deployment {deployment_id!r} has no events in this store; "
            "`chronicle stats` lists the deployments it holds"
        )
    return length

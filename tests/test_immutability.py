"""The log is immutable in the database itself, and tampering behind its back is detected.

- ``UPDATE`` and ``DELETE`` (and ``TRUNCATE`` on PostgreSQL) on ``chronicle_events``
  fail through a raw connection that bypasses the store, as does an insert that
  resolves a conflict by overwriting (``ON CONFLICT DO UPDATE``, ``MERGE`` on
  PostgreSQL; ``INSERT OR REPLACE`` / ``REPLACE`` on SQLite); the log is unchanged.
- Someone who can switch the triggers off (a PostgreSQL superuser, anyone with the
  SQLite file) can rewrite an event's data, type or link, but ``verify()`` names
  the altered event and its deployment, and other deployments still verify.
- The PostgreSQL writer role from ``writer_role_sql`` can append and read but can
  neither rewrite the log nor switch its triggers off.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from conftest import with_params

import eventstore
from eventstore import EventStore, NewEvent
from eventstore.backends.postgres import writer_role_sql

DEPLOYMENTS = ("dep-a", "dep-b", "dep-c", "dep-d")
EVENTS_PER_DEPLOYMENT = 20
TARGET = "dep-c"  # the deployment whose event is altered
TARGET_SEQ = 9  # ... and the event (deployment_seq), in the middle of its chain

ROW_SQL = (
    "SELECT position, deployment_id, deployment_seq, stream, stream_version, event_id, type, "
    "schema_version, data, metadata, recorded_at, prev_hash, hash FROM chronicle_events "
    "ORDER BY position"
)


# -- raw connections that bypass the store ----------------------------------------------


def split_pg_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    schema = params.pop("schema", "public")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), parts.fragment))
    return dsn, schema


class Raw:
    """SQL straight at the database, as ``$1``-style statements on either backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg: asyncpg.Connection | None = None
        self.sqlite: sqlite3.Connection | None = None

    async def open(self, dsn: str | None = None) -> Raw:
        if self.url.startswith("sqlite:"):
            self.sqlite = sqlite3.connect(self.url[len("sqlite:///") :], isolation_level=None)
        else:
            default_dsn, schema = split_pg_url(self.url)
            self.pg = await asyncpg.connect(
                dsn or default_dsn, server_settings={"search_path": schema}
            )
        return self

    async def close(self) -> None:
        if self.pg is not None:
            await self.pg.close()
        if self.sqlite is not None:
            self.sqlite.close()

    async def execute(self, sql: str, *args: Any) -> None:
        if self.pg is not None:
            await self.pg.execute(sql, *args)
        else:
            assert self.sqlite is not None
            self.sqlite.execute(sql.replace("$", "?"), args)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            return [tuple(row) for row in await self.pg.fetch(sql, *args)]
        assert self.sqlite is not None
        return self.sqlite.execute(sql.replace("$", "?"), args).fetchall()

    async def rows(self) -> list[tuple[Any, ...]]:
        return await self.fetch(ROW_SQL)


@pytest.fixture
async def raw(store_url: str) -> AsyncIterator[Raw]:
    conn = await Raw(store_url).open()
    yield conn
    await conn.close()


async def populate(store: EventStore) -> None:
    """Four deployments of 20 events each, interleaved, over two streams each."""
    counts = dict.fromkeys(DEPLOYMENTS, 0)
    round_ = 0
    while min(counts.values()) < EVENTS_PER_DEPLOYMENT:
        for n, dep in enumerate(DEPLOYMENTS):
            size = min(1 + (round_ + n) % 3, EVENTS_PER_DEPLOYMENT - counts[dep])
            if size == 0:
                continue
            stream = ("orders", "ledger")[(round_ + n) % 2]
            events = [
                NewEvent("Recorded", {"dep": dep, "n": counts[dep] + i, "note": "x" * 12})
                for i in range(size)
            ]
            await store.append(dep, stream, events)
            counts[dep] += size
        round_ += 1


async def expect_refused(raw: Raw, sql: str) -> Exception:
    """The database refuses ``sql`` (triggers / privileges), whoever sends it."""
    refused: tuple[type[Exception], ...] = (
        (asyncpg.PostgresError,) if raw.pg is not None else (sqlite3.DatabaseError,)
    )
    with pytest.raises(refused) as info:
        await raw.execute(sql)
    return info.value


# -- the database refuses changes ----------------------------------------------------------

CHANGES = {
    "update one": "UPDATE chronicle_events SET type = 'Forged' WHERE deployment_seq = 3",
    "update all": "UPDATE chronicle_events SET data = metadata",
    "delete one": "DELETE FROM chronicle_events WHERE deployment_id = 'dep-b' "
    "AND deployment_seq = 20",
    "delete all": "DELETE FROM chronicle_events",
}
PG_ONLY_CHANGES = {"truncate": "TRUNCATE chronicle_events"}


async def test_update_and_delete_fail_in_the_database(
    store: EventStore, raw: Raw, backend_name: str
) -> None:
    await populate(store)
    before = await raw.rows()
    assert len(before) == len(DEPLOYMENTS) * EVENTS_PER_DEPLOYMENT
    changes = dict(CHANGES)
    if backend_name == "postgresql":
        changes |= PG_ONLY_CHANGES
    for name, sql in changes.items():
        error = await expect_refused(raw, sql)
        verb = name.split()[0].upper()
        assert f"append-only: {verb} refused" in str(error), (name, error)
        if raw.pg is not None:
            assert isinstance(error, asyncpg.RestrictViolationError), (name, error)
        else:
            assert isinstance(error, sqlite3.IntegrityError), (name, error)
    assert await raw.rows() == before
    report = await store.verify()
    assert report.ok and report.events_checked == len(before)


def overwriting_inserts(backend: str) -> dict[str, str]:
    """Inserts whose conflict handling would overwrite or move an existing event."""
    columns = (
        "deployment_id, deployment_seq, stream, stream_version, event_id, {type}, "
        "schema_version, data, metadata, recorded_at, prev_hash, hash"
    )
    forged = columns.format(type="'Forged'")
    where = "WHERE deployment_id = 'dep-a' AND deployment_seq = 2"
    if backend == "sqlite":
        return {
            # same position: REPLACE deletes the old row without firing the DELETE trigger
            "insert or replace": f"INSERT OR REPLACE INTO chronicle_events "
            f"SELECT position, {forged} FROM chronicle_events {where}",
            # new position, same ids: the event moves to the end of the log, rewritten
            "replace into": f"REPLACE INTO chronicle_events "
            f"SELECT NULL, {forged} FROM chronicle_events {where}",
            "upsert": f"INSERT INTO chronicle_events SELECT position, {forged} "
            f"FROM chronicle_events {where} "
            "ON CONFLICT (position) DO UPDATE SET type = excluded.type",
        }
    return {
        "upsert": f"INSERT INTO chronicle_events SELECT position, {forged} "
        f"FROM chronicle_events {where} "
        "ON CONFLICT (position) DO UPDATE SET type = excluded.type",
        "merge update": "MERGE INTO chronicle_events t USING chronicle_events s "
        "ON t.position = s.position WHEN MATCHED THEN UPDATE SET type = 'Forged'",
        "merge delete": "MERGE INTO chronicle_events t USING chronicle_events s "
        "ON t.position = s.position WHEN MATCHED THEN DELETE",
    }


async def test_inserts_cannot_overwrite_an_event(
    store: EventStore, raw: Raw, backend_name: str
) -> None:
    """Conflict resolution is no back door: every overwriting insert is refused.

    On SQLite this currently FAILS for ``INSERT OR REPLACE`` and ``REPLACE``: the
    REPLACE conflict resolution deletes the conflicting row without firing DELETE
    triggers (SQLite fires them only with ``PRAGMA recursive_triggers``), so
    ``chronicle_events_no_delete`` never runs and the event is rewritten.
    """
    await populate(store)
    before = await raw.rows()
    let_through = []
    for name, sql in overwriting_inserts(backend_name).items():
        try:
            await raw.execute(sql)
        except (asyncpg.PostgresError, sqlite3.DatabaseError) as error:
            assert "append-only" in str(error), (name, error)
        else:
            let_through.append(name)
    after = await raw.rows()
    assert let_through == [], f"rewrote the log with {let_through}"
    assert after == before


# -- tampering with the triggers off is detected ---------------------------------------------


def flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


TAMPERS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    # column, new value from old, the reason verify gives
    "data": ("data", flip_last_byte, "stored hash does not match"),
    "type": ("type", lambda old: "Forged" + old, "stored hash does not match"),
    "prev_hash": ("prev_hash", flip_last_byte, "prev_hash does not match"),
}


async def tamper(raw: Raw, column: str, new_value: Any, position: int) -> None:
    """Rewrite one stored field with the append-only triggers switched off."""
    sql = f"UPDATE chronicle_events SET {column} = $1 WHERE position = $2"
    if raw.pg is not None:
        # a superuser session in which ordinary triggers do not fire
        async with raw.pg.transaction():
            await raw.pg.execute("SET LOCAL session_replication_role = replica")
            await raw.pg.execute(sql, new_value, position)
        return
    db = raw.sqlite
    assert db is not None
    (trigger_sql,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
        ("chronicle_events_no_update",),
    ).fetchone()
    db.execute("BEGIN IMMEDIATE")
    db.execute("DROP TRIGGER chronicle_events_no_update")
    db.execute(sql.replace("$", "?"), (new_value, position))
    db.execute(trigger_sql)  # put the guard back: the tamperer covers the tracks
    db.execute("COMMIT")


@pytest.mark.parametrize("field", sorted(TAMPERS))
async def test_verify_names_the_altered_event(store: EventStore, raw: Raw, field: str) -> None:
    await populate(store)
    clean = await store.verify()
    assert clean.ok and clean.events_checked == len(DEPLOYMENTS) * EVENTS_PER_DEPLOYMENT
    target = (await store.read_deployment(TARGET, TARGET_SEQ, 1))[0]
    column, change, reason = TAMPERS[field]
    (old,) = (
        await raw.fetch(
            f"SELECT {column} FROM chronicle_events WHERE position = $1", target.position
        )
    )[0]
    await tamper(raw, column, change(old), target.position)

    # the change is real and the triggers are back in force
    (new,) = (
        await raw.fetch(
            f"SELECT {column} FROM chronicle_events WHERE position = $1", target.position
        )
    )[0]
    assert new != old
    await expect_refused(raw, "UPDATE chronicle_events SET type = 'Again'")

    report = await store.verify()
    assert not report.ok
    assert report.first_bad_position == target.position
    assert report.first_bad_deployment_id == TARGET
    assert report.first_bad_deployment_seq == TARGET_SEQ
    assert report.reason is not None and reason in report.reason
    # deployments are checked in id order: dep-a and dep-b were whole, dep-c broke at seq 9
    assert report.deployments_checked == DEPLOYMENTS.index(TARGET) + 1
    assert report.events_checked == DEPLOYMENTS.index(TARGET) * EVENTS_PER_DEPLOYMENT + TARGET_SEQ

    alone = await store.verify(deployment_id=TARGET)
    assert (alone.ok, alone.first_bad_position, alone.events_checked) == (
        False,
        target.position,
        TARGET_SEQ,
    )
    for other in DEPLOYMENTS:
        if other != TARGET:
            ok = await store.verify(deployment_id=other)
            assert ok.ok and ok.events_checked == EVENTS_PER_DEPLOYMENT, (other, ok)


# -- the PostgreSQL writer role ----------------------------------------------------------------


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.mark.postgres_only
async def test_writer_role_appends_and_reads_but_cannot_rewrite(
    pg_dsn: str, pg_schema: str
) -> None:
    owner_url = with_params(pg_dsn, schema=pg_schema)
    role = f"chronicle_writer_{uuid.uuid4().hex[:12]}"
    password = secrets.token_hex(12)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with eventstore.connect(owner_url) as owner:  # creates the tables
            await populate(owner)
        await admin.execute(writer_role_sql(role, schema=pg_schema, password=password))
        role_dsn = as_role(pg_dsn, role, password)
        assert await admin.fetchval(
            "SELECT has_table_privilege($1, $2, 'INSERT') AND "
            "NOT has_table_privilege($1, $2, 'UPDATE')",
            role,
            f'"{pg_schema}".chronicle_events',
        )

        # the store works as the writer: append (with CAS), read, follow, verify
        async with eventstore.connect(with_params(role_dsn, schema=pg_schema)) as store:
            version = await store.stream_version("dep-a", "orders")
            result = await store.append(
                "dep-a", "orders", [NewEvent("ByWriter", {})], expected_version=version
            )
            assert result.stream_version == version + 1
            with pytest.raises(eventstore.WrongExpectedVersion):
                await store.append(
                    "dep-a", "orders", [NewEvent("Stale", {})], expected_version=version
                )
            created = await store.append("dep-new", "s", [NewEvent("ByWriter", {"n": 1})])
            assert (created.stream_version, created.deployment_seq) == (1, 1)
            latest = await store.read_stream("dep-a", "orders", backwards=True, limit=1)
            assert latest[0].type == "ByWriter"
            assert (await store.read_deployment("dep-new"))[0].data == {"n": 1}
            everything = await store.read_all(0, 1000)
            for _ in range(200):  # another session's open transaction may hold readers back
                if len(everything) == 82:
                    break
                await asyncio.sleep(0.05)
                everything = await store.read_all(0, 1000)
            assert [e.deployment_id for e in everything].count("dep-new") == 1
            horizon = await store.horizon()
            assert horizon.head_position >= created.position
            report = await store.verify()
            assert report.ok and report.events_checked == 82

        raw = await Raw(owner_url).open(dsn=role_dsn)
        try:
            assert await raw.pg.fetchval("SELECT current_user") == role  # type: ignore[union-attr]
            before = await raw.rows()
            assert len(before) == 82
            refused = {
                "update": "UPDATE chronicle_events SET type = 'Forged'",
                "delete": "DELETE FROM chronicle_events WHERE deployment_seq = 1",
                "truncate": "TRUNCATE chronicle_events",
                "disable triggers": "ALTER TABLE chronicle_events DISABLE TRIGGER ALL",
                "disable one trigger": "ALTER TABLE chronicle_events "
                "DISABLE TRIGGER chronicle_events_no_change",
                "drop trigger": "DROP TRIGGER chronicle_events_no_change ON chronicle_events",
                "replica role": "SET session_replication_role = replica",
                "upsert": "INSERT INTO chronicle_events SELECT * FROM chronicle_events "
                "ON CONFLICT (position) DO UPDATE SET type = 'Forged'",
            }
            for name, sql in refused.items():
                error = await expect_refused(raw, sql)
                assert isinstance(error, asyncpg.InsufficientPrivilegeError), (name, error)
                assert error.sqlstate == "42501"
            assert await raw.rows() == before
        finally:
            await raw.close()
    finally:
        if await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role):
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()

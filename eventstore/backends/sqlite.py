"""The embedded backend: one SQLite file in WAL mode.

SQLite has one writer at a time, so concurrency control is its write lock: an
append takes it (``BEGIN IMMEDIATE``), reads the heads, decides, inserts and
commits. All of that runs as one function in the connection's worker thread,
because every ``await`` on aiosqlite is a thread hop that costs about as much as
the insert itself (4 hops ran at 2.4k appends/s here, 1 hop at 6.2k/s).

Global positions are rowids, handed out under the write lock in commit order, so
reading the global log by position can never skip a late commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite

from .. import decimal_sql, encoding
from ..append import (
    AppendRequest,
    Head,
    Statement,
    StoredIdentity,
    inline_statements,
    replayed_result,
    seal,
    statement_runs,
)
from ..errors import InlineStepFailed, SchemaVersionError, StoreBusy, WrongExpectedVersion
from ..records import AppendResult, Horizon, RecordedEvent, ReplayedEvent
from ..validation import satisfies
from .base import (
    COLUMNS,
    IDENTITY_COLUMNS,
    REPLAY_COLUMNS,
    SCHEMA_COMPONENT,
    SCHEMA_VERSION,
    replay_query,
    stream_start,
)

R = TypeVar("R")

_DDL = (
    """CREATE TABLE IF NOT EXISTS chronicle_schema (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS chronicle_events (
        position INTEGER PRIMARY KEY,
        deployment_id TEXT NOT NULL,
        deployment_seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id BLOB NOT NULL,
        type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        CONSTRAINT chronicle_events_event_id_key UNIQUE (event_id),
        CONSTRAINT chronicle_events_deployment_seq_key UNIQUE (deployment_id, deployment_seq),
        CONSTRAINT chronicle_events_stream_version_key
            UNIQUE (deployment_id, stream, stream_version)
    )""",
    """CREATE TRIGGER IF NOT EXISTS chronicle_events_no_update
    BEFORE UPDATE ON chronicle_events
    BEGIN
        SELECT RAISE(ABORT, 'chronicle_events is append-only: UPDATE refused');
    END""",
    # INSERT OR REPLACE deletes the row it collides with without firing DELETE
    # triggers; so an insert must extend the log: a new position, a new event id,
    # the next deployment sequence and the next stream version. This also holds
    # the chains gapless in the database itself, whoever writes.
    """CREATE TRIGGER IF NOT EXISTS chronicle_events_extend_only
    BEFORE INSERT ON chronicle_events
    WHEN (NEW.position > 0  -- an auto-assigned rowid reads as -1 here
          AND NEW.position <= (SELECT coalesce(max(position), 0) FROM chronicle_events))
      OR EXISTS (SELECT 1 FROM chronicle_events WHERE event_id = NEW.event_id)
      OR NEW.deployment_seq <> 1 + (
          SELECT coalesce(max(deployment_seq), 0) FROM chronicle_events
          WHERE deployment_id = NEW.deployment_id)
      OR NEW.stream_version <> 1 + (
          SELECT coalesce(max(stream_version), 0) FROM chronicle_events
          WHERE deployment_id = NEW.deployment_id AND stream = NEW.stream)
    BEGIN
        SELECT RAISE(ABORT, 'chronicle_events is append-only: an insert must extend the log');
    END""",
    """CREATE TRIGGER IF NOT EXISTS chronicle_events_no_delete
    BEFORE DELETE ON chronicle_events
    BEGIN
        SELECT RAISE(ABORT, 'chronicle_events is append-only: DELETE refused');
    END""",
)

_INSERT = f"INSERT INTO chronicle_events ({COLUMNS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?)"
_HEAD = (
    "SELECT d.deployment_seq, d.hash, (SELECT coalesce(max(stream_version), 0) "
    "FROM chronicle_events WHERE deployment_id = ?1 AND stream = ?2) "
    "FROM (SELECT 1) LEFT JOIN (SELECT deployment_seq, hash FROM chronicle_events "
    "WHERE deployment_id = ?1 ORDER BY deployment_seq DESC LIMIT 1) AS d"
)
"""Both heads an append needs, in one statement (the append holds the write lock)."""
_STREAM_VERSION = (
    "SELECT coalesce(max(stream_version), 0) FROM chronicle_events "
    "WHERE deployment_id = ? AND stream = ?"
)


def _as_blobs(columns: str) -> str:
    """The column list with the byte columns read as BLOB whatever their storage class.

    SQLite keeps a value's type per cell: a row rewritten behind the log's back
    (``data || x'00'`` makes TEXT) would otherwise fail to decode as UTF-8 and
    crash a reader, where verification must report the event as altered.
    """
    blobs = {"event_id", "data", "metadata", "prev_hash", "hash"}
    return ", ".join(
        f"CAST({c} AS BLOB)" if c in blobs else c for c in (c.strip() for c in columns.split(","))
    )


_SELECT = f"SELECT {_as_blobs(COLUMNS)} FROM chronicle_events"
_REPLAY_COLUMNS = _as_blobs(REPLAY_COLUMNS)
_READ_DEPLOYMENT = (
    f"{_SELECT} WHERE deployment_id = ? AND deployment_seq >= ? ORDER BY deployment_seq LIMIT ?"
)


def _read_all_sql(
    after_position: int, limit: int, types: Sequence[str] | None
) -> tuple[str, tuple[Any, ...]]:
    if types is None:
        return f"{_SELECT} WHERE position > ? ORDER BY position LIMIT ?", (after_position, limit)
    marks = ",".join("?" * len(types))
    sql = f"{_SELECT} WHERE position > ? AND type IN ({marks}) ORDER BY position LIMIT ?"
    return sql, (after_position, *types, limit)


def _to_event(row: Sequence[Any]) -> RecordedEvent:
    return RecordedEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        uuid.UUID(bytes=row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        encoding.micros_to_datetime(row[10]),
        row[11],
        row[12],
    )


class SQLiteBackend:
    kind = "sqlite"

    def __init__(
        self,
        db: sqlite3.Connection,
        read_db: sqlite3.Connection,
        reader: aiosqlite.Connection,
        poll_interval: float,
        busy_timeout: float,
    ) -> None:
        self._db = db  # writes, on the loop thread
        self._read_db = read_db  # point reads, on the loop thread; sees only commits
        self._reader = reader  # scans, on aiosqlite's thread
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._appended = asyncio.Event()
        # Writes never await inside their transaction, except an explicit
        # ``transaction()``; this lock keeps every other write out while one is open.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        synchronous: str,
        poll_interval: float = 0.2,
        busy_timeout: float = 30.0,
    ) -> SQLiteBackend:
        db = _open_writer(path, synchronous)
        try:
            await _when_free(db, _ensure_schema, busy_timeout)
            read_db = _open_writer(path, synchronous)
        except BaseException:
            db.close()
            raise
        try:
            reader = await _open_reader(path, synchronous)
        except BaseException:
            db.close()
            read_db.close()
            raise
        return cls(db, read_db, reader, poll_interval, busy_timeout)

    async def _write(self, work: Callable[[sqlite3.Connection], R]) -> R:
        async with self._write_lock:
            return await _when_free(self._db, work, self._busy_timeout)

    async def append(self, request: AppendRequest) -> AppendResult:
        result = await self._write(partial(_append, request=request))
        if not result.replayed:
            self._appended.set()
            self._appended = asyncio.Event()
        return result

    async def read_stream(
        self,
        deployment_id: str,
        stream: str,
        from_version: int | None,
        limit: int | None,
        backwards: bool,
    ) -> list[RecordedEvent]:
        op, order = ("<=", "DESC") if backwards else (">=", "ASC")
        sql = (
            f"{_SELECT} WHERE deployment_id = ? AND stream = ? AND stream_version {op} ? "
            f"ORDER BY stream_version {order} LIMIT ?"
        )
        start = stream_start(from_version, backwards)
        return await self._fetch(sql, (deployment_id, stream, start, _limit(limit)))

    async def read_deployment(
        self, deployment_id: str, from_seq: int, limit: int | None
    ) -> list[RecordedEvent]:
        return await self._fetch(_READ_DEPLOYMENT, (deployment_id, from_seq, _limit(limit)))

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None
    ) -> list[RecordedEvent]:
        return await self._fetch(*_read_all_sql(after_position, limit, types))

    async def read_for_replay(
        self, after: int, limit: int, types: Sequence[str] | None, deployment_id: str | None
    ) -> list[ReplayedEvent]:
        # On the loop's own thread: a reader thread would pass the GIL back and
        # forth with the writer's per-row steps, which measured slower than both.
        sql, params = replay_query(_REPLAY_COLUMNS, after, limit, types, deployment_id)
        rows = self._read_db.execute(to_sqlite_placeholders(sql), params)
        return [ReplayedEvent(*row) for row in rows]

    async def execute(self, statements: Sequence[Statement]) -> None:
        await self._write(partial(_execute, statements=statements))

    async def query(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        # read models answer point and bounded queries: cheaper here than a thread hop
        cursor = self._read_db.execute(to_sqlite_placeholders(sql), params)
        rows: list[Sequence[Any]] = cursor.fetchall()
        return rows

    async def watch_remote_appends(self, watcher: Callable[[frozenset[str] | None], None]) -> None:
        """SQLite has no cross-process signal; nothing is reported (documented limit)."""

    def query_sync(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        cursor = self._read_db.execute(to_sqlite_placeholders(sql), params)
        rows: list[Sequence[Any]] = cursor.fetchall()
        return rows

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        async with self._write_lock:
            await _when_free(self._db, _begin_immediate, self._busy_timeout)
            try:
                yield SQLiteTransaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self._appended.set()
        self._appended = asyncio.Event()

    async def stream_version(self, deployment_id: str, stream: str) -> int:
        # a point lookup costs microseconds; a hop to the reader thread would cost more
        row = self._read_db.execute(_STREAM_VERSION, (deployment_id, stream)).fetchone()
        return int(row[0])

    async def deployment_ids(self) -> list[str]:
        rows = await self._reader.execute_fetchall(
            "SELECT DISTINCT deployment_id FROM chronicle_events ORDER BY deployment_id"
        )
        return [row[0] for row in rows]

    async def horizon(self) -> Horizon:
        rows = await self._reader.execute_fetchall(
            "SELECT coalesce(max(position), 0) FROM chronicle_events"
        )
        head = int(next(iter(rows))[0])
        return Horizon(head_position=head, readable_below=head + 1, held_back=0)

    async def wait_for_appends(self, max_wait: float) -> None:
        """In-process appends wake the waiter at once; other processes' by polling."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), min(max_wait, self._poll_interval))

    async def close(self) -> None:
        try:
            await self._reader.close()
        finally:
            self._read_db.close()
            self._db.close()

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[RecordedEvent]:
        rows = await self._reader.execute_fetchall(sql, params)
        return [_to_event(row) for row in rows]


class SQLiteTransaction:
    """Statements, queries and log reads inside one write transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def execute(self, statements: Sequence[Statement]) -> None:
        _run_statements(self._db, statements)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = self._db.execute(to_sqlite_placeholders(sql), params).fetchall()
        return rows

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        sql, params = _read_all_sql(after_position, limit, types)
        return [_to_event(row) for row in self._db.execute(sql, params)]

    async def read_deployment(
        self, deployment_id: str, from_seq: int, limit: int | None = None
    ) -> list[RecordedEvent]:
        params = (deployment_id, from_seq, _limit(limit))
        return [_to_event(row) for row in self._db.execute(_READ_DEPLOYMENT, params)]


def _limit(limit: int | None) -> int:
    return -1 if limit is None else limit


def _open_writer(path: str, synchronous: str) -> sqlite3.Connection:
    """The connection appends run on, on the event loop's own thread.

    Measured here, handing a commit to a worker thread and back cost more than the
    commit itself (aiosqlite ran at ~0.6x the rate of plain sqlite3 at
    synchronous=FULL). So appends run inline: the loop is held for the commit's
    own I/O (one WAL fsync at FULL) and never for a lock: ``busy_timeout`` is 0,
    and a database locked by another process is waited for with ``asyncio.sleep``
    (see ``_when_free``).
    """
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _register_functions(db)
        db.execute("PRAGMA busy_timeout = 0")
        db.execute("PRAGMA cache_size = -65536")
        # Some builds (Debian's among them) default to secure_delete = ON, which
        # zeroes and writes every page a DROP TABLE frees: swapping in a rebuilt
        # 1M-event read model then wrote ~1.5 GB of zeros to the WAL and took 2.3 s.
        # FAST still clears deleted rows on pages that are written anyway; the
        # freed pages hold only read-model rows, which the log can always rebuild.
        db.execute("PRAGMA secure_delete = FAST")
        _set_journal(db, synchronous)
    except BaseException:
        db.close()
        raise
    return db


def _register_functions(db: sqlite3.Connection) -> None:
    """SQL functions statements may use on both backends (PostgreSQL defines them in SQL)."""
    db.create_function("chronicle_dec_add", 2, decimal_sql.dec_add, deterministic=True)
    db.create_function("chronicle_dec_sub", 2, decimal_sql.dec_sub, deterministic=True)


def _set_journal(db: sqlite3.Connection, synchronous: str) -> None:
    deadline = time.monotonic() + 30.0
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # only while opening, when another process creates the file
    db.execute(f"PRAGMA synchronous = {synchronous}")


async def _open_reader(path: str, synchronous: str) -> aiosqlite.Connection:
    """Scans (the global log, whole deployments, verify) run off the loop, on aiosqlite."""
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
    try:
        await conn.execute("PRAGMA busy_timeout = 30000")
        await conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        await conn.close()
        raise
    return conn


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class _Busy(Exception):
    """Another connection holds the write lock; try again shortly."""


async def _when_free(
    db: sqlite3.Connection, work: Callable[[sqlite3.Connection], R], busy_timeout: float
) -> R:
    """Run ``work`` under the write lock, waiting for the lock without blocking the loop."""
    delay = 0.0005
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return work(db)
        except _Busy:
            if time.monotonic() > deadline:
                raise StoreBusy(
                    "the SQLite database stayed locked by another writer for "
                    f"{busy_timeout:.0f} s; is another process holding a long transaction?"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


def _begin_immediate(db: sqlite3.Connection) -> None:
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _Busy from exc
        raise


def _ensure_schema(db: sqlite3.Connection) -> None:
    """Create or check the tables. A store already at this version is only read
    (as on PostgreSQL): opening it takes no write lock and changes nothing."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chronicle_schema'"
    ).fetchone()
    if exists is not None:
        row = db.execute(
            "SELECT version FROM chronicle_schema WHERE component = ?", (SCHEMA_COMPONENT,)
        ).fetchone()
        if row is not None and row[0] == SCHEMA_VERSION:
            return
    _begin_immediate(db)
    try:
        for statement in _DDL:
            db.execute(statement)
        row = db.execute(
            "SELECT version FROM chronicle_schema WHERE component = ?", (SCHEMA_COMPONENT,)
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO chronicle_schema (component, version) VALUES (?, ?)",
                (SCHEMA_COMPONENT, SCHEMA_VERSION),
            )
        elif row[0] > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"this database's event tables are at schema version {row[0]}, newer than "
                f"this release understands ({SCHEMA_VERSION}); upgrade chronicle-store"
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _run_statements(db: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    for sql, params in statement_runs(statements):
        if len(params) == 1:
            db.execute(to_sqlite_placeholders(sql), params[0])
        else:
            db.executemany(to_sqlite_placeholders(sql), params)


def _execute(db: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    _begin_immediate(db)
    try:
        _run_statements(db, statements)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _read_head(db: sqlite3.Connection, request: AppendRequest) -> Head:
    seq, digest, version = db.execute(_HEAD, (request.deployment_id, request.stream)).fetchone()
    if seq is None:
        return Head(0, encoding.GENESIS_HASH, version)
    return Head(seq, digest, version)


def _stored(db: sqlite3.Connection, request: AppendRequest) -> list[StoredIdentity]:
    ids = [event.event_id.bytes for event in request.events]
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {IDENTITY_COLUMNS} FROM chronicle_events WHERE event_id IN ({marks})", ids
    ).fetchall()
    return [StoredIdentity(uuid.UUID(bytes=r[0]), *r[1:]) for r in rows]


def _append(db: sqlite3.Connection, request: AppendRequest) -> AppendResult:
    _begin_immediate(db)
    try:
        head = _read_head(db, request)
        if not satisfies(request.expected, head.stream_version):
            replay = replayed_result(request, _stored(db, request))
            db.execute("ROLLBACK")
            if replay is not None:
                return replay
            raise WrongExpectedVersion(
                request.deployment_id, request.stream, request.expected, head.stream_version
            )
        sealed = seal(request, head)
        rows = [
            (
                request.deployment_id,
                event.deployment_seq,
                request.stream,
                event.stream_version,
                event.event_id.bytes,
                event.type,
                event.schema_version,
                event.data,
                event.metadata,
                request.recorded_at_micros,
                event.prev_hash,
                event.hash,
            )
            for event in sealed
        ]
        try:
            cursor = (
                db.execute(_INSERT, rows[0]) if len(rows) == 1 else db.executemany(_INSERT, rows)
            )
        except sqlite3.IntegrityError:
            replay = replayed_result(request, _stored(db, request))
            db.execute("ROLLBACK")
            if replay is None:
                raise
            return replay
        last_rowid = cursor.lastrowid if len(rows) == 1 else None
        position: int = (
            last_rowid
            if last_rowid is not None
            else db.execute("SELECT last_insert_rowid()").fetchone()[0]
        )
        for sql, params in statement_runs(inline_statements(request, sealed, position)):
            _run_inline(db, sql, params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    last = sealed[-1]
    return AppendResult(last.stream_version, position, last.deployment_seq)


_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=512)
def to_sqlite_placeholders(sql: str) -> str:
    """``$1`` (the shared statement form) to ``?1`` (SQLite's numbered parameter)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def _run_inline(db: sqlite3.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    try:
        if len(params) == 1:
            db.execute(to_sqlite_placeholders(sql), params[0])
        else:  # a many-event append's run of one statement
            db.executemany(to_sqlite_placeholders(sql), params)
    except sqlite3.Error as exc:
        raise InlineStepFailed(sql, exc, _sqlite_constraint(exc)) from exc


def _sqlite_constraint(exc: sqlite3.Error) -> str | None:
    """The index SQLite names in a UNIQUE failure ("UNIQUE constraint failed: t.a, t.b")."""
    if not isinstance(exc, sqlite3.IntegrityError):
        return None
    return str(exc).split(": ", 1)[-1] or None

"""``EventStore``: the log's public face, the same on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from . import append as appending
from . import encoding, validation
from .append import InlineStep, Statement
from .backends.base import Backend, Transaction, check_read_args
from .errors import StoreClosed
from .records import (
    AppendResult,
    ExpectedVersion,
    Horizon,
    NewEvent,
    RecordedEvent,
    ReplayedEvent,
    VerifyReport,
)
from .url import PostgresURL, parse_url

_VERIFY_BATCH = 5_000


class EventStore:
    """An append-only, per-deployment event log with compare-and-swap on streams.

    Obtain one with :func:`connect`. Safe for concurrent use by many tasks of one
    event loop; on PostgreSQL many processes may share one database.
    """

    def __init__(self, backend: Backend, *, max_event_bytes: int, url: str = "") -> None:
        self._backend: Backend | None = backend
        self._kind = backend.kind
        self.max_event_bytes = max_event_bytes
        self.url = url
        """The URL this store was opened with: what another process passes to
        :func:`connect` to open the same store (a parallel rebuild's workers)."""

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._kind

    @property
    def closed(self) -> bool:
        return self._backend is None

    def _open(self) -> Backend:
        if self._backend is None:
            raise StoreClosed("the event store is closed; connect again")
        return self._backend

    async def append(
        self,
        deployment_id: str,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion | int = ExpectedVersion.ANY,
        inline: InlineStep | None = None,
    ) -> AppendResult:
        """Append ``events`` to one stream, all or nothing.

        Raises :class:`WrongExpectedVersion` when the stream is not where
        ``expected_version`` says, having written nothing. Re-sending events whose
        ids are already recorded returns the original result (``replayed=True``).

        ``inline`` receives the events as recorded and returns statements that run
        in the same transaction (read models that must commit with the log); if one
        fails, :class:`InlineStepFailed` is raised and nothing is written.
        """
        request = appending.prepare(
            deployment_id, stream, events, expected_version, self.max_event_bytes, inline
        )
        return await self._open().append(request)

    async def read_stream(
        self,
        deployment_id: str,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """One stream's events by version; backward from the last when no version is given."""
        check_read_args(limit, from_version)
        return await self._open().read_stream(deployment_id, stream, from_version, limit, backwards)

    async def read_deployment(
        self, deployment_id: str, from_seq: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """A deployment's whole log, in the order it was committed."""
        check_read_args(limit, from_seq)
        return await self._open().read_deployment(deployment_id, from_seq, limit)

    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """The global log after a position, in position order, never skipping a commit.

        An empty result means "nothing more is readable yet", not "the end": on
        PostgreSQL, events of a transaction wait until older transactions finish.
        ``types`` keeps only events of those types (a projection's catch-up).
        """
        check_read_args(limit, after_position)
        if types is not None:
            types = [validation.check_identifier("event type", t) for t in types]
            if not types:
                return []
        return await self._open().read_all(after_position, limit, types)

    async def read_for_replay(
        self,
        after: int = 0,
        limit: int = 5000,
        *,
        types: Sequence[str] | None = None,
        deployment_id: str | None = None,
    ) -> list[ReplayedEvent]:
        """Events for a replay: the global log after position ``after`` (gap-safe,
        as :meth:`read_all`), or with ``deployment_id`` that deployment's log after
        sequence number ``after``; each without ids, metadata, time or hashes."""
        check_read_args(limit, after)
        if deployment_id is not None:
            validation.check_identifier("deployment_id", deployment_id)
        if types is not None:
            types = [validation.check_identifier("event type", t) for t in types]
            if not types:
                return []
        return await self._open().read_for_replay(after, limit, types, deployment_id)

    async def execute(self, statements: Sequence[Statement]) -> None:
        """Run SQL statements (``$1`` placeholders) in one transaction, all or nothing.

        For the tables built from the log (read models); the event table itself
        refuses changes. ``chronicle_dec_add(a, b)`` and ``chronicle_dec_sub(a, b)``
        add and subtract exact decimals held as text on both backends.
        """
        if statements:
            await self._open().execute(statements)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Rows of one SQL query with ``$1`` placeholders, on the store's connection."""
        return await self._open().query(sql, params)

    def query_sync(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """A blocking read, for synchronous callers (possibly inside a running loop).

        SQLite answers on its in-process read connection; PostgreSQL on a private
        connection driven by a background thread.
        """
        return self._open().query_sync(sql, params)

    async def watch_remote_appends(self, watcher: Callable[[frozenset[str] | None], None]) -> None:
        """Call ``watcher`` with the deployments other processes have appended to.

        For caches of read-model rows (the StateManager's HOT tier): PostgreSQL
        reports them a few milliseconds after the commit; ``None`` means "unknown
        which: assume any" (after a lost connection, or too many to list). SQLite
        reports nothing: it has no cross-process signal.
        """
        await self._open().watch_remote_appends(watcher)

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One write transaction spanning several awaits: statements, queries, log reads.

        For work that must read and write atomically (a rebuild's final swap).
        Keep it short: on SQLite it holds the database's write lock throughout.
        """
        return self._open().transaction()

    async def stream_version(self, deployment_id: str, stream: str) -> int:
        """The stream's current version; 0 when it has no events."""
        return await self._open().stream_version(deployment_id, stream)

    async def deployment_ids(self) -> list[str]:
        return await self._open().deployment_ids()

    async def horizon(self) -> Horizon:
        """How far global readers can go now and how many events wait behind open transactions."""
        return await self._open().horizon()

    async def subscribe(
        self,
        after_position: int = 0,
        *,
        batch_size: int = 1000,
        idle_timeout: float = 1.0,
    ) -> AsyncIterator[RecordedEvent]:
        """Catch up from ``after_position``, then follow new appends, forever.

        Every committed event is yielded exactly once, in position order. Stop by
        breaking out of the loop (or closing the iterator); resume later from the
        last ``event.position`` you processed.
        """
        check_read_args(batch_size, after_position)
        position = after_position
        while True:
            backend = self._open()
            batch = await backend.read_all(position, batch_size, None)
            for event in batch:
                position = event.position
                yield event
            if len(batch) < batch_size:
                await backend.wait_for_appends(idle_timeout)

    async def verify(self, deployment_id: str | None = None) -> VerifyReport:
        """Recompute every hash chain (or one deployment's) from the stored fields.

        Reports the first event, in deployment order, whose hash does not match its
        content or whose link to its predecessor is broken.
        """
        backend = self._open()
        deployments = (
            [deployment_id] if deployment_id is not None else (await backend.deployment_ids())
        )
        checked = 0
        for dep in deployments:
            validation.check_identifier("deployment_id", dep)
            prev = encoding.GENESIS_HASH
            expected_seq = 1
            while True:
                batch = await backend.read_deployment(dep, expected_seq, _VERIFY_BATCH)
                for event in batch:
                    checked += 1
                    reason = chain_fault(event, prev, expected_seq)
                    if reason is not None:
                        return VerifyReport(
                            ok=False,
                            deployments_checked=deployments.index(dep) + 1,
                            events_checked=checked,
                            first_bad_position=event.position,
                            first_bad_deployment_id=dep,
                            first_bad_deployment_seq=event.deployment_seq,
                            reason=reason,
                        )
                    prev = event.hash
                    expected_seq += 1
                if len(batch) < _VERIFY_BATCH:
                    break
        return VerifyReport(ok=True, deployments_checked=len(deployments), events_checked=checked)

    async def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.close()

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def chain_fault(event: RecordedEvent, prev_hash: bytes, expected_seq: int) -> str | None:
    """Why ``event`` does not continue a chain ending in ``prev_hash``, or ``None``."""
    if event.deployment_seq != expected_seq:
        return f"deployment sequence jumps to {event.deployment_seq}, expected {expected_seq}"
    if event.prev_hash != prev_hash:
        return "prev_hash does not match the previous event's hash"
    recomputed = encoding.chain_hash(
        prev_hash,
        event.deployment_id,
        event.deployment_seq,
        event.stream,
        event.stream_version,
        event.event_id,
        event.type,
        event.schema_version,
        encoding.datetime_to_micros(event.recorded_at),
        event.raw_data,
        event.raw_metadata,
    )
    if recomputed != event.hash:
        return "stored hash does not match the event's content"
    return None


class _Connecting:
    """``await connect(url)`` or ``async with connect(url) as store``."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._store: EventStore | None = None

    def __await__(self) -> Generator[Any, None, EventStore]:
        return _open_store(self._url, **self._options).__await__()

    async def __aenter__(self) -> EventStore:
        self._store = await _open_store(self._url, **self._options)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()


def connect(url: str, *, max_event_bytes: int = validation.DEFAULT_MAX_EVENT_BYTES) -> _Connecting:
    """Open the event store at ``url``, creating its tables on first use.

    ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (``?synchronous=full``,
    the default, or ``normal``), ``postgresql://user@host:port/db`` (``?schema=``,
    ``pool_min``, ``pool_max``).
    """
    return _Connecting(url, {"max_event_bytes": max_event_bytes})


async def _open_store(url: str, *, max_event_bytes: int) -> EventStore:
    from .errors import InvalidInput

    if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int):
        raise InvalidInput("max_event_bytes must be an int")
    if max_event_bytes < 1:
        raise InvalidInput("max_event_bytes must be positive")
    config = parse_url(url)
    backend: Backend
    if isinstance(config, PostgresURL):
        from .backends.postgres import PostgresBackend

        backend = await PostgresBackend.open(
            config.dsn,
            schema=config.schema,
            min_pool=config.pool_min,
            max_pool=config.pool_max,
            poll_interval=config.poll_interval,
        )
    else:
        from .backends.sqlite import SQLiteBackend

        backend = await SQLiteBackend.open(
            config.path, synchronous=config.synchronous, poll_interval=config.poll_interval
        )
    return EventStore(backend, max_event_bytes=max_event_bytes, url=url)


__all__ = ["EventStore", "chain_fault", "connect"]

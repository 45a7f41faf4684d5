"""What the store asks of a backend: a place to put sealed events and read them back.

A backend owns its SQL dialect, its connections and its concurrency control; it
does not decide versions, hashes or idempotency, which live in ``eventstore.append``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ..append import AppendRequest, Statement
from ..records import AppendResult, Horizon, RecordedEvent, ReplayedEvent

SCHEMA_COMPONENT = "eventstore"
SCHEMA_VERSION = 1
"""Bumped with each change to the event tables; ``connect`` migrates older ones."""

COLUMNS = (
    "position, deployment_id, deployment_seq, stream, stream_version, event_id, type, "
    "schema_version, data, metadata, recorded_at, prev_hash, hash"
)
"""The stored columns in ``RecordedEvent`` field order; both dialects use these names."""

REPLAY_COLUMNS = (
    "position, deployment_id, deployment_seq, stream, stream_version, type, schema_version, data"
)
"""The columns of ``ReplayedEvent``, in field order."""

IDENTITY_COLUMNS = (
    "event_id, deployment_id, stream, type, schema_version, data, metadata, position, "
    "deployment_seq, stream_version"
)
"""The columns of ``append.StoredIdentity``: what a retried event must match."""


class Transaction(Protocol):
    """One open write transaction: what is done in it commits together or not at all."""

    async def execute(self, statements: Sequence[Statement]) -> None: ...

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]: ...

    async def read_deployment(
        self, deployment_id: str, from_seq: int, limit: int | None = None
    ) -> list[RecordedEvent]: ...


class Backend(Protocol):
    """The storage half of an ``EventStore``."""

    kind: str

    async def append(self, request: AppendRequest) -> AppendResult: ...

    async def read_stream(
        self,
        deployment_id: str,
        stream: str,
        from_version: int | None,
        limit: int | None,
        backwards: bool,
    ) -> list[RecordedEvent]: ...

    async def read_deployment(
        self, deployment_id: str, from_seq: int, limit: int | None
    ) -> list[RecordedEvent]: ...

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None
    ) -> list[RecordedEvent]: ...

    async def read_for_replay(
        self,
        after: int,
        limit: int,
        types: Sequence[str] | None,
        deployment_id: str | None,
    ) -> list[ReplayedEvent]:
        """Events after ``after`` (a position; a deployment seq when ``deployment_id``
        is given), lean, in log order: what a rebuild reads. Gap-safe like
        ``read_all``."""
        ...

    async def execute(self, statements: Sequence[Statement]) -> None:
        """Run statements in one transaction: all take effect or none."""
        ...

    async def query(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...

    def query_sync(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...

    async def watch_remote_appends(
        self, watcher: Callable[[frozenset[str] | None], None]
    ) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def stream_version(self, deployment_id: str, stream: str) -> int: ...

    async def deployment_ids(self) -> list[str]: ...

    async def horizon(self) -> Horizon: ...

    async def wait_for_appends(self, max_wait: float) -> None:
        """Return when new events may be readable, or after ``max_wait`` seconds."""
        ...

    async def close(self) -> None: ...


def stream_start(from_version: int | None, backwards: bool) -> int:
    """Where a stream read starts: reading backward with no version means "the last"."""
    if from_version is not None:
        return from_version
    return 2**62 if backwards else 1


def check_read_args(limit: int | None, *counters: int | None) -> None:
    from ..errors import InvalidInput

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be None or an int >= 0, got {limit!r}")
    for value in counters:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"positions and versions are ints >= 0, got {value!r}")


def replay_query(
    columns: str,
    after: int,
    limit: int,
    types: Sequence[str] | None,
    deployment_id: str | None,
    *,
    readable: str = "",
) -> tuple[str, tuple[Any, ...]]:
    """The rebuild's read (``$n`` placeholders): the global log after a position, or
    one deployment after a sequence number; ``readable`` is the dialect's extra
    condition on the global log (PostgreSQL: below the oldest open transaction)."""
    params: list[Any]
    if deployment_id is None:
        where, params, order = "position > $1" + readable, [after], "position"
    else:
        where, order = "deployment_id = $1 AND deployment_seq > $2", "deployment_seq"
        params = [deployment_id, after]
    if types:
        first = len(params) + 1
        where += f" AND type IN ({', '.join(f'${first + i}' for i in range(len(types)))})"
        params.extend(types)
    params.append(limit)
    sql = (
        f"SELECT {columns} FROM chronicle_events WHERE {where} "
        f"ORDER BY {order} LIMIT ${len(params)}"
    )
    return sql, tuple(params)

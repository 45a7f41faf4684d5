"""The backend-independent half of an append.

An append is: encode and check the events (``prepare``), find the deployment's
head and the stream's version, decide the compare-and-swap (``satisfies``), number
and chain the events (``seal``), insert them. Only finding heads and inserting are
SQL; both backends call these functions for the rest, so the two can never
disagree on what an event's hash or version is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from . import encoding, validation
from .errors import DuplicateEventId, InvalidInput
from .records import AppendResult, ExpectedVersion, NewEvent, RecordedEvent


class PreparedEvent(NamedTuple):
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: bytes
    metadata: bytes


class SealedEvent(NamedTuple):
    """A row ready to insert; the global position is the backend's to assign."""

    deployment_seq: int
    stream_version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    prev_hash: bytes
    hash: bytes


class Head(NamedTuple):
    """Where a deployment's chain and one of its streams stand."""

    deployment_seq: int
    deployment_hash: bytes
    stream_version: int


class StoredIdentity(NamedTuple):
    """What an already-recorded event must match for a retry to count as the same."""

    event_id: uuid.UUID
    deployment_id: str
    stream: str
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    position: int
    deployment_seq: int
    stream_version: int


class Statement(NamedTuple):
    """SQL to run inside an append's transaction, with ``$1, $2, ...`` placeholders.

    This is how read models that must be consistent with the log (an invariant to
    enforce, a value to read back at once) are written in the same commit.
    """

    sql: str
    params: tuple[Any, ...] = ()


InlineStep = Callable[[Sequence[RecordedEvent]], Iterable[Statement]]
"""Given the events as recorded, the statements to run before the append commits.

The step runs after the events are inserted, inside the transaction, and sees
their global positions. A step that declares ``needs_positions = False`` (as an
attribute) runs before the insert instead and sees ``position`` 0; in exchange
PostgreSQL may fuse its SQL into the insert statement itself (when it is a single
INSERT/UPDATE/DELETE), one round trip per append instead of four."""


def needs_positions(step: InlineStep) -> bool:
    return bool(getattr(step, "needs_positions", True))


class AppendRequest(NamedTuple):
    deployment_id: str
    stream: str
    events: tuple[PreparedEvent, ...]
    expected: ExpectedVersion | int
    recorded_at_micros: int
    inline: InlineStep | None = None


_EMPTY_METADATA = encoding.encode_payload({})


def prepare(
    deployment_id: str,
    stream: str,
    events: Sequence[NewEvent],
    expected_version: object,
    max_event_bytes: int,
    inline: InlineStep | None = None,
) -> AppendRequest:
    """Validate and encode an append; raises a typed ``InvalidInput`` on bad input."""
    validation.check_identifier("deployment_id", deployment_id)
    validation.check_identifier("stream", stream)
    expected = validation.check_expected_version(expected_version)
    validation.check_batch(events)
    prepared: list[PreparedEvent] = []
    seen: set[uuid.UUID] = set()
    for event in events:
        if not isinstance(event, NewEvent):
            raise InvalidInput(f"events must be NewEvent instances, got {type(event).__name__}")
        validation.check_identifier("event type", event.type)
        if isinstance(event.schema_version, bool) or not isinstance(event.schema_version, int):
            raise InvalidInput(f"schema_version of {event.type!r} must be an int")
        if event.schema_version < 1:
            raise InvalidInput(f"schema_version of {event.type!r} must be >= 1")
        if event.event_id in seen:
            raise InvalidInput(f"event id {event.event_id} appears twice in one append")
        seen.add(event.event_id)
        if not isinstance(event.data, (msgspec.Struct, Mapping, msgspec.Raw)):
            raise InvalidInput(
                f"data of {event.type!r} must be a msgspec Struct, a mapping or "
                f"msgspec.Raw (pre-encoded MessagePack), got {type(event.data).__name__}"
            )
        data = encoding.encode_payload(event.data)
        metadata = _EMPTY_METADATA if event.metadata is None else _encode_metadata(event.metadata)
        validation.check_size(event.type, len(data) + len(metadata), max_event_bytes)
        prepared.append(
            PreparedEvent(event.event_id, event.type, event.schema_version, data, metadata)
        )
    if inline is not None and not callable(inline):
        raise InvalidInput("inline must be a callable returning Statements")
    return AppendRequest(
        deployment_id, stream, tuple(prepared), expected, encoding.now_micros(), inline
    )


def _encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"metadata must be a mapping, got {type(metadata).__name__}")
    return encoding.encode_payload(metadata)


def seal(request: AppendRequest, head: Head) -> list[SealedEvent]:
    """Number the events after ``head`` and chain their hashes."""
    sealed: list[SealedEvent] = []
    prev = head.deployment_hash
    for offset, event in enumerate(request.events, start=1):
        seq = head.deployment_seq + offset
        version = head.stream_version + offset
        digest = encoding.chain_hash(
            prev,
            request.deployment_id,
            seq,
            request.stream,
            version,
            event.event_id,
            event.type,
            event.schema_version,
            request.recorded_at_micros,
            event.data,
            event.metadata,
        )
        sealed.append(
            SealedEvent(
                seq,
                version,
                event.event_id,
                event.type,
                event.schema_version,
                event.data,
                event.metadata,
                prev,
                digest,
            )
        )
        prev = digest
    return sealed


def replayed_result(
    request: AppendRequest, stored: Sequence[StoredIdentity]
) -> AppendResult | None:
    """The original result if ``request`` retries an append already in the log.

    Returns ``None`` when none of the request's ids is stored (a genuinely new
    append), and raises :class:`DuplicateEventId` when some are stored but the
    request is not the same append (other content, other stream, or a partial
    overlap with what was recorded).
    """
    if not stored:
        return None
    by_id = {row.event_id: row for row in stored}
    last: StoredIdentity | None = None
    for event in request.events:
        row = by_id.get(event.event_id)
        if row is None:
            first = stored[0].event_id
            raise DuplicateEventId(str(first), "the append mixes recorded and new events")
        mismatch = _mismatch(request, event, row)
        if mismatch:
            raise DuplicateEventId(str(event.event_id), mismatch)
        if last is not None and row.stream_version != last.stream_version + 1:
            raise DuplicateEventId(str(event.event_id), "recorded in a different order")
        last = row
    assert last is not None
    return AppendResult(last.stream_version, last.position, last.deployment_seq, replayed=True)


def _mismatch(request: AppendRequest, event: PreparedEvent, row: StoredIdentity) -> str:
    if row.deployment_id != request.deployment_id or row.stream != request.stream:
        return f"recorded in {row.deployment_id!r}/{row.stream!r}"
    if row.type != event.type or row.schema_version != event.schema_version:
        return f"recorded as {row.type!r} v{row.schema_version}"
    if row.data != event.data:
        return "recorded with other data"
    if row.metadata != event.metadata:
        return "recorded with other metadata"
    return ""


def recorded(
    request: AppendRequest, sealed: Sequence[SealedEvent], last_position: int | None
) -> list[RecordedEvent]:
    """The sealed events as a reader will see them (positions 0 when not yet assigned)."""
    first = 0 if last_position is None else last_position - len(sealed) + 1
    recorded_at = encoding.micros_to_datetime(request.recorded_at_micros)
    return [
        RecordedEvent(
            first + index if last_position is not None else 0,
            request.deployment_id,
            event.deployment_seq,
            request.stream,
            event.stream_version,
            event.event_id,
            event.type,
            event.schema_version,
            event.data,
            event.metadata,
            recorded_at,
            event.prev_hash,
            event.hash,
        )
        for index, event in enumerate(sealed)
    ]


def inline_statements(
    request: AppendRequest, sealed: Sequence[SealedEvent], last_position: int | None
) -> list[Statement]:
    if request.inline is None:
        return []
    return list(request.inline(recorded(request, sealed, last_position)))


def statement_runs(statements: Iterable[Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Consecutive statements with the same SQL, grouped for ``executemany``.

    Order is kept exactly; only neighbours merge, so the effect is the same as
    running the statements one by one, in far fewer calls into the driver.
    """
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, params in statements:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return runs

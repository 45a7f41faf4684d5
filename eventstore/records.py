"""The values that cross the event store's API: what goes in, what comes back."""

from __future__ import annotations

import builtins
import enum
import os
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

import msgspec

from . import encoding
from .errors import InvalidInput

T = TypeVar("T")


class ExpectedVersion(enum.Enum):
    """What an append requires of its stream, besides an exact version number.

    An ``int`` ``n >= 0`` means "the stream is at version n" (0: it has no events).
    The members are deliberately not ints, so a stray negative number is refused
    instead of being mistaken for one of them.
    """

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"

    def describe(self) -> str:
        return {
            ExpectedVersion.ANY: "any version",
            ExpectedVersion.NO_STREAM: "no stream (version 0)",
            ExpectedVersion.STREAM_EXISTS: "an existing stream (version >= 1)",
        }[self]


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (version 7 layout).

    Ids that grow with time land at the right edge of the unique index instead of
    at random pages, which keeps appends cheap as the log grows to millions.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


class NewEvent:
    """An event to append: its type, its data and, optionally, metadata and id.

    ``data`` is a msgspec Struct or a mapping of JSON-like values and ``Decimal``s,
    or ``msgspec.Raw`` holding MessagePack the caller encoded itself.
    Pass ``event_id`` when the caller may retry the append after a lost reply: the
    same id makes the retry a no-op that returns the original result.
    """

    __slots__ = ("data", "event_id", "metadata", "schema_version", "type")

    def __init__(
        self,
        type: str,
        data: msgspec.Struct | Mapping[str, Any] | msgspec.Raw,
        *,
        metadata: Mapping[str, Any] | None = None,
        event_id: uuid.UUID | str | None = None,
        schema_version: int = 1,
    ) -> None:
        self.type = type
        self.data = data
        self.metadata = metadata
        self.event_id = _coerce_event_id(event_id)
        self.schema_version = schema_version

    def __repr__(self) -> str:
        return f"NewEvent({self.type!r}, event_id={self.event_id})"


def _coerce_event_id(event_id: uuid.UUID | str | None) -> uuid.UUID:
    if event_id is None:
        return new_event_id()
    if isinstance(event_id, uuid.UUID):
        return event_id
    try:
        return uuid.UUID(event_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"event_id {event_id!r} is not a UUID") from exc


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the log holds it: placed, numbered and chained.

    ``data`` and ``metadata`` decode the stored bytes into plain Python values on
    each access (decimals come back as exact strings); a reader that knows the
    event's Struct type uses :meth:`decode` instead and gets typed values back.
    """

    position: int
    deployment_id: str
    deployment_seq: int
    stream: str
    stream_version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    raw_data: bytes
    raw_metadata: bytes
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes

    @property
    def data(self) -> Any:
        return encoding.decode_payload(self.raw_data)

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = encoding.decode_payload(self.raw_metadata)
        return meta

    def decode(self, as_type: builtins.type[T]) -> T:
        """The event's data as an instance of ``as_type`` (a msgspec Struct, say)."""
        return encoding.decode_payload_as(self.raw_data, as_type)


class ReplayedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as a replay needs it: where it sits, its type and its payload.

    No id, metadata, time or hashes: a rebuild reads every event of the log, and
    building those (a UUID, a datetime, two digests per event) cost about as much
    as reading the rows. Read models never need them.
    """

    position: int
    deployment_id: str
    deployment_seq: int
    stream: str
    stream_version: int
    type: str
    schema_version: int
    raw_data: bytes


class Placement(Protocol):
    """Where an event sits in the log: what read models may use besides its payload.

    Both :class:`RecordedEvent` and :class:`ReplayedEvent` are placements.
    """

    @property
    def position(self) -> int: ...
    @property
    def deployment_id(self) -> str: ...
    @property
    def deployment_seq(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def stream_version(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def raw_data(self) -> bytes: ...


class AppendResult(msgspec.Struct, frozen=True):
    """Where the last event of an append landed.

    ``replayed`` is true when the append was a retry of one already in the log,
    in which case nothing was written and the original placement is returned.
    """

    stream_version: int
    position: int
    deployment_seq: int
    replayed: bool = False


class VerifyReport(msgspec.Struct, frozen=True):
    """What checking the hash chains found.

    ``first_bad_position`` is the global position of the first event (in its
    deployment's order) whose stored hash does not match its content, or whose
    link to its predecessor is broken; ``None`` when every chain holds.
    """

    ok: bool
    deployments_checked: int
    events_checked: int
    first_bad_position: int | None = None
    first_bad_deployment_id: str | None = None
    first_bad_deployment_seq: int | None = None
    reason: str | None = None


class Horizon(msgspec.Struct, frozen=True):
    """How far a global reader may go right now, and what is being held back.

    On PostgreSQL an event becomes readable in the global log only once every
    transaction older than its own has finished; a long-open transaction anywhere
    on the server holds readers back. ``held_back`` counts committed events that
    wait behind it, so a monitor can alert on lag instead of guessing.
    """

    head_position: int
    readable_below: int
    held_back: int

"""Input checks that run before anything touches the database.

Everything that can be refused without looking at the log is refused here, so a
bad call costs no round trip and cannot leave anything behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import (
    BatchTooLarge,
    EmptyAppend,
    EventTooLarge,
    InvalidExpectedVersion,
    InvalidIdentifier,
    InvalidInput,
)
from .records import ExpectedVersion

MAX_IDENTIFIER_LENGTH = 200
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
MAX_EVENTS_PER_APPEND = 65_535
"""PostgreSQL numbers an append's events inside its transaction id with 16 bits."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_identifier(kind: str, value: object) -> str:
    """A deployment id, stream name or event type: 1-200 printable characters."""
    if not isinstance(value, str):
        raise InvalidIdentifier(f"{kind} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidIdentifier(f"{kind} is empty; give it a name")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(
            f"{kind} is {len(value)} characters long; the limit is {MAX_IDENTIFIER_LENGTH}"
        )
    if _CONTROL.search(value):
        raise InvalidIdentifier(f"{kind} {value!r} contains control characters")
    return value


def check_expected_version(expected: object) -> ExpectedVersion | int:
    if isinstance(expected, ExpectedVersion):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise InvalidExpectedVersion(
            f"expected_version must be an ExpectedVersion or an int >= 0, got {expected!r}"
        )
    if expected < 0:
        raise InvalidExpectedVersion(
            f"expected_version {expected} is negative; use an int >= 0 (0: no events yet) "
            "or ExpectedVersion.ANY / NO_STREAM / STREAM_EXISTS"
        )
    return expected


def check_batch(events: Sequence[object]) -> None:
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise InvalidInput("events must be a list of NewEvent")
    if not events:
        raise EmptyAppend("an append needs at least one event")
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise BatchTooLarge(
            f"{len(events)} events in one append; the limit is {MAX_EVENTS_PER_APPEND}, "
            "split the batch"
        )


def check_size(event_type: str, size: int, limit: int) -> None:
    if size > limit:
        raise EventTooLarge(
            f"event {event_type!r} encodes to {size} bytes, over the {limit}-byte limit; "
            "store large blobs elsewhere and record a reference, or raise max_event_bytes"
        )


def satisfies(expected: ExpectedVersion | int, actual: int) -> bool:
    """Whether a stream at version ``actual`` (0: absent) meets ``expected``."""
    if expected is ExpectedVersion.ANY:
        return True
    if expected is ExpectedVersion.NO_STREAM:
        return actual == 0
    if expected is ExpectedVersion.STREAM_EXISTS:
        return actual > 0
    return actual == expected

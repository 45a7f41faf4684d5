"""The refusals an event store can give, as types a caller can catch precisely.

Every refusal derives from :class:`EventStoreError`, so ``except EventStoreError``
is a complete net, and every message says what was wrong and what to do about it.
A refused call has written nothing: the log is as it was before the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import ExpectedVersion


class EventStoreError(Exception):
    """Base class of every error the event store raises on purpose."""


class InvalidInput(EventStoreError, ValueError):
    """An argument can never be accepted, whatever the state of the log."""


class InvalidIdentifier(InvalidInput):
    """A deployment id or stream name is empty, too long or holds control characters."""


class InvalidExpectedVersion(InvalidInput):
    """The expected version is neither an ``ExpectedVersion`` member nor an int >= 0."""


class EmptyAppend(InvalidInput):
    """An append carried no events; an empty append would silently do nothing."""


class EncodingError(InvalidInput):
    """The event data or metadata cannot be encoded (e.g. a float NaN or a set)."""


class EventTooLarge(InvalidInput):
    """An event's encoded data plus metadata exceed the store's size limit."""


class BatchTooLarge(InvalidInput):
    """One append carries more events than a single transaction may hold."""


class WrongExpectedVersion(EventStoreError):
    """The stream is not at the version the append expected (compare-and-swap refused).

    ``expected`` is what the caller passed, ``actual`` the stream's version when the
    append was refused (0 when the stream does not exist). Reload the stream and
    decide again; retrying the same append blindly will fail the same way.
    """

    def __init__(
        self,
        deployment_id: str,
        stream: str,
        expected: ExpectedVersion | int,
        actual: int,
    ) -> None:
        self.deployment_id = deployment_id
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {deployment_id!r}/{stream!r} is at version {actual}, "
            f"but the append expected {_describe(expected)}; reload the stream and retry"
        )


class DuplicateEventId(EventStoreError):
    """An event id is already in the log with different content.

    Re-sending the *same* events is an idempotent retry and succeeds; this error
    means an id was reused for something else, which would corrupt idempotency.
    """

    def __init__(self, event_id: str, reason: str) -> None:
        self.event_id = event_id
        super().__init__(
            f"event id {event_id} is already recorded with different content ({reason}); "
            "give each new event a fresh id"
        )


class InlineStepFailed(EventStoreError):
    """A statement run inside the append's transaction failed; nothing was written.

    ``constraint`` names the violated constraint when there was one, so the layer
    that supplied the statement can turn it into its own, domain-specific error.
    """

    def __init__(self, sql: str, cause: BaseException, constraint: str | None) -> None:
        self.sql = sql
        self.cause = cause
        self.constraint = constraint
        super().__init__(f"inline statement failed ({cause}); the append was rolled back")


class ConcurrencyExhausted(EventStoreError):
    """An append lost the race for a deployment's head too many times in a row."""


class StoreBusy(EventStoreError):
    """The database stayed locked by another writer for longer than the busy timeout."""


class SchemaVersionError(EventStoreError):
    """The database holds a schema this release does not know how to use."""


class InvalidURL(EventStoreError, ValueError):
    """The store URL cannot be understood."""


class StoreClosed(EventStoreError):
    """The store was used after ``close()``."""


def _describe(expected: ExpectedVersion | int) -> str:
    if isinstance(expected, int):
        return f"version {expected}"
    return expected.describe()

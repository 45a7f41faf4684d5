"""Chronicle's event log: per-deployment, append-only, compare-and-swap on stream version.

    async with eventstore.connect("sqlite:///chronicle.db") as store:
        await store.append("dep-1", "ledger", [eventstore.NewEvent("LedgerEntryRecorded", {...})],
                           expected_version=eventstore.ExpectedVersion.NO_STREAM)

The log knows nothing of ledgers or orders: it stores typed, versioned events,
chains each deployment's events by hash, and hands them back in order.
"""

from .append import InlineStep, Statement
from .backends.base import Transaction
from .errors import (
    BatchTooLarge,
    ConcurrencyExhausted,
    DuplicateEventId,
    EmptyAppend,
    EncodingError,
    EventStoreError,
    EventTooLarge,
    InlineStepFailed,
    InvalidExpectedVersion,
    InvalidIdentifier,
    InvalidInput,
    InvalidURL,
    SchemaVersionError,
    StoreBusy,
    StoreClosed,
    WrongExpectedVersion,
)
from .records import (
    AppendResult,
    ExpectedVersion,
    Horizon,
    NewEvent,
    Placement,
    RecordedEvent,
    ReplayedEvent,
    VerifyReport,
    new_event_id,
)
from .store import EventStore, chain_fault, connect
from .url import DEFAULT_URL
from .validation import DEFAULT_MAX_EVENT_BYTES, MAX_EVENTS_PER_APPEND, MAX_IDENTIFIER_LENGTH

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_URL",
    "MAX_EVENTS_PER_APPEND",
    "MAX_IDENTIFIER_LENGTH",
    "AppendResult",
    "BatchTooLarge",
    "ConcurrencyExhausted",
    "DuplicateEventId",
    "EmptyAppend",
    "EncodingError",
    "EventStore",
    "EventStoreError",
    "EventTooLarge",
    "ExpectedVersion",
    "Horizon",
    "InlineStep",
    "InlineStepFailed",
    "InvalidExpectedVersion",
    "InvalidIdentifier",
    "InvalidInput",
    "InvalidURL",
    "NewEvent",
    "Placement",
    "RecordedEvent",
    "ReplayedEvent",
    "SchemaVersionError",
    "Statement",
    "StoreBusy",
    "StoreClosed",
    "Transaction",
    "VerifyReport",
    "WrongExpectedVersion",
    "chain_fault",
    "connect",
    "new_event_id",
]

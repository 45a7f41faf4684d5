"""The domain event vocabulary: one msgspec Struct per kind of write a runner makes.

These types are the contract between the writer (``statemanager``) and the readers
(the projections). Every write the seed's ``StateManager`` performs (a state
version, a CLOB order and its fills, a portfolio snapshot, a ledger entry, a
registry row, a position event, an accounting event, migration progress) becomes
one of the events below; legacy tables that have no projection yet are carried
by :class:`LegacyRowImported`. ``docs/legacy-schema.md`` maps every legacy
column to the field that carries it.

Conventions (they hold for every Struct in this module):

* Money, amounts, prices, rates and bps are ``decimal.Decimal``, never ``float``.
  MessagePack carries a ``Decimal`` as its exact string (``str(d)``), so
  ``Decimal("0E-24")``, ``Decimal("1.0")`` and 40-digit amounts come back with
  the same digits and exponent. Passing a ``float`` to a ``Decimal`` field raises
  :class:`FloatAmountError`; an ``int`` is converted to ``Decimal`` exactly.
* ``None`` in a ``Decimal`` field means "absent / not measured" (the legacy
  tables write ``''`` for that; a measured zero is ``Decimal("0")``). Plain
  text fields keep the legacy value verbatim (usually ``''`` when absent).
  Where a legacy column held SQL ``NULL`` but the field cannot say so, the
  importer lists the column in :attr:`LegacySource.null_columns`.
* Timestamps are timezone-aware UTC ``datetime``. Naive datetimes are
  **refused**: constructing a Struct with one raises :class:`NaiveDatetimeError`,
  and decoding a payload that holds one raises :class:`EventDecodeError`.
  An aware datetime in another zone is normalized to UTC (same instant).
* Free-form JSON blobs (state dicts, payloads, position details) are
  ``dict[str, Any]`` (``list[Any]`` where the legacy blob is a JSON array),
  holding exactly what ``json.loads`` returns. Decimals inside them stay JSON
  strings. Integers beyond MessagePack's 64-bit range (a real legacy ledger row
  carries a 160-bit ``liquidity``) are written as ext type
  :data:`BIGINT_EXT_CODE` (the integer's decimal digits) and read back as ``int``.
* Each event class declares ``event_type`` (stable, PascalCase, past tense) and
  ``schema_version``. Field names never change meaning within a version; a new
  version gets an upcaster in :data:`UPCASTERS`, keyed ``(event_type, version)``,
  that rewrites a raw payload of that version into the next one.
* Encoding never omits fields equal to their default: a default changed later
  must not silently rewrite what an old event said.
* Identity (``deployment_id``) is in every payload; ``cycle_id`` and
  ``execution_mode`` are in the payloads whose legacy rows carry them, so a
  projection needs nothing but the event to rebuild a row.
"""

import contextlib
import enum
import threading
import types
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

import msgspec

from eventstore.encoding import BIGINT_EXT_CODE, ext_hook, shield_big_ints

__all__ = [
    "BIGINT_EXT_CODE",
    "EVENT_TYPES",
    "OPEN_CLOB_ORDER_STATUSES",
    "REGISTRY_STATUS_PRIORITY",
    "UPCASTERS",
    "AccountingEventRecorded",
    "ClobFill",
    "ClobOrderDeleted",
    "ClobOrderSaved",
    "ClobOrderSide",
    "ClobOrderStatus",
    "ClobOrderStatusUpdated",
    "DomainEvent",
    "EventCodecError",
    "EventDecodeError",
    "FloatAmountError",
    "HandleMapping",
    "LedgerAndRegistryCommitted",
    "LedgerEntry",
    "LedgerEntryRecorded",
    "LegacyRowImported",
    "LegacySource",
    "LegacyValue",
    "MigrationBackfillMarkedComplete",
    "MigrationStateUpdated",
    "MigrationStateUpserted",
    "MissingUpcaster",
    "NaiveDatetimeError",
    "PortfolioMetricsSaved",
    "PortfolioSnapshotRecorded",
    "PositionAttributionUpdated",
    "PositionEventRecorded",
    "Record",
    "RegistryRow",
    "RegistryRowBackfilled",
    "RegistryStatus",
    "SnapshotRetentionApplied",
    "StateDeleted",
    "StateSaved",
    "UnknownEventType",
    "UnknownSchemaVersion",
    "Upcaster",
    "ValueConfidence",
    "decode_event",
    "encode_event",
    "register_upcaster",
]


# =============================================================================
# Errors
# =============================================================================


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone was given where a UTC instant is required."""


class FloatAmountError(TypeError):
    """A ``float`` was given for a money/amount field, which must be ``Decimal``."""


class EventCodecError(ValueError):
    """Base class of every encode/decode failure of a domain event."""


class UnknownEventType(EventCodecError):
    """The event type name is not in :data:`EVENT_TYPES`."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        known = ", ".join(sorted(EVENT_TYPES))
        super().__init__(f"unknown domain event type {event_type!r}; known types: {known}")


class UnknownSchemaVersion(EventCodecError):
    """The stored schema version is newer than this code, or not a valid version."""

    def __init__(self, event_type: str, schema_version: int, current: int) -> None:
        self.event_type = event_type
        self.schema_version = schema_version
        self.current = current
        super().__init__(
            f"{event_type} schema version {schema_version} cannot be read by this code "
            f"(current version {current}, versions start at 1)"
        )


class MissingUpcaster(EventCodecError):
    """An older schema version is stored but no upcaster lifts it to the next one."""

    def __init__(self, event_type: str, from_version: int) -> None:
        self.event_type = event_type
        self.from_version = from_version
        super().__init__(
            f"no upcaster registered for {event_type} v{from_version} -> v{from_version + 1}"
        )


class EventDecodeError(EventCodecError):
    """The bytes do not decode into a valid event of the named type and version."""


# =============================================================================
# Enums and small types
# =============================================================================


class ClobOrderStatus(enum.StrEnum):
    """Lifecycle of a CLOB order (the legacy ``clob_orders.status`` text)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    LIVE = "live"
    MATCHED = "matched"
    PARTIALLY_FILLED = "partially_filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


OPEN_CLOB_ORDER_STATUSES: frozenset[ClobOrderStatus] = frozenset(
    {
        ClobOrderStatus.PENDING,
        ClobOrderStatus.SUBMITTED,
        ClobOrderStatus.LIVE,
        ClobOrderStatus.PARTIALLY_FILLED,
    }
)
"""Statuses ``get_open_clob_orders`` returns; every other status is terminal."""

ClobOrderSide = Literal["BUY", "SELL"]


class RegistryStatus(enum.StrEnum):
    """``position_registry.status`` (a CHECK-constrained TEXT column, lowercase)."""

    OPEN = "open"
    CLOSED = "closed"
    REORG_INVALIDATED = "reorg_invalidated"


REGISTRY_STATUS_PRIORITY: dict[RegistryStatus, int] = {
    RegistryStatus.OPEN: 0,
    RegistryStatus.CLOSED: 1,
    RegistryStatus.REORG_INVALIDATED: 1,
}
"""Status only moves to a strictly higher priority: open (0) -> closed or
reorg_invalidated (1). A write that would keep or lower the priority of an
existing row leaves the row as it is."""


class ValueConfidence(enum.StrEnum):
    """How much a portfolio valuation can be trusted (``value_confidence``)."""

    HIGH = "HIGH"
    ESTIMATED = "ESTIMATED"
    STALE = "STALE"
    UNAVAILABLE = "UNAVAILABLE"


LegacyValue = str | int | float | None
"""A SQLite cell as stored: TEXT, INTEGER, REAL or NULL (no BLOBs occur)."""


# =============================================================================
# Base classes: UTC and Decimal discipline for every Struct
# =============================================================================


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every Struct here: refuses naive datetimes and float amounts.

    Runs on construction and on decoding, so nothing naive or binary-float can
    enter the log through either door.
    """

    def __post_init__(self) -> None:
        if _TRUSTED.decoding:
            return
        for name, is_dt, is_dec in _field_checks(type(self)):
            value = getattr(self, name)
            if value is None:
                continue
            if is_dt and isinstance(value, datetime):
                offset = value.utcoffset()
                if offset is None:
                    raise NaiveDatetimeError(
                        f"{type(self).__name__}.{name} is a naive datetime ({value!r}); "
                        "pass a timezone-aware UTC datetime"
                    )
                if value.tzinfo is not UTC:
                    msgspec.structs.force_setattr(self, name, value.astimezone(UTC))
            elif is_dec:
                if isinstance(value, float):
                    raise FloatAmountError(
                        f"{type(self).__name__}.{name} got float {value!r}; amounts must be "
                        "Decimal (build it from the exact string, e.g. Decimal('0.1'))"
                    )
                if type(value) is int:
                    msgspec.structs.force_setattr(self, name, Decimal(value))


class _TrustedDecoding(threading.local):
    """Set while decoding bytes the log already holds (see ``decode_event(trusted=True)``).

    Those bytes passed these checks when they were encoded, and decoding them
    cannot make them fail (MessagePack timestamps come back aware, in UTC; a
    Decimal field comes back Decimal), so replays skip the per-field walk.
    Thread-local, so a Struct built on another thread meanwhile is still checked.
    """

    decoding = False


_TRUSTED = _TrustedDecoding()

# Per class: (field name, is a datetime field, is a Decimal field), computed once.
_FieldChecks = tuple[tuple[str, bool, bool], ...]
_FIELD_CHECKS: dict[type, _FieldChecks] = {}


def _union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _field_checks(cls: type[Record]) -> _FieldChecks:
    checks = _FIELD_CHECKS.get(cls)
    if checks is None:
        hints = typing.get_type_hints(cls)
        found: list[tuple[str, bool, bool]] = []
        for name in cls.__struct_fields__:
            members = _union_members(hints[name])
            is_dt = datetime in members
            is_dec = Decimal in members
            if is_dt or is_dec:
                found.append((name, is_dt, is_dec))
        checks = tuple(found)
        _FIELD_CHECKS[cls] = checks
    return checks


class DomainEvent(Record, frozen=True, kw_only=True):
    """Base of every domain event: a fact the log records, never edited after.

    Subclasses set ``event_type`` (the stored type name) and, when their payload
    shape changes, bump ``schema_version`` and register an upcaster.
    """

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


# =============================================================================
# Shared nested records
# =============================================================================


class ClobFill(Record, frozen=True, kw_only=True):
    """One fill of a CLOB order; an order's fills list is replaced as a whole."""

    fill_id: str
    price: Decimal
    size: Decimal
    fee: Decimal
    timestamp: datetime
    counterparty: str | None = None


class LedgerEntry(Record, frozen=True, kw_only=True):
    """One executed (or failed) intent, as the ``transaction_ledger`` row records it.

    ``entry_id`` is the legacy ``id`` (a UUID string, referenced by
    ``accounting_events``, ``position_events`` and ``accounting_outbox``). The
    JSON columns are parsed; ``None`` stands for the legacy ``''`` (no blob),
    distinct from an empty object ``{}``. ``slippage_bps`` is a REAL column in
    legacy files: the importer converts it with ``Decimal(repr(value))``, which
    converts back to the identical float.
    """

    entry_id: str
    deployment_id: str
    cycle_id: str
    execution_mode: str = ""
    timestamp: datetime
    intent_type: str
    token_in: str = ""
    amount_in: Decimal | None = None
    token_out: str = ""
    amount_out: Decimal | None = None
    effective_price: Decimal | None = None
    slippage_bps: Decimal | None = None
    gas_used: int | None = None
    gas_usd: Decimal | None = None
    tx_hash: str = ""
    chain: str = ""
    protocol: str = ""
    success: bool = True
    error: str = ""
    extracted_data: dict[str, Any] | None = None
    price_inputs: dict[str, Any] | None = None
    pre_state: dict[str, Any] | None = None
    post_state: dict[str, Any] | None = None


class RegistryRow(Record, frozen=True, kw_only=True):
    """A ``position_registry`` row: one physical position and its lifecycle status.

    Keyed by ``(deployment_id, chain, primitive, physical_identity_hash)``. The
    handle, when present, is unique per ``(deployment_id, accounting_category)``;
    at most one open handle-less row may exist per ``(deployment_id, chain,
    accounting_category, semantic_grouping_key)``.
    """

    deployment_id: str
    chain: str
    primitive: str
    accounting_category: str
    physical_identity_hash: str
    semantic_grouping_key: str
    grouping_policy_version: str
    status: RegistryStatus
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    matching_policy_version: int = 1
    handle: str | None = None
    opened_at_block: int | None = None
    opened_tx: str | None = None
    closed_at_block: int | None = None
    closed_tx: str | None = None
    last_reconciled_at_block: int | None = None


class HandleMapping(Record, frozen=True, kw_only=True):
    """An author-chosen alias for a registry row (stored in its ``handle`` column).

    Must name the same deployment and accounting category as the row it labels.
    """

    handle: str
    deployment_id: str
    accounting_category: str


class LegacySource(Record, frozen=True, kw_only=True):
    """Where an imported event came from, and what its typed fields cannot say.

    ``source_digest`` is the SHA-256 (hex) of the legacy file's bytes;
    ``primary_key`` the row's key columns (``{"rowid": n}`` for a table without
    one). ``null_columns`` names columns that held SQL NULL where the event field
    can only say "absent" (a ``None`` Decimal means ``''`` by default, a text
    field is ``''``). ``unmapped_columns`` keeps, verbatim, every legacy cell
    the event cannot give back byte for byte: columns it has no field for (a
    ``strategy_id`` twin of ``deployment_id``, an autoincrement ``id``) and cells
    whose field would re-render them differently (compact JSON, ``1e5``, a time
    written with ``Z``), so nothing in the source row is lost.
    """

    source_digest: str
    table: str
    primary_key: dict[str, LegacyValue]
    null_columns: tuple[str, ...] = ()
    unmapped_columns: dict[str, LegacyValue] = msgspec.field(default_factory=dict)


# =============================================================================
# State
# =============================================================================


class StateSaved(DomainEvent, frozen=True, kw_only=True):
    """A new version of a deployment's state was written (``save_state``).

    Versions of one deployment are gapless and increase by one; the writer
    checked ``expected_version`` (the CAS precondition, ``None`` for a create)
    against the state stream before appending, so replay never re-checks it.
    ``checksum`` is the SHA-256 hex of ``json.dumps(state, sort_keys=True)``
    (verified against every legacy row). ``created_at`` is when this version was
    written (legacy ``updated_at``); ``first_created_at`` (legacy ``created_at``)
    is only set on import, where the versions before the imported one are gone.
    """

    event_type: ClassVar[str] = "StateSaved"

    deployment_id: str
    version: int
    expected_version: int | None = None
    state: dict[str, Any]
    state_schema_version: int = 1
    checksum: str
    created_at: datetime
    first_created_at: datetime | None = None
    legacy: LegacySource | None = None


class StateDeleted(DomainEvent, frozen=True, kw_only=True):
    """A deployment's state was deleted (``delete_state``).

    The current-state projection drops the row; the history stays in the log.
    A later ``StateSaved`` starts again at version 1.
    """

    event_type: ClassVar[str] = "StateDeleted"

    deployment_id: str
    last_version: int | None = None
    deleted_at: datetime


# =============================================================================
# CLOB orders
# =============================================================================


class ClobOrderSaved(DomainEvent, frozen=True, kw_only=True):
    """A CLOB order was saved whole (``save_clob_order``): an upsert.

    Replaces every field of the order keyed ``(deployment_id, order_id)``; an
    order is open while its status is in :data:`OPEN_CLOB_ORDER_STATUSES`.
    """

    event_type: ClassVar[str] = "ClobOrderSaved"

    deployment_id: str
    order_id: str
    market_id: str
    token_id: str
    side: ClobOrderSide
    status: ClobOrderStatus
    price: Decimal
    size: Decimal
    filled_size: Decimal = Decimal("0")
    average_fill_price: Decimal | None = None
    fills: tuple[ClobFill, ...] = ()
    order_type: str = "GTC"
    intent_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    submitted_at: datetime
    updated_at: datetime
    legacy: LegacySource | None = None


class ClobOrderStatusUpdated(DomainEvent, frozen=True, kw_only=True):
    """An order's status and fill progress changed (``update_clob_order_status``).

    Only emitted when the order exists (the call returns ``False`` otherwise).
    ``status`` and ``updated_at`` always apply; each optional field left ``None``
    keeps the stored value, and ``fills``, when given, replaces the whole list.
    """

    event_type: ClassVar[str] = "ClobOrderStatusUpdated"

    deployment_id: str
    order_id: str
    status: ClobOrderStatus
    fills: tuple[ClobFill, ...] | None = None
    filled_size: Decimal | None = None
    average_fill_price: Decimal | None = None
    error: str | None = None
    updated_at: datetime


class ClobOrderDeleted(DomainEvent, frozen=True, kw_only=True):
    """An order was removed from the read model (no legacy writer does this yet).

    Exists so an operator can retire a stray order without editing history;
    the order's earlier events stay in the log.
    """

    event_type: ClassVar[str] = "ClobOrderDeleted"

    deployment_id: str
    order_id: str
    deleted_at: datetime
    reason: str = ""


# =============================================================================
# Portfolio: NAV series and PnL baseline
# =============================================================================


class PortfolioSnapshotRecorded(DomainEvent, frozen=True, kw_only=True):
    """A point of the NAV series (``save_portfolio_snapshot``).

    One snapshot per ``(deployment_id, timestamp)``: a second one with the same
    timestamp replaces the first (legacy INSERT OR REPLACE, which also gave it a
    new id). ``snapshot_id`` is the id readers page by (the ``(timestamp, id)``
    cursor of ``get_nav_series``); the importer keeps the legacy id (ids are not
    dense), a live writer may leave it ``None`` for the projection to assign.
    ``positions`` is the parsed ``positions_json``: the envelope
    ``{"schema_version", "positions", "metadata", "reconciliation"}`` or, in older
    rows, a bare list. ``created_at`` is the write time, which retention uses.
    """

    event_type: ClassVar[str] = "PortfolioSnapshotRecorded"

    deployment_id: str
    snapshot_id: int | None = None
    cycle_id: str = ""
    execution_mode: str = ""
    timestamp: datetime
    iteration_number: int = 0
    total_value_usd: Decimal
    available_cash_usd: Decimal
    deployed_capital_usd: Decimal = Decimal("0")
    wallet_total_value_usd: Decimal = Decimal("0")
    value_confidence: ValueConfidence = ValueConfidence.HIGH
    positions: dict[str, Any] | list[Any]
    token_prices: dict[str, Any] = msgspec.field(default_factory=dict)
    wallet_balances: list[Any] = msgspec.field(default_factory=list)
    chain: str | None = None
    created_at: datetime
    legacy: LegacySource | None = None


class SnapshotRetentionApplied(DomainEvent, frozen=True, kw_only=True):
    """Snapshots older than the retention window were pruned (``cleanup_old_snapshots``).

    Carries the ``cutoff`` the writer computed (now - ``retention_days``), so a
    replay prunes exactly the same rows whatever day it runs: every snapshot of
    the deployment whose ``created_at`` is earlier than ``cutoff``, and nothing
    recorded after this event.
    """

    event_type: ClassVar[str] = "SnapshotRetentionApplied"

    deployment_id: str
    retention_days: int
    cutoff: datetime


class PortfolioMetricsSaved(DomainEvent, frozen=True, kw_only=True):
    """The PnL baseline row was saved whole (``save_portfolio_metrics``): an upsert.

    One row per deployment, replaced by each save, so the baseline survives
    restarts. ``initial_timestamp`` is what the legacy column holds: the
    metrics' own timestamp at the last save, not the first run. ``None`` in a
    USD field is UNMEASURED (legacy ``''``), which is not a measured zero.
    """

    event_type: ClassVar[str] = "PortfolioMetricsSaved"

    deployment_id: str
    initial_value_usd: Decimal
    initial_timestamp: datetime
    deposits_usd: Decimal | None = Decimal("0")
    withdrawals_usd: Decimal | None = Decimal("0")
    gas_spent_usd: Decimal | None = Decimal("0")
    total_value_usd: Decimal | None = None
    positions: list[Any] = msgspec.field(default_factory=list)
    cycle_id: str | None = None
    execution_mode: str = ""
    is_complete: bool = True
    updated_at: datetime
    legacy: LegacySource | None = None


# =============================================================================
# Ledger and position registry
# =============================================================================


class LedgerEntryRecorded(DomainEvent, frozen=True, kw_only=True):
    """A ledger entry was written on its own (``save_ledger_entry``, accounting-only mode).

    Keyed by ``entry.entry_id``; saving the same id again replaces the entry
    (legacy INSERT OR REPLACE). Ledger quant stats fold these incrementally.
    """

    event_type: ClassVar[str] = "LedgerEntryRecorded"

    entry: LedgerEntry
    legacy: LegacySource | None = None


class LedgerAndRegistryCommitted(DomainEvent, frozen=True, kw_only=True):
    """Ledger entry, registry row and optional handle, committed as one fact.

    One event, so no reader ever sees the ledger row without its registry row
    (``save_ledger_and_registry``). The registry half is idempotent on
    ``(deployment_id, chain, primitive, physical_identity_hash)`` and obeys
    :data:`REGISTRY_STATUS_PRIORITY`; the writer validated the uniqueness
    indexes against the inline registry projection before appending.
    """

    event_type: ClassVar[str] = "LedgerAndRegistryCommitted"

    ledger: LedgerEntry
    registry: RegistryRow
    handle: HandleMapping | None = None


class RegistryRowBackfilled(DomainEvent, frozen=True, kw_only=True):
    """A registry row was inserted if absent (``insert_position_registry_row_if_absent``).

    INSERT ... ON CONFLICT DO NOTHING: when a row with the same key exists the
    event changes nothing, which makes a restarted backfill (and a re-import)
    harmless. Imported legacy registry rows use this event too.
    """

    event_type: ClassVar[str] = "RegistryRowBackfilled"

    row: RegistryRow
    legacy: LegacySource | None = None


# =============================================================================
# Migration (registry cutover) state
# =============================================================================


class MigrationStateUpserted(DomainEvent, frozen=True, kw_only=True):
    """The baseline ``migration_state`` row exists (``upsert_migration_state``).

    Idempotent: creates ``(deployment_id, primitive, cutover_key)`` with
    backfill incomplete and zero counts, or leaves an existing row untouched.
    """

    event_type: ClassVar[str] = "MigrationStateUpserted"

    deployment_id: str
    primitive: str
    cutover_key: str
    created_at: datetime
    legacy: LegacySource | None = None


class MigrationStateUpdated(DomainEvent, frozen=True, kw_only=True):
    """Backfill progress was recorded on a migration_state row.

    Each optional field left ``None`` keeps the stored value; ``updated_at``
    always applies. Never flips the completion flag (see
    :class:`MigrationBackfillMarkedComplete`).
    """

    event_type: ClassVar[str] = "MigrationStateUpdated"

    deployment_id: str
    primitive: str
    cutover_key: str
    updated_at: datetime
    backfill_started_at: datetime | None = None
    backfill_source_table: str | None = None
    backfill_reader_version: int | None = None
    rows_synthesized: int | None = None
    rows_skipped_already_present: int | None = None
    notes: dict[str, Any] | None = None


class MigrationBackfillMarkedComplete(DomainEvent, frozen=True, kw_only=True):
    """The registry backfill of a cutover finished: the flag goes 0 -> 1, once.

    The boot guard trusts this flag, so it never goes back to 0; the final
    counts travel with it.
    """

    event_type: ClassVar[str] = "MigrationBackfillMarkedComplete"

    deployment_id: str
    primitive: str
    cutover_key: str
    completed_at: datetime
    updated_at: datetime
    rows_synthesized: int
    rows_skipped_already_present: int


# =============================================================================
# Position lifecycle and accounting
# =============================================================================


class PositionEventRecorded(DomainEvent, frozen=True, kw_only=True):
    """A position lifecycle event (``save_position_event``): OPEN, CLOSE, COLLECT_FEES, ...

    Keyed by ``position_event_id`` (legacy ``id``); the first write of an id
    wins and a later one with the same id is ignored (legacy INSERT OR IGNORE).
    Only ``attribution`` may change afterwards, through
    :class:`PositionAttributionUpdated`. ``position_event_type`` is the legacy
    ``event_type`` column. Amounts are whatever the writer stored: human
    decimals in some rows, raw base units in others (see the schema notes).
    """

    event_type: ClassVar[str] = "PositionEventRecorded"

    position_event_id: str
    deployment_id: str
    cycle_id: str = ""
    execution_mode: str = ""
    position_id: str
    position_type: str
    position_event_type: str
    timestamp: datetime
    protocol: str = ""
    chain: str = ""
    token0: str = ""
    token1: str = ""
    amount0: Decimal | None = None
    amount1: Decimal | None = None
    value_usd: Decimal | None = None
    tick_lower: int | None = None
    tick_upper: int | None = None
    liquidity: Decimal | None = None
    in_range: bool | None = None
    fees_token0: Decimal | None = None
    fees_token1: Decimal | None = None
    leverage: Decimal | None = None
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    is_long: bool | None = None
    tx_hash: str = ""
    gas_usd: Decimal | None = None
    ledger_entry_id: str = ""
    protocol_fees_usd: Decimal | None = None
    attribution: dict[str, Any] = msgspec.field(default_factory=dict)
    attribution_version: int = 0
    legacy: LegacySource | None = None


class PositionAttributionUpdated(DomainEvent, frozen=True, kw_only=True):
    """A position event's PnL attribution was recomputed (``update_position_attribution``).

    Touches nothing but ``attribution`` and ``attribution_version`` of the
    position event ``position_event_id``; a no-op when that event is unknown.
    """

    event_type: ClassVar[str] = "PositionAttributionUpdated"

    deployment_id: str
    position_event_id: str
    attribution: dict[str, Any]
    attribution_version: int


class AccountingEventRecorded(DomainEvent, frozen=True, kw_only=True):
    """A typed accounting event (lending, LP, swap, perp, Pendle, settlement, ...).

    Written by ``save_accounting_event``; keyed by ``accounting_event_id``
    (legacy ``id``, a deterministic UUIDv5 in production rows, so re-deriving an
    event yields the same key). ``payload`` is the parsed ``payload_json``, whose
    shape depends on ``accounting_event_type``; ``payload_schema_version`` is the
    legacy ``schema_version`` column. ``position_reference`` is the denormalized
    copy of ``payload["position_reference"]`` (``None`` where the column is NULL
    or absent).
    """

    event_type: ClassVar[str] = "AccountingEventRecorded"

    accounting_event_id: str
    deployment_id: str
    cycle_id: str
    execution_mode: str
    timestamp: datetime
    chain: str
    protocol: str
    wallet_address: str
    accounting_event_type: str
    position_key: str
    ledger_entry_id: str | None = None
    tx_hash: str | None = None
    confidence: str
    payload: dict[str, Any]
    payload_schema_version: int = 1
    position_reference: dict[str, Any] | None = None
    legacy: LegacySource | None = None


# =============================================================================
# Legacy import
# =============================================================================


class LegacyRowImported(DomainEvent, frozen=True, kw_only=True):
    """A row of a legacy table with no projection, kept verbatim ("nothing dropped").

    ``row`` maps every column to its stored value unchanged: TEXT stays text (so
    decimals keep their exact digits and JSON columns their exact bytes),
    INTEGER stays int, REAL stays float, NULL stays ``None``. ``primary_key``
    repeats the key columns (``{"rowid": n}`` for a table without a key), so a
    re-import of the same ``source_digest`` can be recognised and skipped.
    """

    event_type: ClassVar[str] = "LegacyRowImported"

    deployment_id: str
    source_digest: str
    source_name: str = ""
    table: str
    primary_key: dict[str, LegacyValue]
    row: dict[str, LegacyValue]


# =============================================================================
# Registry of event types
# =============================================================================

_ALL_EVENTS: tuple[type[DomainEvent], ...] = (
    StateSaved,
    StateDeleted,
    ClobOrderSaved,
    ClobOrderStatusUpdated,
    ClobOrderDeleted,
    PortfolioSnapshotRecorded,
    SnapshotRetentionApplied,
    PortfolioMetricsSaved,
    LedgerEntryRecorded,
    LedgerAndRegistryCommitted,
    RegistryRowBackfilled,
    MigrationStateUpserted,
    MigrationStateUpdated,
    MigrationBackfillMarkedComplete,
    PositionEventRecorded,
    PositionAttributionUpdated,
    AccountingEventRecorded,
    LegacyRowImported,
)

EVENT_TYPES: dict[str, type[DomainEvent]] = {cls.event_type: cls for cls in _ALL_EVENTS}
"""Stored type name -> event class."""

if len(EVENT_TYPES) != len(_ALL_EVENTS):  # pragma: no cover - a programming error
    raise RuntimeError("two domain event classes share an event_type")


# =============================================================================
# Encoding, decoding, upcasting
# =============================================================================

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a raw payload of version ``v`` into the raw payload of version ``v + 1``."""

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""``(event_type, from_version) -> upcaster``; chained up to the current version."""

_ENCODER = msgspec.msgpack.Encoder(decimal_format="string")


_RAW_DECODER = msgspec.msgpack.Decoder(ext_hook=ext_hook)
_DECODERS: dict[type[DomainEvent], msgspec.msgpack.Decoder[Any]] = {}


def _decoder_for(cls: type[DomainEvent]) -> msgspec.msgpack.Decoder[Any]:
    decoder = _DECODERS.get(cls)
    if decoder is None:
        decoder = msgspec.msgpack.Decoder(cls, ext_hook=ext_hook)
        _DECODERS[cls] = decoder
    return decoder


def encode_event(ev: DomainEvent) -> tuple[str, int, bytes]:
    """Return ``(event_type, schema_version, msgpack bytes)`` for the event store.

    The bytes are a map of field name -> value in declaration order, with every
    field present, ``Decimal`` as its exact string and ``datetime`` as a
    MessagePack timestamp; equal events always give equal bytes.
    """
    cls = type(ev)
    if EVENT_TYPES.get(getattr(cls, "event_type", "")) is not cls:
        raise UnknownEventType(getattr(cls, "event_type", cls.__name__))
    try:
        data = _ENCODER.encode(ev)
    except OverflowError:
        # A JSON blob holds an integer beyond 64 bits: same bytes, except that
        # integer becomes an ext value the decoder turns back into an int.
        builtins = msgspec.to_builtins(ev, builtin_types=(Decimal, datetime))
        data = _ENCODER.encode(shield_big_ints(builtins))
    return cls.event_type, cls.schema_version, data


def decode_event(
    event_type: str, schema_version: int, data: bytes, *, trusted: bool = False
) -> DomainEvent:
    """Decode stored bytes into the current version of the named event.

    Raises :class:`UnknownEventType` for a name not in :data:`EVENT_TYPES`,
    :class:`UnknownSchemaVersion` for a version newer than this code (or < 1),
    :class:`MissingUpcaster` when an older version cannot be lifted, and
    :class:`EventDecodeError` when the bytes are not a valid payload (including
    a naive datetime or a field of the wrong type).

    ``trusted`` is for bytes read back from the log, which were checked when
    they were encoded: the per-field UTC/Decimal walk is skipped (a replay
    decodes every event of the log; the walk cost about an eighth of it).
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(event_type)
    current = cls.schema_version
    try:
        if schema_version == current:
            if not trusted:
                event: DomainEvent = _decoder_for(cls).decode(data)
                return event
            with trusting():
                event = _decoder_for(cls).decode(data)
            return event
        if schema_version < 1 or schema_version > current:
            raise UnknownSchemaVersion(event_type, schema_version, current)
        payload = _RAW_DECODER.decode(data)
        if not isinstance(payload, dict):
            raise EventDecodeError(
                f"{event_type} v{schema_version} payload is a {type(payload).__name__}, not a map"
            )
        for version in range(schema_version, current):
            upcaster = UPCASTERS.get((event_type, version))
            if upcaster is None:
                raise MissingUpcaster(event_type, version)
            payload = upcaster(payload)
        upcast: DomainEvent = msgspec.convert(payload, cls)
        return upcast
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EventDecodeError(f"cannot decode {event_type} v{schema_version}: {exc}") from exc


@contextlib.contextmanager
def trusting() -> Iterator[None]:
    """Skip the per-field checks of Structs decoded here from bytes the log holds.

    For a replay, around a run of :func:`current_decoder` calls; never across an
    ``await``, where other code on this thread would build unchecked Structs.
    """
    previous = _TRUSTED.decoding
    _TRUSTED.decoding = True
    try:
        yield
    finally:
        _TRUSTED.decoding = previous


def current_decoder(event_type: str, schema_version: int) -> Callable[[bytes], DomainEvent] | None:
    """The bare decoder of ``event_type`` at ``schema_version`` if that is the current
    version (else ``None``: :func:`decode_event` upcasts or refuses it).

    A replay looks it up once per type and calls it for every event, under
    :func:`trusting`; its errors are msgspec's, which :func:`decode_event` turns
    into :class:`EventDecodeError` when asked to decode the same bytes.
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None or schema_version != cls.schema_version:
        return None
    decode: Callable[[bytes], DomainEvent] = _decoder_for(cls).decode
    return decode


def register_upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorator: register the upcaster lifting ``event_type`` from ``from_version``.

    Usage, when ``StateSaved`` moves to version 2::

        @register_upcaster("StateSaved", 1)
        def _state_saved_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "new_field": "default"}
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(event_type)
    if not 1 <= from_version < cls.schema_version:
        raise UnknownSchemaVersion(event_type, from_version, cls.schema_version)

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        UPCASTERS[key] = fn
        return fn

    return register

"""How a row of each legacy table with a read model becomes the events that rebuild it.

One function per table, reading the row through a :class:`RowReader` (which
records NULLs and inexact cells) and returning the stream and the events, in the
order they apply. docs/legacy-schema.md, section 3, is the column-by-column map.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from projections.events import (
    AccountingEventRecorded,
    ClobFill,
    ClobOrderSaved,
    ClobOrderStatus,
    DomainEvent,
    LedgerEntry,
    LedgerEntryRecorded,
    MigrationBackfillMarkedComplete,
    MigrationStateUpdated,
    MigrationStateUpserted,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    PositionEventRecorded,
    RegistryRow,
    RegistryRowBackfilled,
    RegistryStatus,
    StateSaved,
    ValueConfidence,
)

from ..warm import (
    ACCOUNTING_STREAM,
    LEDGER_STREAM,
    METRICS_STREAM,
    REGISTRY_STREAM,
    SNAPSHOT_STREAM,
    STATE_STREAM,
    migration_stream,
    order_stream,
    position_stream,
)
from .cells import RowReader

Mapped = tuple[str, list[DomainEvent]]


def _state(r: RowReader, digest: str) -> Mapped:
    version = r.integer("version")
    if version is None:
        raise r.refuse("version", "is not a version number")
    state = r.json("state_data", dict)
    if state is None:
        raise r.refuse("state_data", "is not a JSON object")
    schema_version = r.integer_or("schema_version", 1)
    checksum = r.text("checksum")
    first = r.time("created_at")
    written = r.required_time("updated_at")
    event = StateSaved(
        deployment_id=r.deployment_id,
        version=version,
        expected_version=None,
        state=state,
        state_schema_version=schema_version,
        checksum=checksum,
        created_at=written,
        first_created_at=first,
        legacy=r.legacy(digest),
    )
    return STATE_STREAM, [event]


def _ledger(r: RowReader, digest: str) -> Mapped:
    entry = LedgerEntry(
        entry_id=r.text("id"),
        deployment_id=r.deployment_id,
        cycle_id=r.text("cycle_id"),
        execution_mode=r.text("execution_mode"),
        timestamp=r.required_time("timestamp"),
        intent_type=r.text("intent_type"),
        token_in=r.text("token_in"),
        amount_in=r.decimal("amount_in"),
        token_out=r.text("token_out"),
        amount_out=r.decimal("amount_out"),
        effective_price=r.decimal("effective_price"),
        slippage_bps=r.decimal("slippage_bps"),
        gas_used=r.integer("gas_used"),
        gas_usd=r.decimal("gas_usd"),
        tx_hash=r.text("tx_hash"),
        chain=r.text("chain"),
        protocol=r.text("protocol"),
        success=r.flag_or("success", True),
        error=r.text("error"),
        extracted_data=r.json("extracted_data_json", dict),
        price_inputs=r.json("price_inputs_json", dict),
        pre_state=r.json("pre_state_json", dict),
        post_state=r.json("post_state_json", dict),
    )
    return LEDGER_STREAM, [LedgerEntryRecorded(entry=entry, legacy=r.legacy(digest))]


_CONFIDENCE = {c.value: c for c in ValueConfidence}


def _snapshot(r: RowReader, digest: str) -> Mapped:
    zero = Decimal("0")
    event = PortfolioSnapshotRecorded(
        deployment_id=r.deployment_id,
        snapshot_id=r.integer("id"),
        cycle_id=r.text("cycle_id"),
        execution_mode=r.text("execution_mode"),
        timestamp=r.required_time("timestamp"),
        iteration_number=r.integer_or("iteration_number", 0),
        total_value_usd=r.required_decimal("total_value_usd"),
        available_cash_usd=r.required_decimal("available_cash_usd"),
        deployed_capital_usd=r.required_decimal("deployed_capital_usd", zero),
        wallet_total_value_usd=r.required_decimal("wallet_total_value_usd", zero),
        value_confidence=r.choice("value_confidence", _CONFIDENCE, ValueConfidence.HIGH),
        positions=r.document("positions_json"),
        token_prices=r.json_or("token_prices_json", dict, {}),
        wallet_balances=r.json_or("wallet_balances_json", list, []),
        chain=r.optional_text("chain"),
        created_at=r.required_time("created_at"),
        legacy=r.legacy(digest),
    )
    return SNAPSHOT_STREAM, [event]


def _metrics(r: RowReader, digest: str) -> Mapped:
    event = PortfolioMetricsSaved(
        deployment_id=r.deployment_id,
        initial_value_usd=r.required_decimal("initial_value_usd"),
        initial_timestamp=r.required_time("initial_timestamp"),
        deposits_usd=r.decimal("deposits_usd"),
        withdrawals_usd=r.decimal("withdrawals_usd"),
        gas_spent_usd=r.decimal("gas_spent_usd"),
        total_value_usd=r.decimal("total_value_usd"),
        positions=r.json_or("positions_json", list, []),
        cycle_id=r.optional_text("cycle_id"),
        execution_mode=r.text("execution_mode"),
        is_complete=r.flag_or("is_complete", True),
        updated_at=r.required_time("updated_at"),
        legacy=r.legacy(digest),
    )
    return METRICS_STREAM, [event]


def _position_event(r: RowReader, digest: str) -> Mapped:
    position_id = r.text("position_id")
    event = PositionEventRecorded(
        position_event_id=r.text("id"),
        deployment_id=r.deployment_id,
        cycle_id=r.text("cycle_id"),
        execution_mode=r.text("execution_mode"),
        position_id=position_id,
        position_type=r.text("position_type"),
        position_event_type=r.text("event_type"),
        timestamp=r.required_time("timestamp"),
        protocol=r.text("protocol"),
        chain=r.text("chain"),
        token0=r.text("token0"),
        token1=r.text("token1"),
        amount0=r.decimal("amount0"),
        amount1=r.decimal("amount1"),
        value_usd=r.decimal("value_usd"),
        tick_lower=r.integer("tick_lower"),
        tick_upper=r.integer("tick_upper"),
        liquidity=r.decimal("liquidity"),
        in_range=r.flag("in_range"),
        fees_token0=r.decimal("fees_token0"),
        fees_token1=r.decimal("fees_token1"),
        leverage=r.decimal("leverage"),
        entry_price=r.decimal("entry_price"),
        mark_price=r.decimal("mark_price"),
        unrealized_pnl=r.decimal("unrealized_pnl"),
        is_long=r.flag("is_long"),
        tx_hash=r.text("tx_hash"),
        gas_usd=r.decimal("gas_usd"),
        ledger_entry_id=r.text("ledger_entry_id"),
        protocol_fees_usd=r.decimal("protocol_fees_usd"),
        attribution=r.json_or("attribution_json", dict, {}),
        attribution_version=r.integer_or("attribution_version", 0),
        legacy=r.legacy(digest),
    )
    return position_stream(position_id), [event]


def _accounting(r: RowReader, digest: str) -> Mapped:
    payload = r.json("payload_json", dict)
    if payload is None:
        raise r.refuse("payload_json", "is not a JSON object")
    event = AccountingEventRecorded(
        accounting_event_id=r.text("id"),
        deployment_id=r.deployment_id,
        cycle_id=r.text("cycle_id"),
        execution_mode=r.text("execution_mode"),
        timestamp=r.required_time("timestamp"),
        chain=r.text("chain"),
        protocol=r.text("protocol"),
        wallet_address=r.text("wallet_address"),
        accounting_event_type=r.text("event_type"),
        position_key=r.text("position_key"),
        ledger_entry_id=r.optional_text("ledger_entry_id"),
        tx_hash=r.optional_text("tx_hash"),
        confidence=r.text("confidence"),
        payload=payload,
        payload_schema_version=r.integer_or("schema_version", 1),
        position_reference=r.json("position_reference", dict),
        legacy=r.legacy(digest),
    )
    return ACCOUNTING_STREAM, [event]


_REGISTRY_STATUS = {s.value: s for s in RegistryStatus}


def _registry(r: RowReader, digest: str) -> Mapped:
    row = RegistryRow(
        deployment_id=r.deployment_id,
        chain=r.text("chain"),
        primitive=r.text("primitive"),
        accounting_category=r.text("accounting_category"),
        physical_identity_hash=r.text("physical_identity_hash"),
        semantic_grouping_key=r.text("semantic_grouping_key"),
        grouping_policy_version=r.text("grouping_policy_version"),
        status=r.required_choice("status", _REGISTRY_STATUS),
        payload=r.json_or("payload", dict, {}),
        matching_policy_version=r.integer_or("matching_policy_version", 1),
        handle=r.optional_text("handle"),
        opened_at_block=r.integer("opened_at_block"),
        opened_tx=r.optional_text("opened_tx"),
        closed_at_block=r.integer("closed_at_block"),
        closed_tx=r.optional_text("closed_tx"),
        last_reconciled_at_block=r.integer("last_reconciled_at_block"),
    )
    return REGISTRY_STREAM, [RegistryRowBackfilled(row=row, legacy=r.legacy(digest))]


def _migration(r: RowReader, digest: str) -> Mapped:
    dep = r.deployment_id
    primitive, cutover = r.text("primitive"), r.text("cutover_key")
    created = r.required_time("created_at")
    updated = r.required_time("updated_at")
    started = r.time("backfill_started_at")
    source_table = r.optional_text("backfill_source_table")
    reader_version = r.integer("backfill_reader_version")
    synthesized = r.integer_or("rows_synthesized", 0)
    skipped = r.integer_or("rows_skipped_already_present", 0)
    notes = r.json("notes", dict)
    complete = r.flag_or("position_registry_backfill_complete", False)
    completed = r.time("backfill_completed_at")
    if not complete and completed is not None:
        r.keep("backfill_completed_at")  # only a completion event can carry it
    if complete and completed is None:
        r.note_null("backfill_completed_at")  # the completion below says updated_at
    events: list[DomainEvent] = [
        MigrationStateUpserted(
            deployment_id=dep,
            primitive=primitive,
            cutover_key=cutover,
            created_at=created,
            legacy=r.legacy(digest),
        ),
        MigrationStateUpdated(
            deployment_id=dep,
            primitive=primitive,
            cutover_key=cutover,
            updated_at=updated,
            backfill_started_at=started,
            backfill_source_table=source_table,
            backfill_reader_version=reader_version,
            rows_synthesized=synthesized,
            rows_skipped_already_present=skipped,
            notes=notes,
        ),
    ]
    if complete:
        events.append(
            MigrationBackfillMarkedComplete(
                deployment_id=dep,
                primitive=primitive,
                cutover_key=cutover,
                completed_at=completed or updated,
                updated_at=updated,
                rows_synthesized=synthesized,
                rows_skipped_already_present=skipped,
            )
        )
    return migration_stream(primitive, cutover), events


_ORDER_STATUS = {s.value: s for s in ClobOrderStatus}
_SIDES: dict[str, Any] = {"BUY": "BUY", "SELL": "SELL"}


def _order(r: RowReader, digest: str) -> Mapped:
    order_id = r.text("order_id")
    event = ClobOrderSaved(
        deployment_id=r.deployment_id,
        order_id=order_id,
        market_id=r.text("market_id"),
        token_id=r.text("token_id"),
        side=r.required_choice("side", _SIDES),
        status=r.required_choice("status", _ORDER_STATUS),
        price=r.required_decimal("price"),
        size=r.required_decimal("size"),
        filled_size=r.required_decimal("filled_size", Decimal("0")),
        average_fill_price=r.decimal("average_fill_price"),
        fills=_fills(r),
        order_type=r.text("order_type", "GTC"),
        intent_id=r.optional_text("intent_id"),
        error=r.optional_text("error"),
        metadata=r.json_or("metadata", dict, {}),
        submitted_at=r.required_time("submitted_at"),
        updated_at=r.required_time("updated_at"),
        legacy=r.legacy(digest),
    )
    return order_stream(order_id), [event]


def _fills(r: RowReader) -> tuple[ClobFill, ...]:
    """The ``fills`` JSON array as typed fills; one it cannot read whole is kept exactly."""
    raw = r.json("fills", list)
    if raw is None:
        return ()
    try:
        fills = tuple(_fill(item) for item in raw)
    except (KeyError, TypeError, ValueError, InvalidOperation):
        r.keep("fills")
        return ()
    return fills


def _fill(item: Any) -> ClobFill:
    def amount(name: str) -> Decimal:
        value = item[name]
        if not isinstance(value, str):
            raise TypeError(f"{name} is not decimal text")
        return Decimal(value)

    moment = datetime.fromisoformat(item["timestamp"])
    if moment.utcoffset() is None:
        raise ValueError("naive fill timestamp")
    counterparty = item.get("counterparty")
    if not isinstance(item["fill_id"], str) or not isinstance(counterparty, str | None):
        raise TypeError("fill_id and counterparty are text")
    return ClobFill(
        fill_id=item["fill_id"],
        price=amount("price"),
        size=amount("size"),
        fee=amount("fee"),
        timestamp=moment,
        counterparty=counterparty,
    )


MAPPERS: dict[str, Callable[[RowReader, str], Mapped]] = {
    "strategy_state": _state,
    "transaction_ledger": _ledger,
    "portfolio_snapshots": _snapshot,
    "portfolio_metrics": _metrics,
    "position_events": _position_event,
    "accounting_events": _accounting,
    "position_registry": _registry,
    "migration_state": _migration,
    "clob_orders": _order,
}
"""Tables with a read model; every other table is imported verbatim."""

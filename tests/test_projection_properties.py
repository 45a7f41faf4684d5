"""Property tests: random sequences of runner writes, three ways to the same read models.

For each generated history (on SQLite and on PostgreSQL), covering every kind of
domain write of the nine read models on two deployments:

* the inline rows equal the rows after a full rebuild from the log, and after a
  rebuild of each deployment on its own (every ``rm_*`` table, sorted);
* every query of every model answers what a plain-Python reference fold written
  here says (a dict per model, following the models' docstrings and
  ``docs/reference-semantics.md``, never the SQL);
* a write a read model refuses (a registry uniqueness index, a snapshot id taken
  by another timestamp) is predicted by the reference, raises, and leaves the
  rows and the log as they were.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import hypothesis
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventstore
from projections.engine import ProjectionEngine
from projections.errors import ProjectionWriteRefused
from projections.events import (
    OPEN_CLOB_ORDER_STATUSES,
    REGISTRY_STATUS_PRIORITY,
    AccountingEventRecorded,
    ClobFill,
    ClobOrderDeleted,
    ClobOrderSaved,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
    HandleMapping,
    LedgerAndRegistryCommitted,
    LedgerEntry,
    LedgerEntryRecorded,
    LegacySource,
    MigrationBackfillMarkedComplete,
    MigrationStateUpdated,
    MigrationStateUpserted,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    PositionAttributionUpdated,
    PositionEventRecorded,
    RegistryRow,
    RegistryRowBackfilled,
    RegistryStatus,
    SnapshotRetentionApplied,
    StateDeleted,
    StateSaved,
    ValueConfidence,
)
from projections.models import ALL_PROJECTIONS
from projections.models.ledger import LedgerQuantStats
from projections.models.metrics import PortfolioMetrics
from projections.models.migration import MigrationState
from projections.models.nav import Snapshot
from projections.models.orders import ClobOrder
from projections.models.state import CurrentState

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DEPLOYMENTS = ("alpha", "beta")
TABLES = tuple(table.physical() for cls in ALL_PROJECTIONS for table in cls.tables)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def uniform(options: list[Any]) -> st.SearchStrategy[Any]:
    """A near-uniform pick (``sampled_from`` and ``one_of`` favour the first options)."""
    return st.integers(0, 2**20).map(lambda i: options[i % len(options)])


AMOUNTS = st.one_of(
    st.none(),
    st.decimals(min_value=Decimal("-5"), max_value=Decimal("1000"), places=8, allow_nan=False),
    st.sampled_from([Decimal("0"), Decimal("1E-18"), Decimal("12345678901234567890.123456789")]),
)
MONEY = st.one_of(
    st.decimals(min_value=Decimal("0"), max_value=Decimal("100000"), places=6, allow_nan=False),
    st.sampled_from([Decimal("0"), Decimal("1.0"), Decimal("0E-24"), Decimal("1E-18")]),
    st.just(Decimal("1234567890123456789012345678901234567890.123456789")),
)
GAS = st.one_of(AMOUNTS, st.sampled_from([Decimal("Infinity"), Decimal("-Infinity")]))

# pre-states: most hold a wallet a price list can value (the first-action anchor)
DOCS = uniform(
    [
        None,
        {},
        {"wallet_balances": {}},
        {"wallet_balances": {"USDC": "100"}},
        {"wallet_balances": {"USDC": "1.5", "WETH": "0"}},
        {"wallet_balances": {"WETH": "1.5", "USDC": ""}},
        {"wallet_balances": {"USDC": "0"}},
        {"wallet_balances": {"USDC": "abc", "WETH": "2"}},  # unparsable counts as 0
        {"wallet_balances": {"USDC": "NaN", "WETH": 3}},
        {"wallet_balances": ["USDC"]},
    ]
)
QUOTES = {"USDC": {"price_usd": "1"}, "WETH": {"price_usd": "2500.5"}}
PRICES = uniform(
    [
        None,
        {},
        QUOTES,
        QUOTES,
        {"USDC": {"price_usd": "0"}},
        {"USDC": {"price_usd": "x"}, "WETH": {"price_usd": None}},
        {"USDC": "1", "WETH": {"price_usd": "-1"}},
    ]
)
SMALL_DOCS = uniform([{}, {"a": "1"}, {"a": "2", "b": [1, "x"]}, {"nested": {"k": None}}])


def legacy(table: str, key: Any, nulls: tuple[str, ...] = ()) -> LegacySource:
    return LegacySource(
        source_digest="ab" * 32, table=table, primary_key={"id": key}, null_columns=nulls
    )


# -- strategies: one per kind of domain write ------------------------------------------


@st.composite
def state_saved(draw: st.DrawFn, dep: str) -> StateSaved:
    return StateSaved(
        deployment_id=dep,
        version=draw(st.integers(1, 50)),
        state={"n": draw(st.integers(0, 9)), "nav": str(draw(AMOUNTS))},
        state_schema_version=draw(st.integers(1, 3)),
        checksum=draw(st.sampled_from(["a", "b"])),
        created_at=T0 + timedelta(seconds=draw(st.integers(0, 99))),
        first_created_at=draw(st.sampled_from([None, None, None, T0 - timedelta(days=3)])),
    )


FILLS = st.lists(
    st.builds(
        ClobFill,
        fill_id=st.sampled_from(["f1", "f2"]),
        price=MONEY,
        size=MONEY,
        fee=MONEY,
        timestamp=st.integers(0, 9).map(minutes),
        counterparty=st.sampled_from([None, "cp"]),
    ),
    max_size=2,
).map(tuple)
ORDER_IDS = ("o1", "o2", "o3")
STATUSES = st.sampled_from(list(ClobOrderStatus))


@st.composite
def order_saved(draw: st.DrawFn, dep: str) -> ClobOrderSaved:
    return ClobOrderSaved(
        deployment_id=dep,
        order_id=draw(st.sampled_from(ORDER_IDS)),
        market_id=draw(st.sampled_from(["m1", "m2"])),
        token_id=draw(st.sampled_from(["t1", "t2"])),
        side=draw(st.sampled_from(["BUY", "SELL"])),
        status=draw(STATUSES),
        price=draw(MONEY),
        size=draw(MONEY),
        filled_size=draw(MONEY),
        average_fill_price=draw(uniform([None, Decimal("0"), Decimal("0.49"), Decimal("7")])),
        fills=draw(FILLS),
        order_type=draw(st.sampled_from(["GTC", "FOK"])),
        intent_id=draw(st.sampled_from([None, "i1"])),
        error=draw(st.sampled_from([None, "", "rejected"])),
        metadata=draw(SMALL_DOCS),
        submitted_at=minutes(draw(st.integers(0, 5))),
        updated_at=minutes(draw(st.integers(0, 30))),
    )


@st.composite
def order_status(draw: st.DrawFn, dep: str) -> ClobOrderStatusUpdated:
    return ClobOrderStatusUpdated(
        deployment_id=dep,
        order_id=draw(st.sampled_from(ORDER_IDS)),
        status=draw(STATUSES),
        fills=draw(st.one_of(st.none(), FILLS)),
        filled_size=draw(uniform([None, Decimal("0"), Decimal("2.5"), Decimal("1E-18")])),
        average_fill_price=draw(uniform([None, Decimal("0"), Decimal("0.51"), Decimal("0.5")])),
        error=draw(uniform([None, "", "timeout"])),
        updated_at=minutes(draw(st.integers(0, 30))),
    )


@st.composite
def order_deleted(draw: st.DrawFn, dep: str) -> ClobOrderDeleted:
    return ClobOrderDeleted(
        deployment_id=dep, order_id=draw(st.sampled_from(ORDER_IDS)), deleted_at=T0
    )


@st.composite
def snapshot(draw: st.DrawFn, dep: str) -> PortfolioSnapshotRecorded:
    return PortfolioSnapshotRecorded(
        deployment_id=dep,
        # None: the projection assigns the event's deployment_seq; a number taken by
        # another timestamp of the deployment is refused
        snapshot_id=draw(st.one_of(st.none(), st.integers(1, 8))),
        cycle_id=draw(st.sampled_from(["", "c1", "c2"])),
        execution_mode=draw(st.sampled_from(["", "live"])),
        timestamp=minutes(draw(st.integers(0, 4))),
        iteration_number=draw(st.integers(0, 3)),
        total_value_usd=draw(MONEY),
        available_cash_usd=draw(MONEY),
        deployed_capital_usd=draw(MONEY),
        wallet_total_value_usd=draw(MONEY),
        value_confidence=draw(st.sampled_from(list(ValueConfidence))),
        positions=draw(
            uniform([[], [{"id": "p"}], {"schema_version": 2, "positions": [], "metadata": {}}])
        ),
        token_prices=draw(st.sampled_from([{}, {"WETH": "2500.5"}])),
        wallet_balances=draw(st.sampled_from([[], [{"symbol": "USDC", "balance": "1"}]])),
        chain=draw(st.sampled_from([None, "eth"])),
        created_at=T0 + timedelta(hours=draw(st.integers(0, 5))),
    )


@st.composite
def retention(draw: st.DrawFn, dep: str) -> SnapshotRetentionApplied:
    return SnapshotRetentionApplied(
        deployment_id=dep,
        retention_days=7,
        cutoff=T0 + timedelta(hours=draw(st.integers(0, 6))),
    )


@st.composite
def metrics_saved(draw: st.DrawFn, dep: str) -> PortfolioMetricsSaved:
    return PortfolioMetricsSaved(
        deployment_id=dep,
        initial_value_usd=draw(MONEY),
        initial_timestamp=minutes(draw(st.integers(0, 9))),
        deposits_usd=draw(st.one_of(st.none(), MONEY)),
        withdrawals_usd=draw(st.one_of(st.none(), MONEY)),
        gas_spent_usd=draw(st.one_of(st.none(), MONEY)),
        total_value_usd=draw(st.one_of(st.none(), MONEY)),
        positions=draw(st.sampled_from([[], [{"id": "p", "v": "1.5"}]])),
        cycle_id=draw(st.sampled_from([None, "", "c1"])),
        execution_mode=draw(st.sampled_from(["", "paper"])),
        is_complete=draw(st.booleans()),
        updated_at=minutes(draw(st.integers(0, 9))),
    )


@st.composite
def ledger_entry(draw: st.DrawFn, dep: str) -> LedgerEntry:
    return LedgerEntry(
        entry_id=draw(st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"])),  # reuse: replace
        deployment_id=dep,
        cycle_id=draw(st.sampled_from(["", "c1", "c2"])),
        timestamp=minutes(draw(st.integers(0, 20))),
        intent_type=draw(st.sampled_from(["SWAP", "LP_OPEN", "BORROW"])),
        amount_in=draw(AMOUNTS),
        gas_used=draw(st.sampled_from([None, 0, 21000])),
        gas_usd=draw(GAS),
        tx_hash=draw(st.sampled_from(["", "0xab"])),
        success=draw(st.booleans()),
        price_inputs=draw(PRICES),
        pre_state=draw(DOCS),
        post_state=draw(st.sampled_from([None, {}, {"x": "1"}])),
    )


@st.composite
def ledger_recorded(draw: st.DrawFn, dep: str) -> LedgerEntryRecorded:
    return LedgerEntryRecorded(entry=draw(ledger_entry(dep)))


@st.composite
def registry_row(draw: st.DrawFn, dep: str) -> RegistryRow:
    return RegistryRow(
        deployment_id=dep,
        chain=draw(st.sampled_from(["eth", "eth", "arb"])),
        primitive=draw(st.sampled_from(["lp", "lp", "perp"])),
        accounting_category=draw(st.sampled_from(["cat_a", "cat_b"])),
        physical_identity_hash=draw(st.sampled_from(["h1", "h2"])),
        semantic_grouping_key=draw(st.sampled_from(["g1", "g2"])),
        grouping_policy_version=draw(st.sampled_from(["v1", "v2"])),
        status=draw(st.sampled_from(list(RegistryStatus))),
        payload=draw(SMALL_DOCS),
        matching_policy_version=draw(st.integers(1, 2)),
        handle=draw(st.sampled_from([None, None, "H1", "H2"])),
        opened_at_block=draw(st.sampled_from([None, 100, 200])),
        opened_tx=draw(st.sampled_from([None, "0xa1", "0xb2"])),
        closed_at_block=draw(st.sampled_from([None, 300])),
        closed_tx=draw(st.sampled_from([None, "0xc3"])),
        last_reconciled_at_block=draw(st.sampled_from([None, 400])),
    )


@st.composite
def committed(draw: st.DrawFn, dep: str) -> LedgerAndRegistryCommitted:
    row = draw(registry_row(dep))
    # the writer refuses a mapping that contradicts the row (deployment, category, handle)
    names = [None, "H1", "H2"] if row.handle is None else [None, row.handle]
    name = draw(st.sampled_from(names))
    mapping = (
        None
        if name is None
        else HandleMapping(
            handle=name, deployment_id=dep, accounting_category=row.accounting_category
        )
    )
    return LedgerAndRegistryCommitted(ledger=draw(ledger_entry(dep)), registry=row, handle=mapping)


@st.composite
def backfilled(draw: st.DrawFn, dep: str) -> RegistryRowBackfilled:
    return RegistryRowBackfilled(row=draw(registry_row(dep)))


MIGRATION_KEYS = uniform([("lp", "k1"), ("lp", "k1"), ("lp", "k1"), ("perp", "k1"), ("lp", "k2")])


@st.composite
def migration_upserted(draw: st.DrawFn, dep: str) -> MigrationStateUpserted:
    primitive, key = draw(MIGRATION_KEYS)
    return MigrationStateUpserted(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=key,
        created_at=minutes(draw(st.integers(0, 9))),
    )


@st.composite
def migration_updated(draw: st.DrawFn, dep: str) -> MigrationStateUpdated:
    primitive, key = draw(MIGRATION_KEYS)
    maybe_count = st.one_of(st.none(), st.integers(0, 50))
    return MigrationStateUpdated(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=key,
        updated_at=minutes(draw(st.integers(0, 30))),
        backfill_started_at=draw(st.one_of(st.none(), st.integers(0, 9).map(minutes))),
        backfill_source_table=draw(uniform([None, "", "position_events", "ledger"])),
        backfill_reader_version=draw(uniform([None, 0, 1, 2])),
        rows_synthesized=draw(maybe_count),
        rows_skipped_already_present=draw(maybe_count),
        notes=draw(uniform([None, {}, {"a": "1"}, {"phase": 2}])),
    )


@st.composite
def migration_completed(draw: st.DrawFn, dep: str) -> MigrationBackfillMarkedComplete:
    primitive, key = draw(MIGRATION_KEYS)
    return MigrationBackfillMarkedComplete(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=key,
        completed_at=minutes(draw(st.integers(0, 30))),
        updated_at=minutes(draw(st.integers(0, 30))),
        rows_synthesized=draw(st.integers(0, 50)),
        rows_skipped_already_present=draw(st.integers(0, 50)),
    )


POSITION_EVENT_IDS = ("p1", "p2", "p3")
NULLABLE = ("cycle_id", "protocol", "tx_hash", "amount0", "value_usd", "protocol_fees_usd")


@st.composite
def position_recorded(draw: st.DrawFn, dep: str) -> PositionEventRecorded:
    event_id = draw(st.sampled_from(POSITION_EVENT_IDS))
    imported = draw(st.booleans())
    nulls = tuple(draw(st.lists(st.sampled_from(NULLABLE), unique=True))) if imported else ()
    return PositionEventRecorded(
        position_event_id=event_id,
        deployment_id=dep,
        cycle_id=draw(st.sampled_from(["", "c1"])),
        execution_mode=draw(st.sampled_from(["", "live"])),
        position_id=draw(st.sampled_from(["pos1", "pos2"])),
        position_type=draw(st.sampled_from(["LP", "PERP", "SUPPLY"])),
        position_event_type=draw(st.sampled_from(["OPEN", "CLOSE", "COLLECT_FEES"])),
        timestamp=minutes(draw(st.integers(0, 4))),
        protocol=draw(st.sampled_from(["", "uniswap_v3"])),
        chain=draw(st.sampled_from(["", "arbitrum"])),
        token0=draw(st.sampled_from(["", "WETH"])),
        amount0=draw(AMOUNTS),
        amount1=draw(AMOUNTS),
        value_usd=draw(AMOUNTS),
        tick_lower=draw(st.sampled_from([None, -887220, 0])),
        tick_upper=draw(st.sampled_from([None, 887220])),
        liquidity=draw(
            st.sampled_from([None, Decimal("1461446703485210103287273052203988822378723970342")])
        ),
        in_range=draw(st.sampled_from([None, True, False])),
        is_long=draw(st.sampled_from([None, True, False])),
        tx_hash=draw(st.sampled_from(["", "0xfeed"])),
        gas_usd=draw(AMOUNTS),
        ledger_entry_id=draw(st.sampled_from(["", "e1"])),
        protocol_fees_usd=draw(st.one_of(st.none(), st.just(Decimal("0")), MONEY)),
        attribution=draw(SMALL_DOCS),
        attribution_version=draw(st.integers(0, 2)),
        legacy=legacy("position_events", event_id, nulls) if imported else None,
    )


@st.composite
def attribution_updated(draw: st.DrawFn, dep: str) -> PositionAttributionUpdated:
    return PositionAttributionUpdated(
        deployment_id=dep,
        position_event_id=draw(st.sampled_from(POSITION_EVENT_IDS)),
        attribution=draw(SMALL_DOCS),
        attribution_version=draw(st.integers(0, 5)),
    )


@st.composite
def accounting_recorded(draw: st.DrawFn, dep: str) -> AccountingEventRecorded:
    return AccountingEventRecorded(
        accounting_event_id=draw(st.sampled_from(["a1", "a2", "a3"])),
        deployment_id=dep,
        cycle_id=draw(st.sampled_from(["", "c1"])),
        execution_mode=draw(st.sampled_from(["live", "paper"])),
        timestamp=minutes(draw(st.integers(0, 4))),
        chain=draw(st.sampled_from(["eth", "arb"])),
        protocol=draw(st.sampled_from(["aave", "uniswap_v3"])),
        wallet_address="0xwallet",
        accounting_event_type=draw(st.sampled_from(["SUPPLY", "SWAP", "LP_OPEN"])),
        position_key=draw(st.sampled_from(["", "k1", "k2"])),
        ledger_entry_id=draw(st.sampled_from([None, "e1"])),
        tx_hash=draw(st.sampled_from([None, "0xabc"])),
        confidence=draw(st.sampled_from(["HIGH", "ESTIMATED"])),
        payload=draw(SMALL_DOCS),
        payload_schema_version=draw(st.integers(1, 2)),
        position_reference=draw(st.sampled_from([None, {}, {"handle": "H1", "chain": "eth"}])),
    )


WRITES: dict[str, Any] = {
    "state": state_saved,
    "state_deleted": lambda dep: st.just(StateDeleted(deployment_id=dep, deleted_at=T0)),
    "order": order_saved,
    "order_status": order_status,
    "order_deleted": order_deleted,
    "snapshot": snapshot,
    "retention": retention,
    "metrics": metrics_saved,
    "ledger": ledger_recorded,
    "commit": committed,
    "backfill": backfilled,
    "migration_upsert": migration_upserted,
    "migration_update": migration_updated,
    "migration_complete": migration_completed,
    "position": position_recorded,
    "attribution": attribution_updated,
    "accounting": accounting_recorded,
}
# the writes of each model (the one that creates rows first), weighted so later writes
# meet the rows earlier ones made
MODELS = {
    "state": ["state", "state", "state", "state_deleted"],
    "orders": ["order", "order", "order_status", "order_status", "order_status", "order_deleted"],
    "nav": ["snapshot", "snapshot", "snapshot", "retention"],
    "metrics": ["metrics"],
    "ledger": ["ledger", "ledger", "commit"],
    "registry": ["commit", "commit", "commit", "backfill", "backfill"],
    "migration": [
        "migration_upsert",
        "migration_upsert",
        "migration_update",
        "migration_update",
        "migration_complete",
    ],
    "positions": ["position", "position", "attribution"],
    "accounting": ["accounting"],
}
assert {kind for kinds in MODELS.values() for kind in kinds} == set(WRITES)


def choose(draw: st.DrawFn, options: list[str]) -> str:
    """A near-uniform pick (``sampled_from`` favours the first options), shrinking to [0]."""
    choice: str = draw(uniform(options))
    return choice


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[DomainEvent], str]:
    """Up to eight writes per model, interleaved in a drawn order.

    Every model gets its own sub-history (so each example meets most of them, and
    later writes meet the rows earlier ones made); shrinking empties the ones a
    failure does not need. Also draws the deployment to rebuild on its own.
    """
    pending: dict[str, list[DomainEvent]] = {}
    for model, kinds in MODELS.items():
        steps: list[DomainEvent] = []
        for index in range(draw(st.integers(0, 8))):
            # mostly one deployment, so later writes meet the rows earlier ones made
            dep = choose(draw, [*DEPLOYMENTS, DEPLOYMENTS[0], DEPLOYMENTS[0]])
            kind = kinds[0] if index == 0 else choose(draw, kinds)  # the creating write first
            steps.append(draw(WRITES[kind](dep)))
        if steps:
            pending[model] = steps[::-1]
    history: list[DomainEvent] = []
    while pending:
        model = choose(draw, sorted(pending))
        history.append(pending[model].pop())
        if not pending[model]:
            del pending[model]
    return history, draw(st.sampled_from(DEPLOYMENTS))


# -- the reference fold: plain Python, no SQL ----------------------------------------


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """Sums as the store keeps them: exact, not rounded to the default 28 digits."""
    with localcontext(prec=1000):
        return sum(values, Decimal(0))


def wallet_value(pre: Any, prices: Any) -> Decimal | None:
    """The first-action anchor of one entry: the priced pre-state wallet, when positive."""
    if not isinstance(pre, dict) or not isinstance(prices, dict):
        return None
    balances = pre.get("wallet_balances")
    if not isinstance(balances, dict):
        return None
    total = Decimal(0)
    for token, balance in balances.items():
        quote = prices.get(token)
        if not isinstance(quote, dict):
            continue
        with localcontext(prec=1000):
            total += lenient(balance) * lenient(quote.get("price_usd"))
    return total if total > 0 else None


def lenient(value: Any) -> Decimal:
    """The anchor's parse: absent, blank, unparsable or not finite reads as 0."""
    try:
        parsed = Decimal(str(value))
    except ArithmeticError:
        return Decimal(0)
    return parsed if value not in (None, "") and parsed.is_finite() else Decimal(0)


def lenient_gas(entry: LedgerEntry) -> Decimal:
    gas = entry.gas_usd
    return gas if gas is not None and gas.is_finite() else Decimal(0)


TERMINAL = (RegistryStatus.CLOSED, RegistryStatus.REORG_INVALIDATED)
RegistryKey = tuple[str, str, str, str]


@dataclass
class Reference:
    """Every read model as dicts, folded from the accepted events in log order."""

    seq: dict[str, int] = field(default_factory=dict)  # events in each deployment's log
    streams: dict[tuple[str, str], int] = field(default_factory=dict)  # each stream's version
    states: dict[str, CurrentState] = field(default_factory=dict)
    orders: dict[tuple[str, str], ClobOrder] = field(default_factory=dict)
    snapshots: dict[str, dict[datetime, Snapshot]] = field(default_factory=dict)
    snapshot_stats: dict[str, list[int]] = field(default_factory=dict)  # [max id, count]
    metrics: dict[str, PortfolioMetrics] = field(default_factory=dict)
    entries: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    registry: dict[RegistryKey, dict[str, Any]] = field(default_factory=dict)
    migrations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    positions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    accounting: dict[tuple[str, str], AccountingEventRecorded] = field(default_factory=dict)
    paths: set[str] = field(default_factory=set)  # semantic branches taken (statistics)

    def apply(self, event: DomainEvent) -> bool:
        """Fold ``event``; ``False`` (and nothing changed) when a read model refuses it."""
        dep = deployment_of(event)
        seq = self.seq.get(dep, 0) + 1  # the deployment_seq the event will get
        stream = (dep, STREAMS[type(event)])
        stream_version = self.streams.get(stream, 0) + 1
        if isinstance(event, PortfolioSnapshotRecorded):
            if not self._snapshot(event, seq):
                return False
        elif isinstance(event, LedgerAndRegistryCommitted):
            rows = self._registry_commit(event)
            if rows is None:
                return False
            self.registry = rows
            self.entries[(dep, event.ledger.entry_id)] = event.ledger
        elif isinstance(event, RegistryRowBackfilled):
            rows = self._registry_backfill(event.row)
            if rows is None:
                return False
            self.registry = rows
        else:
            self._plain(event, seq, stream_version)
        self.seq[dep] = seq
        self.streams[stream] = stream_version
        return True

    def _plain(self, event: DomainEvent, seq: int, stream_version: int) -> None:
        if isinstance(event, StateSaved):
            old = self.states.get(event.deployment_id)
            first = event.first_created_at or event.created_at
            self.states[event.deployment_id] = CurrentState(
                deployment_id=event.deployment_id,
                version=event.version,
                state=event.state,
                schema_version=event.state_schema_version,
                checksum=event.checksum,
                created_at=old.created_at if old is not None else first,
                updated_at=event.created_at,
                stream_version=stream_version,  # what the next CAS save must expect
            )
        elif isinstance(event, StateDeleted):
            self.states.pop(event.deployment_id, None)
        elif isinstance(event, ClobOrderSaved):
            key = (event.deployment_id, event.order_id)
            old_order = self.orders.get(key)
            self.orders[key] = ClobOrder(
                deployment_id=event.deployment_id,
                order_id=event.order_id,
                market_id=event.market_id,
                token_id=event.token_id,
                side=event.side,
                status=event.status,
                price=event.price,
                size=event.size,
                filled_size=event.filled_size,
                # a falsy average (zero included) is stored as "none", as the legacy save did
                average_fill_price=event.average_fill_price or None,
                fills=event.fills,
                order_type=event.order_type,
                intent_id=event.intent_id,
                error=event.error,
                metadata=event.metadata,
                # the first save's submission time stays
                submitted_at=event.submitted_at if old_order is None else old_order.submitted_at,
                updated_at=event.updated_at,
            )
        elif isinstance(event, ClobOrderStatusUpdated):
            key = (event.deployment_id, event.order_id)
            current = self.orders.get(key)
            if current is None:
                return  # the legacy UPDATE matched nothing
            self.paths.add("order status updated")
            changes: dict[str, Any] = {"status": event.status, "updated_at": event.updated_at}
            for name in ("fills", "filled_size", "average_fill_price", "error"):
                value = getattr(event, name)
                if value is not None:  # a zero average is stored as given here
                    changes[name] = value
            self.orders[key] = msgspec.structs.replace(current, **changes)
        elif isinstance(event, ClobOrderDeleted):
            if self.orders.pop((event.deployment_id, event.order_id), None) is not None:
                self.paths.add("order deleted")
        elif isinstance(event, SnapshotRetentionApplied):
            series = self.snapshots.get(event.deployment_id, {})
            pruned = [at for at, snap in series.items() if snap.created_at < event.cutoff]
            for at in pruned:
                del series[at]
            stats = self.snapshot_stats.get(event.deployment_id)
            if stats is not None:
                stats[1] -= len(pruned)
            if pruned:
                self.paths.add("snapshots pruned")
        elif isinstance(event, PortfolioMetricsSaved):
            self.metrics[event.deployment_id] = PortfolioMetrics(
                deployment_id=event.deployment_id,
                initial_value_usd=event.initial_value_usd,
                initial_timestamp=event.initial_timestamp,
                deposits_usd=event.deposits_usd,
                withdrawals_usd=event.withdrawals_usd,
                gas_spent_usd=event.gas_spent_usd,
                total_value_usd=event.total_value_usd,
                positions=event.positions,
                cycle_id=event.cycle_id,
                execution_mode=event.execution_mode,
                is_complete=event.is_complete,
                updated_at=event.updated_at,
            )
        elif isinstance(event, LedgerEntryRecorded):
            self.entries[(event.entry.deployment_id, event.entry.entry_id)] = event.entry
        elif isinstance(event, MigrationStateUpserted):
            key3 = (event.deployment_id, event.primitive, event.cutover_key)
            self.migrations.setdefault(
                key3,
                {
                    "complete": False,
                    "started": None,
                    "completed": None,
                    "source": "position_events",
                    "reader": 1,
                    "synthesized": 0,
                    "skipped": 0,
                    "notes": {},
                    "created_at": event.created_at,
                    "updated_at": event.created_at,
                },
            )
        elif isinstance(event, MigrationStateUpdated):
            row = self.migrations.get((event.deployment_id, event.primitive, event.cutover_key))
            if row is None:
                return
            self.paths.add("migration updated")
            row["updated_at"] = event.updated_at
            for name, value in (
                ("started", event.backfill_started_at),
                ("source", event.backfill_source_table),
                ("reader", event.backfill_reader_version),
                ("synthesized", event.rows_synthesized),
                ("skipped", event.rows_skipped_already_present),
                ("notes", event.notes),
            ):
                if value is not None:
                    row[name] = value
        elif isinstance(event, MigrationBackfillMarkedComplete):
            row = self.migrations.get((event.deployment_id, event.primitive, event.cutover_key))
            if row is None:
                return
            self.paths.add("migration completed")
            row.update(
                complete=True,
                completed=event.completed_at,
                synthesized=event.rows_synthesized,
                skipped=event.rows_skipped_already_present,
                updated_at=event.updated_at,
            )
        elif isinstance(event, PositionEventRecorded):
            # the first write of an id wins
            self.positions.setdefault(
                (event.deployment_id, event.position_event_id),
                {
                    "event": event,
                    "seq": seq,
                    "attribution": event.attribution,
                    "version": event.attribution_version,
                },
            )
        elif isinstance(event, PositionAttributionUpdated):
            found = self.positions.get((event.deployment_id, event.position_event_id))
            if found is not None:
                self.paths.add("attribution updated")
                found["attribution"] = event.attribution
                found["version"] = event.attribution_version
        elif isinstance(event, AccountingEventRecorded):
            self.accounting[(event.deployment_id, event.accounting_event_id)] = event
        else:  # pragma: no cover - a kind the generator does not make
            raise AssertionError(f"no reference for {type(event).__name__}")

    # -- NAV ---------------------------------------------------------------------------

    def _snapshot(self, event: PortfolioSnapshotRecorded, seq: int) -> bool:
        dep = event.deployment_id
        series = self.snapshots.setdefault(dep, {})
        old = series.get(event.timestamp)
        if old is None:
            snapshot_id = event.snapshot_id if event.snapshot_id is not None else seq
            if any(s.snapshot_id == snapshot_id for s in series.values()):
                return False  # the id belongs to another timestamp
            cycle_id, mode = event.cycle_id, event.execution_mode
        else:
            # a re-recorded timestamp keeps its id; a non-empty identity survives
            self.paths.add("snapshot re-recorded")
            snapshot_id = old.snapshot_id
            cycle_id = old.cycle_id or event.cycle_id
            mode = old.execution_mode or event.execution_mode
        series[event.timestamp] = Snapshot(
            deployment_id=dep,
            snapshot_id=snapshot_id,
            cycle_id=cycle_id,
            execution_mode=mode,
            timestamp=event.timestamp,
            iteration_number=event.iteration_number,
            total_value_usd=event.total_value_usd,
            available_cash_usd=event.available_cash_usd,
            deployed_capital_usd=event.deployed_capital_usd,
            wallet_total_value_usd=event.wallet_total_value_usd,
            value_confidence=event.value_confidence,
            positions=event.positions,
            token_prices=event.token_prices,
            wallet_balances=event.wallet_balances,
            chain=event.chain,
            created_at=event.created_at,
        )
        stats = self.snapshot_stats.setdefault(dep, [0, 0])
        stats[0] = max(stats[0], snapshot_id)  # never goes down, retention included
        stats[1] += 1 if old is None else 0
        return True

    # -- registry ----------------------------------------------------------------------

    def _registry_commit(
        self, event: LedgerAndRegistryCommitted
    ) -> dict[RegistryKey, dict[str, Any]] | None:
        row = event.registry
        handle = row.handle or (event.handle.handle if event.handle is not None else None) or None
        rows = copy.deepcopy(self.registry)
        if handle is not None:
            # release the handle from terminal rows of other physical positions
            for other in rows.values():
                if (
                    other["deployment_id"] == row.deployment_id
                    and other["accounting_category"] == row.accounting_category
                    and other["handle"] == handle
                    and other["status"] in TERMINAL
                    and other["physical_identity_hash"] != row.physical_identity_hash
                ):
                    other["handle"] = None
                    self.paths.add("handle released")
        key = registry_key(row)
        old = rows.get(key)
        if old is None:
            rows[key] = registry_values(row, handle)
        elif REGISTRY_STATUS_PRIORITY[row.status] > REGISTRY_STATUS_PRIORITY[old["status"]]:
            # the whole update is gated on a strictly higher status priority
            self.paths.add("registry row moved forward")
            old.update(
                status=row.status,
                payload=row.payload,
                handle=old["handle"] if old["handle"] is not None else handle,
                closed_at_block=pick(row.closed_at_block, old["closed_at_block"]),
                closed_tx=pick(row.closed_tx, old["closed_tx"]),
                last_reconciled_at_block=pick(
                    row.last_reconciled_at_block, old["last_reconciled_at_block"]
                ),
                grouping_policy_version=row.grouping_policy_version,
                matching_policy_version=row.matching_policy_version,
                semantic_grouping_key=row.semantic_grouping_key,
                accounting_category=row.accounting_category,
            )
        if old is not None and rows[key] == old and old == self.registry[key]:
            self.paths.add("registry commit kept an existing row")
        if handle is not None and rows[key]["handle"] is None:
            self.paths.add("handle filled in")
            rows[key]["handle"] = handle  # filled in even when the upsert changed nothing
        return rows if registry_valid(rows) else None

    def _registry_backfill(self, row: RegistryRow) -> dict[RegistryKey, dict[str, Any]] | None:
        if registry_key(row) in self.registry:
            return self.registry  # insert if absent: an existing key changes nothing
        rows = copy.deepcopy(self.registry)
        rows[registry_key(row)] = registry_values(row, row.handle)
        return rows if registry_valid(rows) else None


def pick(new: Any, old: Any) -> Any:
    return new if new is not None else old


def registry_key(row: RegistryRow) -> RegistryKey:
    return (row.deployment_id, row.chain, row.primitive, row.physical_identity_hash)


REGISTRY_COLUMNS = (
    "deployment_id",
    "chain",
    "primitive",
    "accounting_category",
    "physical_identity_hash",
    "semantic_grouping_key",
    "grouping_policy_version",
    "handle",
    "status",
    "payload",
    "opened_at_block",
    "opened_tx",
    "closed_at_block",
    "closed_tx",
    "last_reconciled_at_block",
    "matching_policy_version",
)


def registry_values(row: RegistryRow, handle: str | None) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in REGISTRY_COLUMNS}
    values["handle"] = handle
    return values


def registry_valid(rows: dict[RegistryKey, dict[str, Any]]) -> bool:
    """The two uniqueness rules: one open handle-less row per group, one row per handle."""
    auto = [
        (r["deployment_id"], r["chain"], r["accounting_category"], r["semantic_grouping_key"])
        for r in rows.values()
        if r["status"] == RegistryStatus.OPEN and r["handle"] is None
    ]
    handles = [
        (r["deployment_id"], r["accounting_category"], r["handle"])
        for r in rows.values()
        if r["handle"] is not None
    ]
    return len(set(auto)) == len(auto) and len(set(handles)) == len(handles)


# -- the expected answers of each model's queries ---------------------------------------


def registry_dict(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    out["status"] = str(values["status"])
    return out


def registry_open_order(values: dict[str, Any]) -> tuple[Any, ...]:
    block, tx = values["opened_at_block"], values["opened_tx"]
    return (
        block is not None,
        block or 0,
        tx is not None,
        tx or "",
        values["chain"],
        values["primitive"],
        values["physical_identity_hash"],
    )


POSITION_TEXT = ("cycle_id", "execution_mode", "protocol", "chain", "token0", "token1")
POSITION_AMOUNTS = (
    "amount0",
    "amount1",
    "value_usd",
    "liquidity",
    "fees_token0",
    "fees_token1",
    "leverage",
    "entry_price",
    "mark_price",
    "unrealized_pnl",
)


def position_record(found: dict[str, Any]) -> PositionEventRecorded:
    """The typed read: legacy dropped, an imported NULL text reads as ``""``."""
    event: PositionEventRecorded = found["event"]
    nulls = set(event.legacy.null_columns) if event.legacy is not None else set()
    text = ("cycle_id", "execution_mode", "protocol", "chain", "token0", "token1", "tx_hash")
    blanks = {name: "" for name in (*text, "ledger_entry_id") if name in nulls}
    return msgspec.structs.replace(
        event,
        legacy=None,
        attribution=found["attribution"],
        attribution_version=found["version"],
        **blanks,
    )


def position_legacy_dict(found: dict[str, Any]) -> dict[str, Any]:
    """A ``get_position_events_sync`` row; ``attribution_json`` parsed for comparison."""
    event: PositionEventRecorded = found["event"]
    nulls = set(event.legacy.null_columns) if event.legacy is not None else set()

    def text(name: str) -> str | None:
        value: str = getattr(event, name)
        return None if name in nulls else value

    def amount(name: str) -> str | None:
        value = getattr(event, name)
        if value is not None:
            return str(value)
        return None if name in nulls else ""

    def flag(value: bool | None) -> int | None:
        return None if value is None else int(value)

    return {
        "id": event.position_event_id,
        "deployment_id": event.deployment_id,
        "cycle_id": text("cycle_id"),
        "execution_mode": text("execution_mode"),
        "position_id": event.position_id,
        "position_type": event.position_type,
        "event_type": event.position_event_type,
        "timestamp": event.timestamp.isoformat(),
        "protocol": text("protocol"),
        "chain": text("chain"),
        "token0": text("token0"),
        "token1": text("token1"),
        "amount0": amount("amount0"),
        "amount1": amount("amount1"),
        "value_usd": amount("value_usd"),
        "tick_lower": event.tick_lower,
        "tick_upper": event.tick_upper,
        "liquidity": amount("liquidity"),
        "in_range": flag(event.in_range),
        "fees_token0": amount("fees_token0"),
        "fees_token1": amount("fees_token1"),
        "leverage": amount("leverage"),
        "entry_price": amount("entry_price"),
        "mark_price": amount("mark_price"),
        "unrealized_pnl": amount("unrealized_pnl"),
        "is_long": flag(event.is_long),
        "tx_hash": text("tx_hash"),
        "gas_usd": amount("gas_usd"),
        "ledger_entry_id": text("ledger_entry_id"),
        "protocol_fees_usd": amount("protocol_fees_usd"),
        "attribution_json": found["attribution"],
        "attribution_version": found["version"],
    }


def parsed(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = dict(row)
        for column in columns:
            if row[column] is not None:
                row[column] = json.loads(row[column])
        out.append(row)
    return out


def accounting_dict(event: AccountingEventRecorded) -> dict[str, Any]:
    """A ``get_accounting_events_sync`` row, JSON columns parsed for comparison."""
    return {
        "id": event.accounting_event_id,
        "deployment_id": event.deployment_id,
        "cycle_id": event.cycle_id,
        "execution_mode": event.execution_mode,
        "timestamp": event.timestamp.isoformat(),
        "chain": event.chain,
        "protocol": event.protocol,
        "wallet_address": event.wallet_address,
        "event_type": event.accounting_event_type,
        "position_key": event.position_key,
        "ledger_entry_id": event.ledger_entry_id,
        "tx_hash": event.tx_hash,
        "confidence": event.confidence,
        "payload_json": event.payload,
        "schema_version": event.payload_schema_version,
        "position_reference": event.position_reference,
    }


async def check_queries(engine: ProjectionEngine, ref: Reference, dep: str) -> None:
    store = engine.store
    q: Any = {name: engine.live(name) for name in engine._classes}

    # state
    assert await q["state"].get(store, dep) == ref.states.get(dep)

    # CLOB orders
    orders = {oid: o for (d, oid), o in ref.orders.items() if d == dep}
    for order_id in ORDER_IDS:
        assert await q["orders"].get(store, dep, order_id) == orders.get(order_id)
    newest_first = sorted(
        (o for o in orders.values() if o.status in OPEN_CLOB_ORDER_STATUSES),
        key=lambda o: (o.submitted_at, o.order_id),
        reverse=True,
    )
    assert await q["orders"].open_orders(store, dep) == newest_first
    assert await q["orders"].open_orders(store, dep, "") == newest_first  # "" does not filter
    assert await q["orders"].open_orders(store, dep, "m1") == [
        o for o in newest_first if o.market_id == "m1"
    ]

    # NAV series
    nav = q["nav"]
    series = sorted(ref.snapshots.get(dep, {}).values(), key=lambda s: s.timestamp)
    max_id, count = ref.snapshot_stats.get(dep, [0, 0])
    assert await nav.count(store, dep) == count == len(series)
    assert await nav.max_snapshot_id(store, dep) == max_id
    assert await nav.recent(store, dep, 1000) == series
    assert await nav.first(store, dep) == (series[0] if series else None)
    assert await nav.latest(store, dep) == (series[-1] if series else None)
    assert await nav.at(store, dep, minutes(3)) == next(
        (s for s in reversed(series) if s.timestamp <= minutes(3)), None
    )
    assert (
        await nav.since(store, dep, minutes(2), 2)
        == [s for s in series if s.timestamp >= minutes(2)][:2]
    )
    full, truncated = await nav.nav_series(store, dep)
    assert not truncated
    assert [(*r[:4], json.loads(r[4]), r[5]) for r in full] == [
        (
            s.timestamp,
            str(s.total_value_usd),
            str(s.available_cash_usd),
            s.snapshot_id,
            s.positions,
            s.value_confidence.value,
        )
        for s in series
    ]
    if series:
        cursor = (series[0].timestamp, series[0].snapshot_id)
        after, _ = await nav.nav_series(store, dep, since=cursor)
        assert [r[3] for r in after] == [s.snapshot_id for s in series[1:]]
    window, truncated = await nav.in_window(store, dep, minutes(1), minutes(4))
    assert [(r[0], r[1], r[2], json.loads(r[3])) for r in window] == [
        (s.timestamp, str(s.total_value_usd), s.value_confidence.value, s.positions)
        for s in series
        if minutes(1) <= s.timestamp <= minutes(4)
    ]

    # PnL baseline
    assert await q["metrics"].get(store, dep) == ref.metrics.get(dep)

    # ledger and quant stats
    ledger = q["ledger"]
    entries = [e for (d, _), e in ref.entries.items() if d == dep]
    oldest_first = sorted(entries, key=lambda e: (e.timestamp, e.entry_id))
    anchor = None
    for entry in oldest_first:
        if entry.pre_state is not None and entry.price_inputs is not None:
            anchor = wallet_value(entry.pre_state, entry.price_inputs)
            if anchor is not None:
                break
    stats = (
        LedgerQuantStats(
            total=len(entries),
            with_tx_hash=sum(1 for e in entries if e.tx_hash),
            with_cycle_id=sum(1 for e in entries if e.cycle_id),
            with_price_inputs=sum(1 for e in entries if e.price_inputs is not None),
            with_pre_post_state=sum(
                1 for e in entries if e.pre_state is not None and e.post_state is not None
            ),
            with_positive_gas_usd=sum(1 for e in entries if lenient_gas(e) > 0),
            gas_usd_sum=exact_sum(lenient_gas(e) for e in entries),
            first_action_wallet_value_usd=anchor,
        )
        if entries
        else LedgerQuantStats()
    )
    assert await ledger.quant_stats(store, dep) == stats
    assert await ledger.gas_usd_sum(store, dep) == stats.gas_usd_sum
    assert await ledger.entries(store, dep, limit=1000) == oldest_first[::-1]
    assert await ledger.entries(store, dep, intent_type="SWAP", before=minutes(15)) == [
        e for e in oldest_first[::-1] if e.intent_type == "SWAP" and e.timestamp < minutes(15)
    ]
    assert await ledger.anchor_candidates(store, dep) == [
        e for e in oldest_first if e.pre_state is not None and e.price_inputs is not None
    ]

    # position registry
    registry = q["registry"]
    rows = [r for k, r in sorted(ref.registry.items()) if k[0] == dep]
    assert await registry.rows(store, dep) == [
        RegistryRow(**{**r, "status": RegistryStatus(r["status"])}) for r in rows
    ]
    open_rows = sorted(
        (r for r in rows if r["status"] == RegistryStatus.OPEN), key=registry_open_order
    )
    assert await registry.open_rows(store, dep) == [registry_dict(r) for r in open_rows]
    assert await registry.open_rows(store, dep, chain="eth", accounting_category="cat_a") == [
        registry_dict(r)
        for r in open_rows
        if r["chain"] == "eth" and r["accounting_category"] == "cat_a"
    ]
    for chain, category, group in itertools.product(
        ("eth", "arb"), ("cat_a", "cat_b"), ("g1", "g2")
    ):
        holder = next(
            (
                r
                for r in open_rows
                if r["handle"] is None
                and (r["chain"], r["accounting_category"], r["semantic_grouping_key"])
                == (chain, category, group)
            ),
            None,
        )
        found = await registry.find_open_auto_mode_row(
            store,
            deployment_id=dep,
            chain=chain,
            accounting_category=category,
            semantic_grouping_key=group,
        )
        assert found == (
            None
            if holder is None
            else {
                "physical_identity_hash": holder["physical_identity_hash"],
                "opened_tx": holder["opened_tx"] or "",
            }
        )

    # migration state (read like the reference: "" source and reader 0 fall back)
    cutovers = []
    for (d, primitive, key), row in sorted(ref.migrations.items()):
        if d != dep:
            continue
        cutovers.append(
            MigrationState(
                deployment_id=dep,
                primitive=primitive,
                cutover_key=key,
                position_registry_backfill_complete=row["complete"],
                backfill_started_at=row["started"],
                backfill_completed_at=row["completed"],
                backfill_source_table=row["source"] or "position_events",
                backfill_reader_version=row["reader"] or 1,
                rows_synthesized=row["synthesized"],
                rows_skipped_already_present=row["skipped"],
                notes=row["notes"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        )
    assert await q["migration"].for_deployment(store, dep) == cutovers
    for primitive, key in itertools.product(("lp", "perp"), ("k1", "k2")):
        expected = next(
            (c for c in cutovers if (c.primitive, c.cutover_key) == (primitive, key)), None
        )
        assert await q["migration"].get(store, dep, primitive, key) == expected

    # position events (ties on the timestamp: recorded order)
    positions = q["position_events"]
    found = sorted(
        (p for (d, _), p in ref.positions.items() if d == dep),
        key=lambda p: (p["event"].timestamp, p["seq"]),
    )
    assert await positions.events(store, dep, limit=1000) == [
        position_record(p) for p in reversed(found)
    ]
    assert (
        await positions.events(store, dep, event_type="OPEN", limit=2)
        == [
            position_record(p) for p in reversed(found) if p["event"].position_event_type == "OPEN"
        ][:2]
    )
    for position_id in ("pos1", "pos2"):
        assert await positions.history(store, dep, position_id) == [
            position_record(p) for p in found if p["event"].position_id == position_id
        ]
    assert parsed(await positions.as_dicts(store, dep), "attribution_json") == [
        position_legacy_dict(p) for p in found
    ]
    assert parsed(await positions.as_dicts(store, dep, position_type="LP"), "attribution_json") == [
        position_legacy_dict(p) for p in found if p["event"].position_type == "LP"
    ]
    by_position = sorted(
        (p for p in found if p["event"].position_type in ("LP", "PERP")),
        key=lambda p: (p["event"].position_id, p["event"].timestamp, p["event"].position_event_id),
    )
    assert parsed(
        await positions.filtered(store, dep, frozenset({"LP", "PERP"})), "attribution_json"
    ) == [position_legacy_dict(p) for p in by_position]

    # accounting events (ties on the timestamp: lower id first)
    accounting = q["accounting"]
    events = sorted(
        (e for (d, _), e in ref.accounting.items() if d == dep),
        key=lambda e: (e.timestamp, e.accounting_event_id),
    )
    assert await accounting.records(store, dep) == [
        msgspec.structs.replace(e, legacy=None) for e in events
    ]
    for key in ("", "k1"):  # "" selects the events filed under the empty key
        assert await accounting.records(store, dep, key) == [
            msgspec.structs.replace(e, legacy=None) for e in events if e.position_key == key
        ]
    assert parsed(await accounting.events(store, dep), "payload_json", "position_reference") == [
        accounting_dict(e) for e in events
    ]


# -- running a history ---------------------------------------------------------------

STREAMS: dict[type[DomainEvent], str] = {
    StateSaved: "state",
    StateDeleted: "state",
    ClobOrderSaved: "orders",
    ClobOrderStatusUpdated: "orders",
    ClobOrderDeleted: "orders",
    PortfolioSnapshotRecorded: "portfolio",
    SnapshotRetentionApplied: "portfolio",
    PortfolioMetricsSaved: "portfolio",
    LedgerEntryRecorded: "ledger",
    LedgerAndRegistryCommitted: "ledger",
    RegistryRowBackfilled: "registry",
    MigrationStateUpserted: "migration",
    MigrationStateUpdated: "migration",
    MigrationBackfillMarkedComplete: "migration",
    PositionEventRecorded: "positions",
    PositionAttributionUpdated: "positions",
    AccountingEventRecorded: "accounting",
}


def deployment_of(event: DomainEvent) -> str:
    if isinstance(event, LedgerEntryRecorded):
        return event.entry.deployment_id
    if isinstance(event, LedgerAndRegistryCommitted):
        return event.ledger.deployment_id
    if isinstance(event, RegistryRowBackfilled):
        return event.row.deployment_id
    return event.deployment_id  # type: ignore[attr-defined, no-any-return]


def rename(value: Any, suffix: str) -> Any:
    """The same write for deployment ``<name><suffix>`` (nested records included)."""
    if not isinstance(value, msgspec.Struct):
        return value
    changes = {}
    for name in value.__struct_fields__:
        current = getattr(value, name)
        if name == "deployment_id":
            changes[name] = current + suffix
        elif isinstance(current, msgspec.Struct):
            changes[name] = rename(current, suffix)
    return msgspec.structs.replace(value, **changes)


async def dump(store: eventstore.EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, in a fixed order."""
    return {
        t: sorted((tuple(r) for r in await store.query(f"SELECT * FROM {t}")), key=repr)
        for t in TABLES
    }


@dataclass
class Harness:
    """One store and engine per test function, shared by its examples."""

    engine: ProjectionEngine
    counter: itertools.count[int] = field(default_factory=itertools.count)


@pytest.fixture
async def harness(store: eventstore.EventStore) -> AsyncIterator[Harness]:
    engine = ProjectionEngine(store, ALL_PROJECTIONS)
    await engine.start()
    yield Harness(engine)


async def run_history(
    harness: Harness, history: list[DomainEvent], rebuilt: str, batched: bool = False
) -> None:
    """Append ``history`` event by event, or (``batched``) each run of accepted events
    of one stream in one append, whose inline statements are grouped and folded."""
    engine, store = harness.engine, harness.engine.store
    # each example gets its own deployments, so examples never see each other's rows
    suffix = f"-{next(harness.counter)}-{uuid.uuid4().hex[:6]}"
    deployments = [d + suffix for d in DEPLOYMENTS]
    reference = Reference()
    pending: list[DomainEvent] = []

    async def flush() -> None:
        if pending:
            hypothesis.event(
                "batched append of " + ("one event" if len(pending) == 1 else "several")
            )
            await engine.append(deployment_of(pending[0]), STREAMS[type(pending[0])], pending)
            pending.clear()

    for event in (rename(e, suffix) for e in history):
        dep = deployment_of(event)
        same_stream = bool(pending) and (deployment_of(pending[0]), STREAMS[type(pending[0])]) == (
            dep,
            STREAMS[type(event)],
        )
        if not same_stream:
            await flush()
        if reference.apply(event):
            if batched:
                pending.append(event)
            else:
                await engine.append(dep, STREAMS[type(event)], [event])
        else:
            await flush()
            hypothesis.event(f"refused {type(event).__name__}")
            before = await dump(store)
            with pytest.raises(ProjectionWriteRefused):
                await engine.append(dep, STREAMS[type(event)], [event])
            assert await dump(store) == before, "a refused write changed a read model"
    await flush()
    for path in sorted(reference.paths):
        hypothesis.event(path)
    for dep in deployments:  # refused writes left nothing in the log either
        assert len(await store.read_deployment(dep)) == reference.seq.get(dep, 0)

    inline = await dump(store)
    for dep in deployments:
        await check_queries(engine, reference, dep)
    await engine.rebuild(batch_size=7)
    assert await dump(store) == inline, "a full rebuild changed the rows"
    await engine.rebuild(deployment_id=rebuilt + suffix, batch_size=9)
    assert await dump(store) == inline, f"rebuilding {rebuilt} alone changed the rows"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=histories(), batched=st.booleans())
async def test_inline_rebuild_and_reference_agree(
    harness: Harness, example: tuple[list[DomainEvent], str], batched: bool
) -> None:
    await run_history(harness, *example, batched=batched)

"""``--check``: does the store answer what the legacy tables held?

Takes the source rows the plan read and asks the read models (through their own
query methods, as the runner API does) for each deployment's current state,
ledger and quant stats, NAV series, metrics, position events, accounting events,
registry (all rows, and the open ones), migration state and CLOB orders; tables
without a read model are compared with the ``LegacyRowImported`` events in the
log, cell by cell, types included. Every difference is listed, none is fatal.

How values are judged equal, and the quant stats the source implies, live in
``compare``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, cast

import msgspec

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import (
    OPEN_CLOB_ORDER_STATUSES,
    LegacyRowImported,
    LegacyValue,
    decode_event,
)
from projections.models.accounting import AccountingProjection
from projections.models.ledger import LedgerProjection
from projections.models.metrics import MetricsProjection
from projections.models.migration import MigrationProjection
from projections.models.nav import NavProjection
from projections.models.orders import OrdersProjection
from projections.models.positions import PositionEventsProjection
from projections.models.registry import RegistryProjection
from projections.models.state import StateProjection

from .compare import (
    BEGINNING,
    JUDGES,
    expected_quant_stats,
    fills_meaning,
    instant,
    key_json,
    key_text,
    parsed,
    shown,
)
from .mapping import ImportPlan, deployment_resolver
from .report import CheckReport, Difference
from .rows import MAPPERS
from .source import Row, Table


async def check_legacy(
    engine: ProjectionEngine,
    plan: ImportPlan,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Compare the store's read models (and verbatim rows) with the plan's source file."""
    started = time.perf_counter()
    check = _Check(engine, plan)
    steps = [
        check.state,
        check.ledger,
        check.snapshots,
        check.metrics,
        check.position_events,
        check.accounting,
        check.registry,
        check.migration,
        check.orders,
        check.verbatim,
    ]
    for done, step in enumerate(steps, start=1):
        await step()
        if progress is not None:
            progress(done, len(steps))
    return CheckReport(
        compared=dict(sorted(check.compared.items())),
        differences=tuple(check.differences),
        seconds=time.perf_counter() - started,
    )


Spec = dict[str, tuple[str, Any]]
"""Legacy column -> (judge, the read model's value)."""


class _Check:
    def __init__(self, engine: ProjectionEngine, plan: ImportPlan) -> None:
        self.engine = engine
        self.store: EventStore = engine.store
        self.plan = plan
        self.compared: Counter[str] = Counter()
        self.differences: list[Difference] = []
        resolve = deployment_resolver(plan.source, plan.deployment_override)
        self.rows: dict[str, dict[str, list[Row]]] = {}
        for name, table in plan.source.tables.items():
            grouped: dict[str, list[Row]] = defaultdict(list)
            for row in table.rows:
                grouped[resolve(table, row)].append(row)
            self.rows[name] = grouped

    # -- plumbing -------------------------------------------------------------------------

    def model(self, kind: type[Any]) -> Any:
        return self.engine.live(kind.name)

    def table(self, name: str) -> Table | None:
        return self.plan.source.tables.get(name)

    def of(self, name: str, deployment_id: str) -> list[Row]:
        return self.rows.get(name, {}).get(deployment_id, [])

    def differ(self, area: str, key: str, column: str, source: Any, store: Any) -> None:
        self.differences.append(Difference(area, key, column, shown(source), shown(store)))

    def cells(self, area: str, key: str, cells: Mapping[str, LegacyValue], spec: Spec) -> None:
        self.compared[area] += 1
        for column, (judge, value) in spec.items():
            if column not in cells:
                continue  # an older schema without the column: nothing to compare
            cell = cells[column]
            if not JUDGES[judge](cell, value):
                self.differ(area, key, column, cell, value)

    def absent(self, area: str, key: str) -> None:
        self.differ(area, key, "row", "present", "missing")

    def extra(self, area: str, key: str) -> None:
        self.differ(area, key, "row", "missing", "present")

    # -- current state --------------------------------------------------------------------

    async def state(self) -> None:
        area, table = "strategy_state", self.table("strategy_state")
        model = cast(StateProjection, self.model(StateProjection))
        for dep in self.plan.deployments:
            current = await model.get(self.store, dep)
            rows = self.of(area, dep)
            if not rows:
                if table is not None and current is not None:
                    self.extra(area, f"deployment_id={dep!r}")
                continue
            assert table is not None
            row = rows[-1]
            key = key_text(table.key(row))
            if current is None:
                self.absent(area, key)
                continue
            self.cells(
                area,
                key,
                row.cells,
                {
                    "version": ("int", current.version),
                    "state_data": ("json", current.state),
                    "schema_version": ("int", current.schema_version),
                    "checksum": ("text", current.checksum),
                    "created_at": ("time", current.created_at),
                    "updated_at": ("time", current.updated_at),
                },
            )

    # -- ledger and quant stats -------------------------------------------------------------

    async def ledger(self) -> None:
        area = "transaction_ledger"
        model = cast(LedgerProjection, self.model(LedgerProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            entries = {
                e.entry_id: e for e in await model.entries(self.store, dep, limit=len(rows) + 1)
            }
            for row in rows:
                key = f"id={row.cells['id']!r}"
                entry = entries.pop(str(row.cells["id"]), None)
                if entry is None:
                    self.absent(area, key)
                    continue
                self.cells(
                    area,
                    key,
                    row.cells,
                    {
                        "cycle_id": ("text", entry.cycle_id),
                        "execution_mode": ("text", entry.execution_mode),
                        "timestamp": ("time", entry.timestamp),
                        "intent_type": ("text", entry.intent_type),
                        "token_in": ("text", entry.token_in),
                        "amount_in": ("decimal", entry.amount_in),
                        "token_out": ("text", entry.token_out),
                        "amount_out": ("decimal", entry.amount_out),
                        "effective_price": ("decimal", entry.effective_price),
                        "slippage_bps": ("real", entry.slippage_bps),
                        "gas_used": ("int", entry.gas_used),
                        "gas_usd": ("decimal", entry.gas_usd),
                        "tx_hash": ("text", entry.tx_hash),
                        "chain": ("text", entry.chain),
                        "protocol": ("text", entry.protocol),
                        "success": ("flag", entry.success),
                        "error": ("text", entry.error),
                        "extracted_data_json": ("json", entry.extracted_data),
                        "price_inputs_json": ("json", entry.price_inputs),
                        "pre_state_json": ("json", entry.pre_state),
                        "post_state_json": ("json", entry.post_state),
                    },
                )
            for entry_id in entries:
                self.extra(area, f"id={entry_id!r}")
            await self.quant_stats(dep, rows)

    async def quant_stats(self, dep: str, rows: list[Row]) -> None:
        area, key = "ledger_quant_stats", f"deployment_id={dep!r}"
        model = cast(LedgerProjection, self.model(LedgerProjection))
        stats = await model.quant_stats(self.store, dep)

        expected = expected_quant_stats(rows)
        self.compared[area] += 1
        for name, value in expected.items():
            actual = getattr(stats, name)
            if value != actual or (value is None) != (actual is None):
                self.differ(area, key, name, value, actual)

    # -- NAV series and metrics -----------------------------------------------------------

    async def snapshots(self) -> None:
        area = "portfolio_snapshots"
        model = cast(NavProjection, self.model(NavProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            series = await model.since(self.store, dep, BEGINNING, limit=len(rows) + 1)
            stored = {s.snapshot_id: s for s in series}
            for row in rows:
                key = f"id={row.cells['id']!r}"
                snap = stored.pop(cast(int, row.cells["id"]), None)
                if snap is None:
                    self.absent(area, key)
                    continue
                self.cells(
                    area,
                    key,
                    row.cells,
                    {
                        "cycle_id": ("text", snap.cycle_id),
                        "execution_mode": ("text", snap.execution_mode),
                        "timestamp": ("time", snap.timestamp),
                        "iteration_number": ("int", snap.iteration_number),
                        "total_value_usd": ("decimal", snap.total_value_usd),
                        "available_cash_usd": ("decimal", snap.available_cash_usd),
                        "deployed_capital_usd": ("decimal", snap.deployed_capital_usd),
                        "wallet_total_value_usd": ("decimal", snap.wallet_total_value_usd),
                        "value_confidence": ("text", snap.value_confidence.value),
                        "positions_json": ("json", snap.positions),
                        "token_prices_json": ("json", snap.token_prices),
                        "wallet_balances_json": ("json", snap.wallet_balances),
                        "chain": ("text", snap.chain),
                        "created_at": ("time", snap.created_at),
                    },
                )
            for snapshot_id in stored:
                self.extra(area, f"id={snapshot_id!r}")
            count = await model.count(self.store, dep)
            if count != len(rows):
                self.differ(area, f"deployment_id={dep!r}", "snapshot count", len(rows), count)

    async def metrics(self) -> None:
        area, table = "portfolio_metrics", self.table("portfolio_metrics")
        model = cast(MetricsProjection, self.model(MetricsProjection))
        for dep in self.plan.deployments:
            stored = await model.get(self.store, dep)
            rows = self.of(area, dep)
            if not rows:
                if stored is not None:
                    self.extra(area, f"deployment_id={dep!r}")
                continue
            assert table is not None
            key = key_text(table.key(rows[-1]))
            if stored is None:
                self.absent(area, key)
                continue
            self.cells(
                area,
                key,
                rows[-1].cells,
                {
                    "initial_value_usd": ("decimal", stored.initial_value_usd),
                    "initial_timestamp": ("time", stored.initial_timestamp),
                    "deposits_usd": ("decimal", stored.deposits_usd),
                    "withdrawals_usd": ("decimal", stored.withdrawals_usd),
                    "gas_spent_usd": ("decimal", stored.gas_spent_usd),
                    "total_value_usd": ("decimal", stored.total_value_usd),
                    "positions_json": ("json", stored.positions),
                    "cycle_id": ("text", stored.cycle_id),
                    "execution_mode": ("text", stored.execution_mode),
                    "is_complete": ("flag", stored.is_complete),
                    "updated_at": ("time", stored.updated_at),
                },
            )

    # -- position and accounting events ---------------------------------------------------

    async def position_events(self) -> None:
        area = "position_events"
        model = cast(PositionEventsProjection, self.model(PositionEventsProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            stored = await model.as_dicts(self.store, dep)
            by_id = {d["id"]: d for d in stored}
            for row in rows:
                key = f"id={row.cells['id']!r}"
                found = by_id.pop(row.cells["id"], None)
                if found is None:
                    self.absent(area, key)
                    continue
                spec: Spec = {
                    column: ("text", value)
                    for column, value in found.items()
                    if column not in ("id", "deployment_id")
                }
                spec["timestamp"] = ("time", found["timestamp"])
                spec["attribution_json"] = ("json", found["attribution_json"])
                for column in ("tick_lower", "tick_upper", "in_range", "is_long"):
                    spec[column] = ("int", found[column])
                spec["attribution_version"] = ("int", found["attribution_version"])
                self.cells(area, key, row.cells, spec)
            for event_id in by_id:
                self.extra(area, f"id={event_id!r}")
            # oldest first, ties in insertion order: what get_position_events_sync returned
            expected = [
                r.cells["id"]
                for r in sorted(
                    rows, key=lambda r: (instant(r.cells["timestamp"]) or BEGINNING, r.rowid)
                )
            ]
            ours = set(expected)
            actual = [d["id"] for d in stored if d["id"] in ours]
            if expected != actual:
                self.differ(area, f"deployment_id={dep!r}", "order", expected, actual)

    async def accounting(self) -> None:
        area = "accounting_events"
        model = cast(AccountingProjection, self.model(AccountingProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            by_id = {d["id"]: d for d in await model.events(self.store, dep)}
            for row in rows:
                key = f"id={row.cells['id']!r}"
                found = by_id.pop(row.cells["id"], None)
                if found is None:
                    self.absent(area, key)
                    continue
                spec: Spec = {
                    column: ("text", found[column])
                    for column in (
                        "cycle_id",
                        "execution_mode",
                        "chain",
                        "protocol",
                        "wallet_address",
                        "event_type",
                        "position_key",
                        "ledger_entry_id",
                        "tx_hash",
                        "confidence",
                    )
                }
                spec["timestamp"] = ("time", found["timestamp"])
                spec["payload_json"] = ("json", found["payload_json"])
                spec["schema_version"] = ("int", found["schema_version"])
                spec["position_reference"] = ("json", found["position_reference"])
                self.cells(area, key, row.cells, spec)
                if "position_reference" not in row.cells and found["position_reference"]:
                    self.differ(area, key, "position_reference", None, found["position_reference"])
            for event_id in by_id:
                self.extra(area, f"id={event_id!r}")

    # -- registry, migration, orders --------------------------------------------------------

    async def registry(self) -> None:
        area, table = "position_registry", self.table("position_registry")
        model = cast(RegistryProjection, self.model(RegistryProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            stored = {
                (r.chain, r.primitive, r.physical_identity_hash): r
                for r in await model.rows(self.store, dep)
            }
            opened = {
                (r["chain"], r["primitive"], r["physical_identity_hash"])
                for r in await model.open_rows(self.store, dep)
            }
            expected_open = set()
            for row in rows:
                cells = row.cells
                ident = (cells["chain"], cells["primitive"], cells["physical_identity_hash"])
                key = key_text(table.key(row)) if table is not None else repr(ident)
                if cells["status"] == "open":
                    expected_open.add(ident)
                found = stored.pop(cast(tuple[str, str, str], ident), None)
                if found is None:
                    self.absent(area, key)
                    continue
                self.cells(
                    area,
                    key,
                    cells,
                    {
                        "accounting_category": ("text", found.accounting_category),
                        "semantic_grouping_key": ("text", found.semantic_grouping_key),
                        "grouping_policy_version": ("text", found.grouping_policy_version),
                        "handle": ("text", found.handle),
                        "status": ("text", str(found.status)),
                        "payload": ("json", found.payload),
                        "opened_at_block": ("int", found.opened_at_block),
                        "opened_tx": ("text", found.opened_tx),
                        "closed_at_block": ("int", found.closed_at_block),
                        "closed_tx": ("text", found.closed_tx),
                        "last_reconciled_at_block": ("int", found.last_reconciled_at_block),
                        "matching_policy_version": ("int", found.matching_policy_version),
                    },
                )
            for ident in stored:
                self.extra(area, repr(ident))
            self.compared["position_registry (open rows)"] += 1
            if opened != expected_open:
                self.differ(
                    "position_registry (open rows)",
                    f"deployment_id={dep!r}",
                    "open rows",
                    sorted(expected_open),
                    sorted(opened),
                )

    async def migration(self) -> None:
        area = "migration_state"
        model = cast(MigrationProjection, self.model(MigrationProjection))
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            stored = {
                (m.primitive, m.cutover_key): m for m in await model.for_deployment(self.store, dep)
            }
            for row in rows:
                cells = row.cells
                ident = (str(cells["primitive"]), str(cells["cutover_key"]))
                key = f"primitive={ident[0]!r}, cutover_key={ident[1]!r}"
                found = stored.pop(ident, None)
                if found is None:
                    self.absent(area, key)
                    continue
                self.cells(
                    area,
                    key,
                    cells,
                    {
                        "position_registry_backfill_complete": (
                            "flag",
                            found.position_registry_backfill_complete,
                        ),
                        "backfill_started_at": ("time", found.backfill_started_at),
                        "backfill_completed_at": ("time", found.backfill_completed_at),
                        "backfill_source_table": ("text", found.backfill_source_table),
                        "backfill_reader_version": ("int", found.backfill_reader_version),
                        "rows_synthesized": ("int", found.rows_synthesized),
                        "rows_skipped_already_present": (
                            "int",
                            found.rows_skipped_already_present,
                        ),
                        "notes": ("json", found.notes),
                        "created_at": ("time", found.created_at),
                        "updated_at": ("time", found.updated_at),
                    },
                )
            for ident in stored:
                self.extra(area, f"primitive={ident[0]!r}, cutover_key={ident[1]!r}")

    async def orders(self) -> None:
        area = "clob_orders"
        model = cast(OrdersProjection, self.model(OrdersProjection))
        open_statuses = {s.value for s in OPEN_CLOB_ORDER_STATUSES}
        for dep in self.plan.deployments:
            rows = self.of(area, dep)
            expected_open = set()
            for row in rows:
                cells = row.cells
                key = f"order_id={cells['order_id']!r}"
                if cells["status"] in open_statuses:
                    expected_open.add(cells["order_id"])
                order = await model.get(self.store, dep, str(cells["order_id"]))
                if order is None:
                    self.absent(area, key)
                    continue
                self.cells(
                    area,
                    key,
                    cells,
                    {
                        "market_id": ("text", order.market_id),
                        "token_id": ("text", order.token_id),
                        "side": ("text", order.side),
                        "status": ("text", order.status.value),
                        "price": ("decimal", order.price),
                        "size": ("decimal", order.size),
                        "filled_size": ("decimal", order.filled_size),
                        "average_fill_price": ("decimal", order.average_fill_price),
                        "order_type": ("text", order.order_type),
                        "intent_id": ("text", order.intent_id),
                        "error": ("text", order.error),
                        "metadata": ("json", order.metadata),
                        "submitted_at": ("time", order.submitted_at),
                        "updated_at": ("time", order.updated_at),
                    },
                )
                source_fills = fills_meaning(parsed(cells.get("fills")))
                stored_fills = fills_meaning(list(msgspec.to_builtins(order.fills)))
                if source_fills != stored_fills:
                    self.differ(area, key, "fills", cells.get("fills"), order.fills)
            opened = {o.order_id for o in await model.open_orders(self.store, dep)}
            self.compared["clob_orders (open orders)"] += 1
            if opened != expected_open:
                self.differ(
                    "clob_orders (open orders)",
                    f"deployment_id={dep!r}",
                    "open orders",
                    sorted(map(str, expected_open)),
                    sorted(opened),
                )

    # -- tables without a read model ----------------------------------------------------------

    async def verbatim(self) -> None:
        """Each row of a table without a read model must be in the log, cell for cell."""
        for name, table in self.plan.source.tables.items():
            if name in MAPPERS:
                continue
            for dep in self.plan.deployments:
                rows = self.of(name, dep)
                recorded = await self.store.read_stream(dep, f"legacy/{name}")
                kept: dict[str, LegacyRowImported] = {}
                for record in recorded:
                    decoded = decode_event(record.type, record.schema_version, record.raw_data)
                    if isinstance(decoded, LegacyRowImported):
                        kept[key_json(decoded.primary_key)] = decoded
                for row in rows:
                    key = table.key(row)
                    event = kept.pop(key_json(key), None)
                    self.compared[name] += 1
                    if event is None:
                        self.absent(name, key_text(key))
                        continue
                    for column in sorted(set(row.cells) | set(event.row)):
                        cell, value = row.cells.get(column), event.row.get(column)
                        if type(cell) is not type(value) or cell != value:
                            self.differ(name, key_text(key), column, cell, value)
                for extra in kept.values():
                    self.extra(name, key_text(extra.primary_key))

"""The WARM tier: Chronicle's event store and read models behind the seed's backend API.

Every write becomes domain events appended through the projection engine (the
read models that must answer at once apply in the same transaction); every read
is a read-model query. Nothing here updates a table in place.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import eventstore
from projections.engine import ProjectionEngine
from projections.events import (
    ClobOrderDeleted,
    ClobOrderSaved,
    ClobOrderStatusUpdated,
    HandleMapping,
    LedgerAndRegistryCommitted,
    LedgerEntry,
    LedgerEntryRecorded,
    MigrationStateUpserted,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    PositionAttributionUpdated,
    RegistryRow,
    RegistryRowBackfilled,
    SnapshotRetentionApplied,
    StateDeleted,
    StateSaved,
)
from projections.models import ALL_PROJECTIONS
from projections.models.accounting import AccountingProjection
from projections.models.ledger import LedgerProjection, LedgerQuantStats
from projections.models.metrics import MetricsProjection
from projections.models.migration import MigrationProjection, MigrationState
from projections.models.nav import NavProjection, NavRow, SnapshotIdConflict, WindowRow
from projections.models.orders import OrdersProjection
from projections.models.positions import PositionEventsProjection
from projections.models.registry import RegistryProjection
from projections.models.state import CurrentState, StateProjection

from .config import PostgresConfig, SQLiteConfig, SQLiteConfigLight, postgres_url, sqlite_url
from .errors import StateConflictError
from .records import (
    AccountingEvent,
    ClobOrderState,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
)
from .types import StateData, StateTier, compute_checksum

T = TypeVar("T")

STATE_STREAM = "state"
LEDGER_STREAM = "ledger"
REGISTRY_STREAM = "registry"
SNAPSHOT_STREAM = "snapshots"
METRICS_STREAM = "metrics"
ACCOUNTING_STREAM = "accounting"


def order_stream(order_id: str) -> str:
    return f"orders/{order_id}"


def position_stream(position_id: str) -> str:
    return f"positions/{position_id}"


def migration_stream(primitive: str, cutover_key: str) -> str:
    return f"migration/{primitive}/{cutover_key}"


def _now() -> datetime:
    return datetime.now(UTC)


class ChronicleStore:
    """A WARM backend on Chronicle: one event store, nine read models.

    ``url`` is a store URL (``sqlite:///...`` or ``postgresql://...``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: eventstore.EventStore | None = None
        self._engine: ProjectionEngine | None = None

    @staticmethod
    def for_url(url: str) -> ChronicleStore:
        """The store for a URL: a ``SQLiteStore`` or a ``PostgresStore``."""
        if url.startswith("sqlite"):
            return SQLiteStore(url=url)
        return PostgresStore(url=url)

    # -- lifecycle ------------------------------------------------------------------

    async def initialize(self) -> None:
        if self._store is not None:
            return
        store = await eventstore.connect(self.url)
        try:
            engine = ProjectionEngine(store, ALL_PROJECTIONS)
            await engine.start()
        except BaseException:
            await store.close()
            raise
        self._store, self._engine = store, engine

    async def close(self) -> None:
        store, self._store, self._engine = self._store, None, None
        if store is not None:
            await store.close()

    @property
    def store(self) -> eventstore.EventStore:
        if self._store is None:
            raise RuntimeError("the WARM store is not initialized; call initialize() first")
        return self._store

    @property
    def engine(self) -> ProjectionEngine:
        if self._engine is None:
            raise RuntimeError("the WARM store is not initialized; call initialize() first")
        return self._engine

    def _model(self, kind: type[T]) -> T:
        return cast(T, self.engine.live(kind.name))  # type: ignore[attr-defined]

    # -- state ----------------------------------------------------------------------

    async def current(self, deployment_id: str) -> CurrentState | None:
        return await self._model(StateProjection).get(self.store, deployment_id)

    async def get(self, deployment_id: str) -> StateData | None:
        current = await self.current(deployment_id)
        return None if current is None else _state_data(current)

    async def all_current(self) -> list[CurrentState]:
        return await self._model(StateProjection).all(self.store)

    async def get_all_deployment_ids(self) -> list[str]:
        return [row.deployment_id for row in await self._model(StateProjection).all(self.store)]

    async def save(
        self,
        state: StateData,
        expected_version: int | None,
        known: CurrentState | None = None,
    ) -> tuple[StateData, CurrentState]:
        """Compare-and-swap a new state version; ``known`` (from HOT) spares a read.

        ``expected_version=None`` creates: it expects no current state. Otherwise
        the current version must equal ``expected_version`` and the new one is
        ``expected_version + 1``. The state stream's own version guards the append,
        so a concurrent writer that got in first is refused, not overwritten.
        ``known`` is only trusted when it agrees with ``expected_version`` (a stale
        HOT copy that disagrees is re-read, so it cannot refuse a correct save).
        The checksum stored is computed from ``state.state``, as the reference
        recomputes it: a caller that edited a loaded state saves a valid record.
        """
        dep = state.deployment_id
        if known is not None and expected_version is not None and known.version == expected_version:
            current: CurrentState | None = known
        else:
            current = await self.current(dep)
        actual = 0 if current is None else current.version
        if expected_version is None:
            if current is not None:
                raise StateConflictError(dep, 0, actual, _create_conflict(dep, actual))
            new_version = state.version
        else:
            if current is None or current.version != expected_version:
                raise StateConflictError(dep, expected_version, actual)
            new_version = expected_version + 1
        stream_version = (
            current.stream_version
            if current is not None
            else await self.store.stream_version(dep, STATE_STREAM)
        )
        now = _now()
        first = current.created_at if current is not None and current.created_at else now
        checksum = compute_checksum(state.state)
        event = StateSaved(
            deployment_id=dep,
            version=new_version,
            expected_version=expected_version,
            state=state.state,
            state_schema_version=state.schema_version,
            checksum=checksum,
            created_at=now,
            first_created_at=first,
        )
        try:
            result = await self.engine.append(
                dep, STATE_STREAM, [event], expected_version=stream_version
            )
        except eventstore.WrongExpectedVersion:
            latest = await self.current(dep)
            raise StateConflictError(
                dep, expected_version or 0, 0 if latest is None else latest.version
            ) from None
        saved = CurrentState(
            dep,
            new_version,
            state.state,
            state.schema_version,
            checksum,
            first,
            now,
            result.stream_version,
        )
        return _state_data(saved), saved

    async def delete(self, deployment_id: str) -> bool:
        current = await self.current(deployment_id)
        if current is None:
            return False
        try:
            await self.engine.append(
                deployment_id,
                STATE_STREAM,
                [
                    StateDeleted(
                        deployment_id=deployment_id,
                        last_version=current.version,
                        deleted_at=_now(),
                    )
                ],
                expected_version=current.stream_version,
            )
        except eventstore.WrongExpectedVersion:
            return await self.delete(deployment_id)  # changed meanwhile: look again
        return True

    # -- CLOB orders ------------------------------------------------------------------

    async def save_clob_order(self, order: ClobOrderState) -> bool:
        now = _now()
        event = ClobOrderSaved(
            deployment_id=order.deployment_id,
            order_id=order.order_id,
            market_id=order.market_id,
            token_id=order.token_id,
            side=order.side,
            status=order.status,
            price=order.price,
            size=order.size,
            filled_size=order.filled_size,
            average_fill_price=order.average_fill_price,
            fills=tuple(order.fills),
            order_type=order.order_type,
            intent_id=order.intent_id,
            error=order.error,
            metadata=dict(order.metadata),
            submitted_at=order.submitted_at or now,
            updated_at=order.updated_at or now,
        )
        await self.engine.append(order.deployment_id, order_stream(order.order_id), [event])
        return True

    async def get_clob_order(self, deployment_id: str, order_id: str) -> ClobOrderState | None:
        row = await self._model(OrdersProjection).get(self.store, deployment_id, order_id)
        return None if row is None else ClobOrderState.from_row(row)

    async def get_open_clob_orders(
        self, deployment_id: str, market_id: str | None
    ) -> list[ClobOrderState]:
        rows = await self._model(OrdersProjection).open_orders(self.store, deployment_id, market_id)
        return [ClobOrderState.from_row(row) for row in rows]

    async def update_clob_order_status(
        self,
        deployment_id: str,
        order_id: str,
        status: Any,
        fills: Sequence[Any] | None,
        filled_size: str | None,
        average_fill_price: str | None,
        error: str | None,
    ) -> bool:
        if await self.get_clob_order(deployment_id, order_id) is None:
            return False
        event = ClobOrderStatusUpdated(
            deployment_id=deployment_id,
            order_id=order_id,
            status=status,
            fills=None if fills is None else tuple(fills),
            filled_size=None if filled_size is None else Decimal(filled_size),
            average_fill_price=None if average_fill_price is None else Decimal(average_fill_price),
            error=error,
            updated_at=_now(),
        )
        await self.engine.append(deployment_id, order_stream(order_id), [event])
        return True

    async def delete_clob_order(self, deployment_id: str, order_id: str) -> bool:
        if await self.get_clob_order(deployment_id, order_id) is None:
            return False
        event = ClobOrderDeleted(deployment_id=deployment_id, order_id=order_id, deleted_at=_now())
        await self.engine.append(deployment_id, order_stream(order_id), [event])
        return True

    # -- snapshots and metrics ----------------------------------------------------------

    @property
    def nav(self) -> NavProjection:
        return self._model(NavProjection)

    async def save_portfolio_snapshot(self, snapshot: PortfolioSnapshot) -> int:
        """Record a snapshot; re-recording a timestamp keeps its id. Returns the id."""
        dep = snapshot.deployment_id
        for _ in range(5):
            existing = await self.nav.at(self.store, dep, snapshot.timestamp)
            if existing is not None and existing.timestamp == snapshot.timestamp:
                snapshot_id = existing.snapshot_id
            else:
                snapshot_id = await self.nav.max_snapshot_id(self.store, dep) + 1
            event = PortfolioSnapshotRecorded(
                deployment_id=dep,
                snapshot_id=snapshot_id,
                cycle_id=snapshot.cycle_id,
                execution_mode=snapshot.execution_mode,
                timestamp=snapshot.timestamp,
                iteration_number=snapshot.iteration_number,
                total_value_usd=snapshot.total_value_usd,
                available_cash_usd=snapshot.available_cash_usd,
                deployed_capital_usd=snapshot.deployed_capital_usd,
                wallet_total_value_usd=snapshot.wallet_total_value_usd,
                value_confidence=snapshot.value_confidence,
                positions=snapshot.positions,
                token_prices=snapshot.token_prices,
                wallet_balances=snapshot.wallet_balances,
                chain=snapshot.chain,
                created_at=_now(),
            )
            try:
                await self.engine.append(dep, SNAPSHOT_STREAM, [event])
            except SnapshotIdConflict:
                continue  # another writer took that id a moment ago
            return snapshot_id
        raise SnapshotIdConflict(f"could not assign a snapshot id for {dep!r}; retry")

    async def cleanup_old_snapshots(self, retention_days: int) -> int:
        """Apply retention to every deployment: one event each, so a replay prunes alike."""
        cutoff = _now() - timedelta(days=retention_days)
        deleted = 0
        for dep in await self.store.deployment_ids():
            doomed = await self.nav.count_created_before(self.store, dep, cutoff)
            if not doomed:
                continue
            event = SnapshotRetentionApplied(
                deployment_id=dep, retention_days=retention_days, cutoff=cutoff
            )
            await self.engine.append(dep, SNAPSHOT_STREAM, [event])
            deleted += doomed
        return deleted

    async def save_portfolio_metrics(self, metrics: PortfolioMetrics) -> bool:
        event = PortfolioMetricsSaved(
            deployment_id=metrics.deployment_id,
            initial_value_usd=metrics.initial_value_usd,
            initial_timestamp=metrics.timestamp,
            deposits_usd=metrics.deposits_usd,
            withdrawals_usd=metrics.withdrawals_usd,
            gas_spent_usd=metrics.gas_spent_usd,
            total_value_usd=metrics.total_value_usd,
            positions=list(metrics.positions),
            cycle_id=metrics.cycle_id,
            execution_mode=metrics.execution_mode,
            is_complete=metrics.is_complete,
            updated_at=_now(),
        )
        await self.engine.append(metrics.deployment_id, METRICS_STREAM, [event])
        return True

    async def get_portfolio_metrics(self, deployment_id: str) -> PortfolioMetrics | None:
        row = await self._model(MetricsProjection).get(self.store, deployment_id)
        return None if row is None else PortfolioMetrics.from_row(row)

    # -- ledger and registry ------------------------------------------------------------

    @property
    def ledger(self) -> LedgerProjection:
        return self._model(LedgerProjection)

    @property
    def registry(self) -> RegistryProjection:
        return self._model(RegistryProjection)

    async def save_ledger_entry(self, entry: LedgerEntry) -> None:
        await self.engine.append(
            entry.deployment_id, LEDGER_STREAM, [LedgerEntryRecorded(entry=entry)]
        )

    async def save_ledger_and_registry(
        self, ledger: LedgerEntry, registry: RegistryRow, handle: HandleMapping | None
    ) -> None:
        event = LedgerAndRegistryCommitted(ledger=ledger, registry=registry, handle=handle)
        await self.engine.append(ledger.deployment_id, LEDGER_STREAM, [event])

    async def get_ledger_quant_stats(self, deployment_id: str) -> LedgerQuantStats:
        return await self.ledger.quant_stats(self.store, deployment_id)

    async def insert_position_registry_row_if_absent(self, row: RegistryRow) -> bool:
        present = await self.store.query(
            f"SELECT 1 FROM {self.registry.t['registry']} WHERE deployment_id = $1 "
            "AND chain = $2 AND primitive = $3 AND physical_identity_hash = $4",
            (row.deployment_id, row.chain, str(row.primitive), row.physical_identity_hash),
        )
        if present:
            return False
        await self.engine.append(
            row.deployment_id, REGISTRY_STREAM, [RegistryRowBackfilled(row=row)]
        )
        return True

    async def upsert_migration_state(
        self, deployment_id: str, primitive: str, cutover_key: str
    ) -> None:
        model = self._model(MigrationProjection)
        if await model.get(self.store, deployment_id, primitive, cutover_key) is not None:
            return  # idempotent: the baseline row exists
        event = MigrationStateUpserted(
            deployment_id=deployment_id,
            primitive=primitive,
            cutover_key=cutover_key,
            created_at=_now(),
        )
        await self.engine.append(deployment_id, migration_stream(primitive, cutover_key), [event])

    async def get_migration_state(
        self, deployment_id: str, primitive: str, cutover_key: str
    ) -> MigrationState | None:
        return await self._model(MigrationProjection).get(
            self.store, deployment_id, primitive, cutover_key
        )

    # -- position and accounting events ---------------------------------------------------

    @property
    def positions(self) -> PositionEventsProjection:
        return self._model(PositionEventsProjection)

    @property
    def accounting(self) -> AccountingProjection:
        return self._model(AccountingProjection)

    async def save_position_event(self, event: PositionEvent) -> bool:
        await self.engine.append(event.deployment_id, position_stream(event.position_id), [event])
        return True

    async def save_accounting_event(self, event: AccountingEvent) -> bool:
        await self.engine.append(event.deployment_id, ACCOUNTING_STREAM, [event])
        return True

    async def update_position_attribution(
        self, event_id: str, attribution: dict[str, Any], version: int, deployment_id: str
    ) -> bool:
        rows = await self.store.query(
            f"SELECT deployment_id, position_id FROM {self.positions.t['position_events']} "
            "WHERE id = $1" + (" AND deployment_id = $2" if deployment_id else ""),
            (event_id, deployment_id) if deployment_id else (event_id,),
        )
        if not rows:
            return False
        dep, position_id = rows[0][0], rows[0][1]
        update = PositionAttributionUpdated(
            deployment_id=dep,
            position_event_id=event_id,
            attribution=attribution,
            attribution_version=version,
        )
        await self.engine.append(dep, position_stream(position_id), [update])
        return True

    # -- synchronous readers ------------------------------------------------------------------

    def run_sync(self, read: Coroutine[Any, Any, T]) -> T:
        """Run a read-model query synchronously against the blocking query path."""
        return _drive(read)

    @property
    def sync_store(self) -> eventstore.EventStore:
        """The store as the read models see it, answering through ``query_sync``."""
        return cast(eventstore.EventStore, _SyncQueries(self.store))


class _SyncQueries:
    """Quacks like an EventStore for read-model queries, but never suspends."""

    def __init__(self, store: eventstore.EventStore) -> None:
        self._store = store

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return self._store.query_sync(sql, params)


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Finish a coroutine that never suspends (its awaits all complete at once)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("a synchronous read suspended; it must only use query_sync")


def _state_data(current: CurrentState) -> StateData:
    return StateData(
        deployment_id=current.deployment_id,
        version=current.version,
        state=current.state,
        schema_version=current.schema_version,
        checksum=current.checksum,
        created_at=current.created_at,
        loaded_from=StateTier.WARM,
    )


def _create_conflict(deployment_id: str, actual: int) -> str:
    return (
        f"state of {deployment_id!r} already exists at version {actual}; "
        "saving with expected_version=None creates a new state: pass expected_version"
    )


class SQLiteStore(ChronicleStore):
    """The embedded WARM backend (SQLite), built from a ``SQLiteConfig``."""

    def __init__(
        self, config: SQLiteConfig | SQLiteConfigLight | None = None, *, url: str | None = None
    ) -> None:
        super().__init__(url or sqlite_url((config or SQLiteConfig()).db_path))


class PostgresStore(ChronicleStore):
    """The production WARM backend (PostgreSQL), built from a ``PostgresConfig``."""

    def __init__(self, config: PostgresConfig | None = None, *, url: str | None = None) -> None:
        super().__init__(url or postgres_url(config or PostgresConfig()))


__all__ = [
    "ChronicleStore",
    "NavRow",
    "PostgresStore",
    "SQLiteStore",
    "WindowRow",
]

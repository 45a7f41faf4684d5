"""``StateManager``: the seed's API, HOT over WARM, with the seed's error contract.

Each method keeps the contract its documentation gives: *loud* methods raise,
*graceful* ones return the documented empty value and record the failure as a
``TierMetrics``, accounting writes raise ``AccountingPersistenceError`` (a
``RegistryAutoCollisionError`` passes through unchanged), and cutover reads raise
``CutoverStorageNotSupported`` when no WARM store can serve them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from projections.errors import RegistryAutoCollisionError
from projections.events import ClobFill, ClobOrderStatus, HandleMapping, LedgerEntry, RegistryRow
from projections.models.ledger import LedgerQuantStats

from .config import StateManagerConfig, WarmBackendType
from .errors import (
    AccountingPersistenceError,
    AccountingWriteKind,
    CutoverStorageNotSupported,
    StateConflictError,
    StateNotFoundError,
)
from .hot import HotCache
from .records import (
    AccountingEvent,
    ClobOrderState,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
)
from .types import StateData, StateTier, TierMetrics, compute_checksum
from .warm import ChronicleStore, NavRow, PostgresStore, SQLiteStore, WindowRow

log = logging.getLogger("chronicle.statemanager")
T = TypeVar("T")


class StateManager:
    """Tiered state for a strategy runner: HOT (in-process) over WARM (Chronicle).

    ``warm_backend`` injects a ready WARM store (a ``SQLiteStore``, a
    ``PostgresStore`` or any ``ChronicleStore``); otherwise one is built from
    ``config`` on :meth:`initialize`.
    """

    def __init__(
        self,
        config: StateManagerConfig | None = None,
        warm_backend: ChronicleStore | None = None,
    ) -> None:
        self.config = config or StateManagerConfig()
        self._injected = warm_backend
        self._warm: ChronicleStore | None = None
        self._hot: HotCache | None = None
        self._metrics: list[TierMetrics] = []
        self._initialized = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def is_initialized(self) -> bool:
        return self._initialized

    @property
    def enabled_tiers(self) -> list[StateTier]:
        tiers = []
        if self._hot is not None:
            tiers.append(StateTier.HOT)
        if self._warm is not None:
            tiers.append(StateTier.WARM)
        return tiers

    @property
    def warm_backend_type(self) -> WarmBackendType | None:
        if self._warm is None:
            return None
        if self._warm.url.startswith("sqlite"):
            return WarmBackendType.SQLITE
        return WarmBackendType.POSTGRESQL

    @property
    def warm_backend(self) -> ChronicleStore | None:
        return self._warm

    async def initialize(self) -> None:
        """Open the tiers; a WARM store that cannot open leaves WARM disabled (logged)."""
        if self._initialized:
            return
        config = self.config
        if config.enable_hot:
            self._hot = HotCache(config.hot_cache_max_size, config.hot_cache_ttl_seconds)
        warm = self._injected
        if warm is None and config.enable_warm:
            try:
                warm = ChronicleStore.for_url(config.resolve_url())
            except Exception as exc:  # a bad configuration degrades like a dead backend
                log.warning("WARM tier disabled: %s", exc)
        if warm is not None:
            try:
                await warm.initialize()
                self._warm = warm
            except Exception as exc:  # the reference degrades, logs, and runs without WARM
                log.warning("WARM tier disabled: %s", exc)
                self._warm = None
        self._initialized = True
        # ``is not None``: an empty HotCache is falsy (it has a length)
        if (
            self._warm is not None
            and self._warm.store.backend == "postgresql"
            and self._hot is not None
        ):
            await self._listen_for_invalidations()
        if config.load_state_on_startup and self._warm is not None and self._hot is not None:
            try:
                for current in await self._warm.all_current():
                    self._hot.set(current)
            except Exception as exc:
                log.warning("preloading HOT failed: %s", exc)

    async def close(self) -> None:
        if self._warm is not None:
            await self._warm.close()
        if self._hot is not None:
            self._hot.clear()
        self._warm = None if self._injected is None else self._warm
        self._initialized = False

    async def _ready(self) -> None:
        if not self._initialized:
            await self.initialize()

    # -- metrics ----------------------------------------------------------------------

    def _record(
        self, tier: StateTier, operation: str, started: float, success: bool, error: str | None
    ) -> None:
        metric = TierMetrics(
            tier, operation, (time.perf_counter() - started) * 1000, success, error
        )
        self._metrics.append(metric)
        callback = self.config.metrics_callback
        if callback is not None:
            try:
                callback(metric)
            except Exception:  # a faulty sink must not fail the runner's write
                log.exception("metrics_callback raised")

    def get_metrics(self, limit: int = 100) -> list[TierMetrics]:
        """Recent metrics, newest first (``limit=0``: all, as the reference)."""
        return self._metrics[-limit:][::-1]

    def get_metrics_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for tier in StateTier:
            rows = [m for m in self._metrics if m.tier is tier]
            if not rows:
                continue
            ok = [m.latency_ms for m in rows if m.success]
            summary[tier.name] = {
                "total_operations": len(rows),
                "successful_operations": len(ok),
                "success_rate": len(ok) / len(rows),
                "avg_latency_ms": sum(ok) / len(ok) if ok else 0.0,
                "max_latency_ms": max(ok) if ok else 0.0,
                "min_latency_ms": min(ok) if ok else 0.0,
            }
        return summary

    def clear_metrics(self) -> None:
        self._metrics.clear()

    # -- state ------------------------------------------------------------------------

    async def load_state(self, deployment_id: str) -> StateData:
        """HOT, then WARM (filling HOT); ``StateNotFoundError`` when neither has it."""
        if not self._initialized:  # also after close(): HOT survives it, WARM does not
            await self.initialize()
        if self._hot is not None:
            started = time.perf_counter()
            hit = self._hot.get(deployment_id)
            if hit is not None:
                self._record(StateTier.HOT, "load", started, True, None)
                return hit
            self._record(StateTier.HOT, "load", started, True, "cache_miss")
        if self._warm is not None:
            started = time.perf_counter()
            try:
                current = await self._warm.current(deployment_id)
            except Exception as exc:
                self._record(StateTier.WARM, "load", started, False, str(exc))
                log.warning("WARM load of %s failed: %s", deployment_id, exc)
            else:
                if current is not None:
                    self._record(StateTier.WARM, "load", started, True, None)
                    if self._hot is not None:
                        self._hot.set(current)
                    return _state(current, StateTier.WARM)
                self._record(StateTier.WARM, "load", started, True, "not_found")
        raise StateNotFoundError(deployment_id)

    async def save_state(self, state: StateData, expected_version: int | None = None) -> StateData:
        """Compare-and-swap a new version into WARM, then into HOT.

        ``expected_version=None`` means ``state.version - 1`` when ``state.version >
        1``, and "create" (no state may exist yet) otherwise. The returned state
        carries the new version (``expected_version + 1``).
        """
        await self._ready()
        if expected_version is None and state.version > 1:
            expected_version = state.version - 1
        if self._warm is None:
            if self._hot is not None:
                self._hot.set(_row(state, state.version, 0, compute_checksum(state.state)))
            return state
        started = time.perf_counter()
        known = self._hot.current(state.deployment_id) if self._hot is not None else None
        try:
            saved, current = await self._warm.save(state, expected_version, known)
        except StateConflictError:
            self._record(StateTier.WARM, "save", started, False, "version_conflict")
            if self._hot is not None:  # whatever HOT held is behind the store now
                self._hot.delete(state.deployment_id)
            raise
        except Exception as exc:
            self._record(StateTier.WARM, "save", started, False, str(exc))
            raise
        self._record(StateTier.WARM, "save", started, True, None)
        if self._hot is not None:
            started = time.perf_counter()
            self._hot.set(current)
            self._record(StateTier.HOT, "save", started, True, None)
        return saved

    async def delete_state(self, deployment_id: str) -> bool:
        await self._ready()
        hot_deleted = False
        if self._hot is not None:
            started = time.perf_counter()
            hot_deleted = self._hot.delete(deployment_id)
            self._record(StateTier.HOT, "delete", started, True, None)
        warm_deleted = False
        if self._warm is not None:
            started = time.perf_counter()
            try:
                warm_deleted = await self._warm.delete(deployment_id)
                self._record(StateTier.WARM, "delete", started, True, None)
            except Exception as exc:
                self._record(StateTier.WARM, "delete", started, False, str(exc))
                log.warning("WARM delete of %s failed: %s", deployment_id, exc)
        return hot_deleted or warm_deleted

    def invalidate_hot_cache(self, deployment_id: str | None = None) -> None:
        if self._hot is None:
            return
        if deployment_id:
            self._hot.delete(deployment_id)
        else:
            self._hot.clear()

    # -- cross-process HOT invalidation (PostgreSQL) ------------------------------------

    async def _listen_for_invalidations(self) -> None:
        """Drop HOT entries of deployments another process wrote to.

        The store reports them a few milliseconds after their commit (PostgreSQL;
        SQLite has no cross-process signal) and reports "unknown" after a lost
        connection, when everything HOT holds is dropped.
        """
        assert self._warm is not None
        try:
            await self._warm.store.watch_remote_appends(self._on_remote_appends)
        except Exception as exc:  # without it HOT could go stale: do without HOT
            log.warning("no cross-process invalidation (%s); HOT tier disabled", exc)
            self._hot = None

    def _on_remote_appends(self, deployments: frozenset[str] | None) -> None:
        if self._hot is None:
            return
        if deployments is None:
            self._hot.clear()
            return
        for deployment_id in deployments:
            self._hot.delete(deployment_id)

    # -- the shapes of the other methods' contracts ---------------------------------------

    async def _graceful(
        self, operation: str, default: T, call: Callable[[ChronicleStore], Awaitable[T]]
    ) -> T:
        await self._ready()
        if self._warm is None:
            return default
        started = time.perf_counter()
        try:
            result = await call(self._warm)
        except Exception as exc:
            self._record(StateTier.WARM, operation, started, False, str(exc))
            log.warning("%s failed: %s", operation, exc)
            return default
        self._record(StateTier.WARM, operation, started, True, None)
        return result

    async def _loud(self, operation: str, call: Callable[[ChronicleStore], Awaitable[T]]) -> T:
        await self._ready()
        started = time.perf_counter()
        if self._warm is None:
            self._record(StateTier.WARM, operation, started, False, "unsupported backend")
            raise RuntimeError("WARM backend does not support windowed snapshot reads")
        try:
            result = await call(self._warm)
        except Exception as exc:
            self._record(StateTier.WARM, operation, started, False, str(exc))
            raise
        self._record(StateTier.WARM, operation, started, True, None)
        return result

    async def _accounting(
        self,
        operation: str,
        kind: AccountingWriteKind,
        deployment_id: str,
        what: str,
        call: Callable[[ChronicleStore], Awaitable[T]],
    ) -> T:
        await self._ready()
        if self._warm is None:
            raise AccountingPersistenceError(
                kind, deployment_id, f"No WARM backend configured for {what}"
            )
        started = time.perf_counter()
        try:
            result = await call(self._warm)
        except RegistryAutoCollisionError:
            self._record(StateTier.WARM, operation, started, False, "RegistryAutoCollisionError")
            raise
        except AccountingPersistenceError:
            self._record(StateTier.WARM, operation, started, False, "AccountingPersistenceError")
            raise
        except Exception as exc:
            self._record(StateTier.WARM, operation, started, False, str(exc))
            raise AccountingPersistenceError(kind, deployment_id, cause=exc) from exc
        self._record(StateTier.WARM, operation, started, True, None)
        return result

    async def _cutover(self, call: Callable[[ChronicleStore], Awaitable[T]]) -> T:
        await self._ready()
        if self._warm is None:
            raise CutoverStorageNotSupported(
                "no WARM backend: registry and migration state are not available"
            )
        return await call(self._warm)

    # -- CLOB orders ---------------------------------------------------------------------

    async def save_clob_order(self, order: ClobOrderState) -> bool:
        """``False`` on any failure, a blank ``deployment_id`` included (with its metric)."""

        async def save(warm: ChronicleStore) -> bool:
            if not order.deployment_id:
                raise ValueError("save_clob_order: order.deployment_id is required")
            return await warm.save_clob_order(order)

        return await self._graceful("save_clob_order", False, save)

    async def get_clob_order(self, order_id: str, *, deployment_id: str) -> ClobOrderState | None:
        _require(deployment_id)
        return await self._graceful(
            "get_clob_order", None, lambda w: w.get_clob_order(deployment_id, order_id)
        )

    async def get_open_clob_orders(
        self, market_id: str | None = None, *, deployment_id: str
    ) -> list[ClobOrderState]:
        _require(deployment_id)
        return await self._graceful(
            "get_open_clob_orders", [], lambda w: w.get_open_clob_orders(deployment_id, market_id)
        )

    async def update_clob_order_status(
        self,
        order_id: str,
        status: ClobOrderStatus,
        fills: list[ClobFill] | None = None,
        filled_size: str | None = None,
        average_fill_price: str | None = None,
        error: str | None = None,
        *,
        deployment_id: str,
    ) -> bool:
        _require(deployment_id)
        return await self._graceful(
            "update_clob_order_status",
            False,
            lambda w: w.update_clob_order_status(
                deployment_id, order_id, status, fills, filled_size, average_fill_price, error
            ),
        )

    # -- snapshots and metrics -------------------------------------------------------------

    async def save_portfolio_snapshot(self, snapshot: PortfolioSnapshot) -> int:
        return await self._accounting(
            "save_portfolio_snapshot",
            AccountingWriteKind.SNAPSHOT,
            snapshot.deployment_id,
            "portfolio snapshot",
            lambda w: w.save_portfolio_snapshot(snapshot),
        )

    async def get_latest_snapshot(self, deployment_id: str) -> PortfolioSnapshot | None:
        return await self._graceful(
            "get_latest_snapshot", None, lambda w: _snap(w.nav.latest(w.store, deployment_id))
        )

    async def get_first_snapshot(self, deployment_id: str) -> PortfolioSnapshot | None:
        return await self._graceful(
            "get_first_snapshot", None, lambda w: _snap(w.nav.first(w.store, deployment_id))
        )

    async def get_snapshots_since(
        self, deployment_id: str, since: datetime, limit: int = 168
    ) -> list[PortfolioSnapshot]:
        return await self._graceful(
            "get_snapshots_since",
            [],
            lambda w: _snaps(w.nav.since(w.store, deployment_id, since, limit)),
        )

    async def get_recent_snapshots(
        self, deployment_id: str, limit: int = 168
    ) -> list[PortfolioSnapshot]:
        if limit <= 0:
            return []
        return await self._graceful(
            "get_recent_snapshots",
            [],
            lambda w: _snaps(w.nav.recent(w.store, deployment_id, limit)),
        )

    async def get_snapshots_in_window(
        self,
        deployment_id: str,
        from_ts: datetime | None,
        to_ts: datetime | None,
        *,
        scan_cap: int = 200000,
    ) -> tuple[list[WindowRow], bool]:
        """Loud: a failure or a missing backend raises (an operator asked for history)."""
        return await self._loud(
            "get_snapshots_in_window",
            lambda w: w.nav.in_window(w.store, deployment_id, from_ts, to_ts, scan_cap=scan_cap),
        )

    async def get_nav_series(
        self,
        deployment_id: str,
        *,
        since: tuple[datetime, int] | None = None,
        scan_cap: int = 200000,
    ) -> tuple[list[NavRow], bool]:
        """Graceful: ``([], False)`` on failure, recorded as a failed metric."""
        await self._ready()  # first: a lazily initialized manager without WARM records it too
        if self._warm is None:
            self._record(
                StateTier.WARM, "get_nav_series", time.perf_counter(), False, "unsupported backend"
            )
            return [], False
        return await self._graceful(
            "get_nav_series",
            ([], False),
            lambda w: w.nav.nav_series(w.store, deployment_id, since=since, scan_cap=scan_cap),
        )

    async def get_snapshot_at(
        self, deployment_id: str, timestamp: datetime
    ) -> PortfolioSnapshot | None:
        return await self._graceful(
            "get_snapshot_at", None, lambda w: _snap(w.nav.at(w.store, deployment_id, timestamp))
        )

    async def cleanup_old_snapshots(self, retention_days: int = 7) -> int:
        return await self._graceful(
            "cleanup_old_snapshots", 0, lambda w: w.cleanup_old_snapshots(retention_days)
        )

    async def save_portfolio_metrics(self, metrics: PortfolioMetrics) -> bool:
        return await self._accounting(
            "save_portfolio_metrics",
            AccountingWriteKind.METRICS,
            metrics.deployment_id,
            "portfolio metrics",
            lambda w: w.save_portfolio_metrics(metrics),
        )

    async def get_portfolio_metrics(self, deployment_id: str) -> PortfolioMetrics | None:
        return await self._graceful(
            "get_portfolio_metrics", None, lambda w: w.get_portfolio_metrics(deployment_id)
        )

    # -- ledger -------------------------------------------------------------------------

    async def save_ledger_entry(self, entry: LedgerEntry) -> None:
        await self._accounting(
            "save_ledger_entry",
            AccountingWriteKind.LEDGER,
            entry.deployment_id,
            "transaction ledger",
            lambda w: w.save_ledger_entry(entry),
        )

    async def save_ledger_and_registry(
        self,
        *,
        ledger: LedgerEntry,
        registry: RegistryRow,
        handle: HandleMapping | None = None,
        mode: str = "commit",
    ) -> None:
        """Ledger entry, registry row and handle in one append: all land or none.

        ``RegistryAutoCollisionError`` propagates unchanged; any other refusal is an
        ``AccountingPersistenceError`` (kind ``accounting``).
        """
        await self._accounting(
            "save_ledger_and_registry",
            AccountingWriteKind.ACCOUNTING,
            ledger.deployment_id,
            "ledger and registry",
            lambda w: w.save_ledger_and_registry(ledger, registry, handle),
        )

    async def get_ledger_entries(
        self,
        deployment_id: str,
        since: datetime | None = None,
        intent_type: str | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[LedgerEntry]:
        return await self._graceful(
            "get_ledger_entries",
            [],
            lambda w: w.ledger.entries(
                w.store,
                deployment_id,
                since=since,
                before=before,
                intent_type=intent_type,
                limit=limit,
            ),
        )

    async def get_ledger_quant_stats(self, deployment_id: str) -> LedgerQuantStats:
        return await self._graceful(
            "get_ledger_quant_stats",
            LedgerQuantStats(),
            lambda w: w.ledger.quant_stats(w.store, deployment_id),
        )

    async def get_ledger_anchor_candidates(
        self, deployment_id: str, limit: int = 64, offset: int = 0
    ) -> list[LedgerEntry]:
        return await self._graceful(
            "get_ledger_anchor_candidates",
            [],
            lambda w: w.ledger.anchor_candidates(w.store, deployment_id, limit, offset),
        )

    async def sum_ledger_gas_usd(self, deployment_id: str) -> Decimal:
        await self._ready()
        if self._warm is None:
            return Decimal("0")
        return await self._accounting(
            "sum_ledger_gas_usd",
            AccountingWriteKind.METRICS,
            deployment_id,
            "ledger gas sum",
            lambda w: w.ledger.gas_usd_sum(w.store, deployment_id),
        )

    # -- registry and cutover ---------------------------------------------------------------

    async def get_position_registry_open_rows(
        self,
        deployment_id: str,
        *,
        chain: str | None = None,
        primitive: str | None = None,
        accounting_category: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self._cutover(
            lambda w: w.registry.open_rows(
                w.store,
                deployment_id,
                chain=chain,
                primitive=primitive,
                accounting_category=accounting_category,
            )
        )

    async def find_open_auto_mode_registry_row(
        self,
        *,
        deployment_id: str,
        chain: str,
        accounting_category: str,
        semantic_grouping_key: str,
    ) -> dict[str, str] | None:
        return await self._cutover(
            lambda w: w.registry.find_open_auto_mode_row(
                w.store,
                deployment_id=deployment_id,
                chain=chain,
                accounting_category=accounting_category,
                semantic_grouping_key=semantic_grouping_key,
            )
        )

    async def insert_position_registry_row_if_absent(self, *, row: Any) -> bool:
        return await self._cutover(lambda w: w.insert_position_registry_row_if_absent(row))

    async def upsert_migration_state(
        self, *, deployment_id: str, primitive: str, cutover_key: str
    ) -> None:
        await self._cutover(
            lambda w: w.upsert_migration_state(deployment_id, primitive, cutover_key)
        )

    async def get_migration_state(
        self, *, deployment_id: str, primitive: str, cutover_key: str
    ) -> Any | None:
        return await self._cutover(
            lambda w: w.get_migration_state(deployment_id, primitive, cutover_key)
        )

    async def get_position_events_filtered(
        self, *, deployment_id: str, position_types: frozenset[str]
    ) -> list[dict[str, Any]]:
        return await self._cutover(
            lambda w: w.positions.filtered(w.store, deployment_id, position_types)
        )

    # -- position and accounting events ---------------------------------------------------

    async def save_position_event(self, event: PositionEvent) -> bool:
        return await self._graceful(
            "save_position_event", False, lambda w: w.save_position_event(event)
        )

    async def save_accounting_event(self, event: AccountingEvent) -> bool:
        await self._ready()
        if self._warm is None:
            return False
        started = time.perf_counter()
        try:
            saved = await self._warm.save_accounting_event(event)
        except Exception as exc:  # the reference re-raises accounting write failures
            self._record(StateTier.WARM, "save_accounting_event", started, False, str(exc))
            raise
        self._record(StateTier.WARM, "save_accounting_event", started, True, None)
        return saved

    def has_accounting_event_backend(self) -> bool:
        return self._warm is not None

    def get_accounting_events_sync(
        self, deployment_id: str, position_key: str | None = None
    ) -> list[dict[str, Any]]:
        if self._warm is None:
            return []
        warm = self._warm
        try:
            return warm.run_sync(
                warm.accounting.events(warm.sync_store, deployment_id, position_key)
            )
        except Exception as exc:  # the reference's sync readers degrade to []
            log.warning("get_accounting_events_sync failed: %s", exc)
            return []

    def get_position_events_sync(
        self,
        deployment_id: str,
        position_id: str | None = None,
        position_type: str | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        if self._warm is None:
            return []
        warm = self._warm
        try:
            return warm.run_sync(
                warm.positions.as_dicts(
                    warm.sync_store, deployment_id, position_id, position_type, event_type
                )
            )
        except Exception as exc:  # the reference's sync readers degrade to []
            log.warning("get_position_events_sync failed: %s", exc)
            return []

    def has_first_snapshot_backend(self) -> bool:
        return self._warm is not None

    def get_first_snapshot_sync(self, deployment_id: str) -> PortfolioSnapshot | None:
        if self._warm is None:
            return None
        warm = self._warm
        try:
            row = warm.run_sync(warm.nav.first(warm.sync_store, deployment_id))
        except Exception as exc:
            log.warning("get_first_snapshot_sync failed: %s", exc)
            return None
        return None if row is None else PortfolioSnapshot.from_row(row)

    async def get_accounting_events_for_dashboard(
        self, deployment_id: str, position_key: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._graceful(
            "get_accounting_events_for_dashboard",
            [],
            lambda w: w.accounting.events(w.store, deployment_id, position_key),
        )

    async def get_position_events_for_dashboard(
        self,
        deployment_id: str,
        position_id: str | None = None,
        position_type: str | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self._graceful(
            "get_position_events_for_dashboard",
            [],
            lambda w: w.positions.as_dicts(
                w.store, deployment_id, position_id, position_type, event_type
            ),
        )

    async def update_position_attribution(
        self,
        event_id: str,
        attribution_json: str,
        attribution_version: int,
        deployment_id: str = "",
    ) -> bool:
        """``False`` when the event is missing or on any error.

        ``attribution_json`` must be a JSON object (the event stores a document,
        not the text); anything else is refused (``False``, a failed metric)
        before it reaches the log, where it could not be decoded on replay.
        """

        async def update(warm: ChronicleStore) -> bool:
            attribution = msgspec.json.decode(attribution_json) if attribution_json else {}
            if not isinstance(attribution, dict):
                raise ValueError("attribution_json must be a JSON object")
            return await warm.update_position_attribution(
                event_id, attribution, attribution_version, deployment_id
            )

        return await self._graceful("update_position_attribution", False, update)

    async def get_position_events(
        self, deployment_id: str, event_type: str | None = None, limit: int = 100
    ) -> list[PositionEvent]:
        return await self._graceful(
            "get_position_events",
            [],
            lambda w: w.positions.events(
                w.store, deployment_id, event_type=event_type, limit=limit
            ),
        )

    async def get_position_history(self, deployment_id: str, position_id: str) -> list[Any]:
        return await self._graceful(
            "get_position_history",
            [],
            lambda w: w.positions.history(w.store, deployment_id, position_id),
        )


# -- helpers ---------------------------------------------------------------------------------


def _require(deployment_id: str) -> None:
    if not deployment_id:
        raise ValueError("deployment_id is required")


def _state(current: Any, tier: StateTier) -> StateData:
    return StateData(
        current.deployment_id,
        current.version,
        current.state,
        current.schema_version,
        current.checksum,
        current.created_at,
        tier,
    )


def _row(state: StateData, version: int, stream_version: int, checksum: str) -> Any:
    from projections.models.state import CurrentState

    return CurrentState(
        state.deployment_id,
        version,
        state.state,
        state.schema_version,
        checksum,
        state.created_at,
        state.created_at,
        stream_version,
    )


async def _snap(read: Awaitable[Any]) -> PortfolioSnapshot | None:
    row = await read
    return None if row is None else PortfolioSnapshot.from_row(row)


async def _snaps(read: Awaitable[list[Any]]) -> list[PortfolioSnapshot]:
    return [PortfolioSnapshot.from_row(row) for row in await read]


__all__ = ["PostgresStore", "SQLiteStore", "StateManager"]

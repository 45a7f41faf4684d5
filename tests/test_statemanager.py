"""The runner-facing ``StateManager``, method by method, against the seed page.

Every test builds a manager on a fresh store of each backend (SQLite file and
PostgreSQL schema, from ``store_url``) with ``StateManagerConfig(database_url=...)``
and checks what the seed page (/work/shared/seed/state-management-api.txt)
documents, with the details docs/reference-semantics.md gives. Where Chronicle
deliberately differs from the reference (documented in statemanager/manager.py
and statemanager/warm.py), the test says so and checks Chronicle's behaviour.

Backend failures are real: a read-model table dropped with SQL, or the WARM
store closed underneath the manager. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import with_params

from eventstore import Statement, StoreClosed
from projections.errors import RegistryHandleConflict
from projections.events import RegistryStatus
from statemanager import (
    AccountingEvent,
    AccountingPersistenceError,
    AccountingWriteKind,
    ChronicleStore,
    ClobFill,
    ClobOrderState,
    ClobOrderStatus,
    CutoverStorageNotSupported,
    HandleMapping,
    LedgerEntry,
    LedgerQuantStats,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
    PostgresStore,
    RegistryAutoCollisionError,
    RegistryRow,
    SQLiteStore,
    StateConflictError,
    StateData,
    StateManager,
    StateManagerConfig,
    StateNotFoundError,
    StateTier,
    TierMetrics,
    WarmBackendType,
)
from statemanager.types import compute_checksum

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEP = "dep-1"
HOT, WARM = StateTier.HOT, StateTier.WARM


# =============================================================================
# helpers
# =============================================================================


def config(store_url: str, **options: Any) -> StateManagerConfig:
    return StateManagerConfig(database_url=store_url, **options)


@pytest.fixture
async def manager(store_url: str) -> AsyncIterator[StateManager]:
    opened = StateManager(config(store_url))
    await opened.initialize()
    try:
        yield opened
    finally:
        await opened.close()


def warm_of(manager: StateManager) -> ChronicleStore:
    warm = manager.warm_backend
    assert warm is not None
    return warm


async def log_count(manager: StateManager, deployment_id: str | None = None) -> int:
    """Events in the log (of one deployment, or all), counted with SQL."""
    store = warm_of(manager).store
    if deployment_id is None:
        rows = await store.query("SELECT count(*) FROM chronicle_events")
    else:
        rows = await store.query(
            "SELECT count(*) FROM chronicle_events WHERE deployment_id = $1", (deployment_id,)
        )
    return int(rows[0][0])


def last_metric(manager: StateManager) -> TierMetrics:
    return manager.get_metrics(1)[0]


def snapshot(at: datetime, value: str, *, dep: str = DEP, **extra: Any) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        deployment_id=dep,
        timestamp=at,
        total_value_usd=Decimal(value),
        available_cash_usd=Decimal("10"),
        positions=[{"id": "p1", "value_usd": value}],
        **extra,
    )


def ledger_entry(entry_id: str, at: datetime, *, dep: str = DEP, **extra: Any) -> LedgerEntry:
    fields: dict[str, Any] = {"cycle_id": f"c-{entry_id}", "intent_type": "SWAP"}
    fields.update(extra)
    return LedgerEntry(entry_id=entry_id, deployment_id=dep, timestamp=at, **fields)


def registry_row(identity: str, *, dep: str = DEP, **extra: Any) -> RegistryRow:
    fields: dict[str, Any] = {
        "chain": "arbitrum",
        "primitive": "lp",
        "accounting_category": "uniswap_v3_lp",
        "semantic_grouping_key": "WETH/USDC",
        "grouping_policy_version": "1",
        "status": RegistryStatus.OPEN,
        "opened_tx": f"0x{identity}",
        "payload": {"identity": identity},
    }
    fields.update(extra)
    return RegistryRow(deployment_id=dep, physical_identity_hash=identity, **fields)


def order(order_id: str, market: str, submitted: datetime, **extra: Any) -> ClobOrderState:
    fields: dict[str, Any] = {
        "token_id": f"tok-{market}",
        "side": "BUY",
        "status": ClobOrderStatus.LIVE,
        "price": Decimal("0.42"),
        "size": Decimal("100"),
        "submitted_at": submitted,
        "metadata": {"note": order_id},
    }
    fields.update(extra)
    return ClobOrderState(deployment_id=DEP, order_id=order_id, market_id=market, **fields)


def fill(fill_id: str, price: str, size: str) -> ClobFill:
    return ClobFill(
        fill_id=fill_id,
        price=Decimal(price),
        size=Decimal(size),
        fee=Decimal("0.01"),
        timestamp=T0,
    )


def position_event(
    event_id: str, position_id: str, kind: str, at: datetime, position_type: str = "LP"
) -> PositionEvent:
    return PositionEvent(
        position_event_id=event_id,
        deployment_id=DEP,
        position_id=position_id,
        position_type=position_type,
        position_event_type=kind,
        timestamp=at,
        protocol="uniswap_v3",
        chain="arbitrum",
        value_usd=Decimal("100.5"),
    )


def accounting_event(event_id: str, key: str, at: datetime, amount: str) -> AccountingEvent:
    return AccountingEvent(
        accounting_event_id=event_id,
        deployment_id=DEP,
        cycle_id="c1",
        execution_mode="live",
        timestamp=at,
        chain="arbitrum",
        protocol="aave_v3",
        wallet_address="0xwallet",
        accounting_event_type="SUPPLY",
        position_key=key,
        confidence="HIGH",
        payload={"amount": amount},
    )


# =============================================================================
# constructor, properties, initialize, close
# =============================================================================


async def test_properties_before_and_after_initialize(store_url: str, backend_name: str) -> None:
    manager = StateManager(config(store_url))
    assert manager.is_initialized is False
    assert manager.enabled_tiers == []
    assert manager.warm_backend_type is None
    assert manager.warm_backend is None

    await manager.initialize()
    try:
        assert manager.is_initialized is True
        assert manager.enabled_tiers == [HOT, WARM]
        expected_type = (
            WarmBackendType.SQLITE if backend_name == "sqlite" else WarmBackendType.POSTGRESQL
        )
        assert manager.warm_backend_type is expected_type
        expected_class = SQLiteStore if backend_name == "sqlite" else PostgresStore
        assert isinstance(manager.warm_backend, expected_class)

        warm = manager.warm_backend
        await manager.initialize()  # idempotent: the same backend, nothing reopened
        assert manager.warm_backend is warm
        assert manager.is_initialized is True
    finally:
        await manager.close()
    assert manager.is_initialized is False
    await manager.close()  # closing twice is harmless
    assert manager.is_initialized is False


async def test_config_defaults_and_tier_selection(store_url: str) -> None:
    assert StateManager().config == StateManagerConfig()  # None means the defaults

    warm_only = StateManager(config(store_url, enable_hot=False))
    await warm_only.initialize()
    try:
        assert warm_only.enabled_tiers == [WARM]
        await warm_only.save_state(StateData(DEP, 1, {"a": 1}))
        assert (await warm_only.load_state(DEP)).loaded_from is WARM
        assert (await warm_only.load_state(DEP)).loaded_from is WARM  # never HOT
    finally:
        await warm_only.close()


async def test_injected_warm_backend_is_used(store_url: str) -> None:
    injected = ChronicleStore.for_url(store_url)
    manager = StateManager(StateManagerConfig(), warm_backend=injected)
    await manager.initialize()
    try:
        assert manager.warm_backend is injected
        await manager.save_state(StateData(DEP, 1, {"injected": True}))
        assert (await injected.get(DEP)) is not None
    finally:
        await manager.close()


async def test_unopenable_warm_backend_leaves_warm_disabled(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    manager = StateManager(StateManagerConfig(database_url=f"sqlite:///{blocker}/x.db"))
    await manager.initialize()  # logged, not raised: the manager runs without WARM
    try:
        assert manager.is_initialized
        assert manager.enabled_tiers == [HOT]
        assert manager.warm_backend is None
        assert manager.warm_backend_type is None
    finally:
        await manager.close()


async def test_close_then_lazy_reinitialize(store_url: str) -> None:
    manager = StateManager(config(store_url))
    await manager.initialize()
    await manager.save_state(StateData(DEP, 1, {"a": 1}))
    await manager.close()
    assert not manager.is_initialized

    # the next call initializes again, whatever the method: a load first
    loaded = await manager.load_state(DEP)
    assert manager.is_initialized
    assert (loaded.version, loaded.state) == (1, {"a": 1})
    await manager.close()

    # ... or a save
    saved = await manager.save_state(StateData(DEP, 2, {"a": 2}))
    assert manager.is_initialized and saved.version == 2
    await manager.close()

    # ... or any other async method
    assert await manager.get_ledger_entries(DEP) == []
    assert manager.is_initialized
    await manager.close()


# =============================================================================
# load_state / save_state / delete_state / invalidate_hot_cache
# =============================================================================


async def test_load_state_not_found(manager: StateManager) -> None:
    with pytest.raises(StateNotFoundError) as caught:
        await manager.load_state("nobody")
    assert caught.value.deployment_id == "nobody"
    assert str(caught.value) == "State not found for deployment nobody"


async def test_load_state_tiers_and_hot_filled_on_warm_hit(manager: StateManager) -> None:
    saved = await manager.save_state(StateData(DEP, 1, {"k": "v"}))
    first = await manager.load_state(DEP)
    assert first.loaded_from is HOT  # a save fills HOT
    assert (first.version, first.state, first.checksum) == (1, {"k": "v"}, saved.checksum)

    manager.invalidate_hot_cache(DEP)
    from_warm = await manager.load_state(DEP)
    assert from_warm.loaded_from is WARM
    assert (from_warm.version, from_warm.state) == (1, {"k": "v"})
    assert from_warm.verify_checksum()
    assert from_warm.created_at == saved.created_at

    again = await manager.load_state(DEP)  # the WARM hit filled HOT
    assert again.loaded_from is HOT
    assert (again.version, again.state, again.checksum) == (1, {"k": "v"}, saved.checksum)
    assert again.created_at == saved.created_at


async def test_save_state_version_rules(manager: StateManager) -> None:
    # version 1, expected_version None: creates
    created = await manager.save_state(StateData(DEP, 1, {"n": 1}))
    assert created.version == 1
    assert created.loaded_from is WARM
    assert created.checksum == compute_checksum({"n": 1})

    # version > 1, expected_version None: expects version - 1, writes version
    second = await manager.save_state(StateData(DEP, 2, {"n": 2}))
    assert second.version == 2
    assert second.created_at == created.created_at  # the first save's time, as the reference

    # an explicit expected_version wins; the new version is expected + 1
    third = await manager.save_state(StateData(DEP, 99, {"n": 3}), expected_version=2)
    assert third.version == 3
    loaded = await manager.load_state(DEP)
    assert (loaded.version, loaded.state) == (3, {"n": 3})

    # the seed's CAS loop: load, change, save with the loaded version; the checksum
    # is recomputed at save (as the reference does), so the record stays verifiable
    loaded.state["n"] = 4
    assert not loaded.verify_checksum()
    fourth = await manager.save_state(loaded, expected_version=loaded.version)
    assert fourth.version == 4
    assert fourth.checksum == compute_checksum({"n": 4})
    for tier in (HOT, WARM):
        if tier is WARM:
            manager.invalidate_hot_cache()
        reread = await manager.load_state(DEP)
        assert (reread.loaded_from, reread.state) == (tier, {"n": 4})
        assert reread.verify_checksum()
    bogus = await manager.save_state(StateData("dep-sum", 1, {"x": 1}, checksum="bogus"))
    assert bogus.checksum == compute_checksum({"x": 1})

    # a first save at version 0 stores version 0 (the reference does the same)
    zero = await manager.save_state(StateData("dep-zero", 0, {}))
    assert zero.version == 0


async def test_save_state_conflicts_raise_and_write_nothing(manager: StateManager) -> None:
    await manager.save_state(StateData(DEP, 1, {"n": 1}))
    await manager.save_state(StateData(DEP, 2, {"n": 2}))
    events = await log_count(manager, DEP)

    # a stale expected_version
    with pytest.raises(StateConflictError) as stale:
        await manager.save_state(StateData(DEP, 9, {"n": "lost"}), expected_version=1)
    assert (stale.value.deployment_id, stale.value.expected_version) == (DEP, 1)
    assert stale.value.actual_version == 2
    assert str(stale.value) == f"State conflict for deployment {DEP}: expected version 1, found 2"

    # expected_version None with version > 1 means version - 1: version 2 again expects 1
    with pytest.raises(StateConflictError) as implied:
        await manager.save_state(StateData(DEP, 2, {"n": "lost"}))
    assert (implied.value.expected_version, implied.value.actual_version) == (1, 2)

    # expected_version ahead of the store
    with pytest.raises(StateConflictError) as ahead:
        await manager.save_state(StateData(DEP, 9, {"n": "lost"}), expected_version=5)
    assert (ahead.value.expected_version, ahead.value.actual_version) == (5, 2)

    # CAS on a deployment that has no state: actual is 0
    with pytest.raises(StateConflictError) as missing:
        await manager.save_state(StateData("dep-none", 4, {}))
    assert (missing.value.expected_version, missing.value.actual_version) == (3, 0)

    # Chronicle differs from the reference here (warm.py ChronicleStore.save): with
    # expected_version None and version <= 1, an existing state is NOT overwritten;
    # the save is refused like any CAS conflict, expected 0 ("no state yet").
    with pytest.raises(StateConflictError) as create:
        await manager.save_state(StateData(DEP, 1, {"n": "overwrite"}))
    assert (create.value.expected_version, create.value.actual_version) == (0, 2)

    assert await log_count(manager, DEP) == events  # nothing was appended
    assert await log_count(manager, "dep-none") == 0
    loaded = await manager.load_state(DEP)
    assert (loaded.version, loaded.state) == (2, {"n": 2})
    manager.invalidate_hot_cache()
    loaded = await manager.load_state(DEP)
    assert (loaded.loaded_from, loaded.version, loaded.state) == (WARM, 2, {"n": 2})
    with pytest.raises(StateNotFoundError):
        await manager.load_state("dep-none")


async def test_cas_across_managers_refuses_the_stale_writer(store_url: str) -> None:
    first = StateManager(config(store_url))
    second = StateManager(config(store_url))
    await first.initialize()
    await second.initialize()
    try:
        await first.save_state(StateData(DEP, 1, {"by": "first"}))
        assert (await first.load_state(DEP)).loaded_from is HOT
        other = await second.load_state(DEP)
        await second.save_state(StateData(DEP, 2, {"by": "second"}), expected_version=other.version)

        # first still believes version 1 (HOT, or WARM if it was invalidated meanwhile):
        # its CAS must not overwrite second's write
        with pytest.raises(StateConflictError) as caught:
            await first.save_state(StateData(DEP, 2, {"by": "first"}), expected_version=1)
        assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
        # after a conflict the next load sees the store (Chronicle drops the stale HOT copy)
        reloaded = await first.load_state(DEP)
        assert (reloaded.version, reloaded.state) == (2, {"by": "second"})

        # a stale HOT copy never refuses a save whose expected_version is right
        await second.save_state(StateData(DEP, 3, {"by": "second"}), expected_version=2)
        assert (await first.load_state(DEP)).version in (2, 3)  # HOT (SQLite: no notify)
        saved = await first.save_state(StateData(DEP, 0, {"by": "first"}), expected_version=3)
        assert saved.version == 4
        # ... nor a create after another manager deleted the state
        await first.load_state(DEP)  # HOT holds version 4 (unless a notification dropped it)
        assert await second.delete_state(DEP) is True
        recreated = await first.save_state(StateData(DEP, 1, {"by": "first again"}))
        assert recreated.version == 1
        second.invalidate_hot_cache()
        assert (await second.load_state(DEP)).state == {"by": "first again"}
    finally:
        await first.close()
        await second.close()


async def test_delete_state(manager: StateManager) -> None:
    assert await manager.delete_state(DEP) is False  # in no tier

    await manager.save_state(StateData(DEP, 1, {"a": 1}))
    assert await manager.delete_state(DEP) is True  # HOT and WARM
    with pytest.raises(StateNotFoundError):
        await manager.load_state(DEP)
    assert await manager.delete_state(DEP) is False

    await manager.save_state(StateData(DEP, 1, {"a": 2}))  # created again after a delete
    manager.invalidate_hot_cache()
    assert await manager.delete_state(DEP) is True  # WARM only
    with pytest.raises(StateNotFoundError):
        await manager.load_state(DEP)

    # the log keeps every version and the deletions
    rows = await warm_of(manager).store.query(
        "SELECT type FROM chronicle_events WHERE deployment_id = $1 ORDER BY deployment_seq",
        (DEP,),
    )
    assert [row[0] for row in rows] == ["StateSaved", "StateDeleted", "StateSaved", "StateDeleted"]


async def test_invalidate_hot_cache_one_or_all(manager: StateManager) -> None:
    await manager.save_state(StateData("a", 1, {"x": 1}))
    await manager.save_state(StateData("b", 1, {"x": 2}))

    manager.invalidate_hot_cache("a")
    assert (await manager.load_state("a")).loaded_from is WARM
    assert (await manager.load_state("b")).loaded_from is HOT

    manager.invalidate_hot_cache()
    assert (await manager.load_state("a")).loaded_from is WARM
    assert (await manager.load_state("b")).loaded_from is WARM

    manager.invalidate_hot_cache("")  # falsy: clears all, as the reference
    assert (await manager.load_state("a")).loaded_from is WARM
    manager.invalidate_hot_cache("never-cached")  # no error


async def test_hot_cache_is_lru_bounded(store_url: str) -> None:
    manager = StateManager(config(store_url, hot_cache_max_size=2, load_state_on_startup=False))
    await manager.initialize()
    try:
        for dep in ("a", "b"):
            await manager.save_state(StateData(dep, 1, {"dep": dep}))
        assert (await manager.load_state("a")).loaded_from is HOT  # a is now most recent
        await manager.save_state(StateData("c", 1, {"dep": "c"}))  # evicts b, not a

        assert (await manager.load_state("a")).loaded_from is HOT
        assert (await manager.load_state("c")).loaded_from is HOT
        b = await manager.load_state("b")
        assert (b.loaded_from, b.state) == (WARM, {"dep": "b"})  # and evicts a
        assert (await manager.load_state("b")).loaded_from is HOT
        assert (await manager.load_state("a")).loaded_from is WARM
    finally:
        await manager.close()


async def test_hot_cache_ttl_expiry(store_url: str) -> None:
    manager = StateManager(config(store_url, hot_cache_ttl_seconds=1))
    await manager.initialize()
    try:
        await manager.save_state(StateData(DEP, 1, {"a": 1}))
        assert (await manager.load_state(DEP)).loaded_from is HOT
        await asyncio.sleep(1.1)
        expired = await manager.load_state(DEP)
        assert (expired.loaded_from, expired.version) == (WARM, 1)
        assert (await manager.load_state(DEP)).loaded_from is HOT  # refilled
    finally:
        await manager.close()


async def test_load_state_on_startup_preloads_hot(store_url: str) -> None:
    writer = StateManager(config(store_url))
    await writer.initialize()
    await writer.save_state(StateData("a", 1, {"dep": "a"}))
    await writer.save_state(StateData("b", 1, {"dep": "b"}))
    await writer.save_state(StateData("b", 2, {"dep": "b2"}))
    await writer.close()

    preloaded = StateManager(config(store_url))  # load_state_on_startup defaults to True
    await preloaded.initialize()
    try:
        a, b = await preloaded.load_state("a"), await preloaded.load_state("b")
        assert (a.loaded_from, a.version, a.state) == (HOT, 1, {"dep": "a"})
        assert (b.loaded_from, b.version, b.state) == (HOT, 2, {"dep": "b2"})
    finally:
        await preloaded.close()

    lazy = StateManager(config(store_url, load_state_on_startup=False))
    await lazy.initialize()
    try:
        assert (await lazy.load_state("a")).loaded_from is WARM
        assert (await lazy.load_state("a")).loaded_from is HOT
    finally:
        await lazy.close()


async def test_callers_mutating_states_do_not_change_later_loads(manager: StateManager) -> None:
    given = {"nested": {"list": [1, 2]}, "n": 1}
    saved = await manager.save_state(StateData(DEP, 1, given))
    given["n"] = "mutated input"
    given["nested"]["list"].append("x")
    saved.state["extra"] = "mutated return"

    for tier in (HOT, WARM):
        if tier is WARM:
            manager.invalidate_hot_cache()
        loaded = await manager.load_state(DEP)
        assert loaded.loaded_from is tier
        assert loaded.state == {"nested": {"list": [1, 2]}, "n": 1}
        loaded.state["n"] = "mutated load"
        loaded.state["nested"]["list"].clear()
        again = await manager.load_state(DEP)
        assert again.loaded_from is HOT
        assert again.state == {"nested": {"list": [1, 2]}, "n": 1}
        assert again.verify_checksum()


# =============================================================================
# metrics
# =============================================================================


async def test_metrics_newest_first_limit_summary_and_clear(manager: StateManager) -> None:
    manager.clear_metrics()
    assert manager.get_metrics() == []
    assert manager.get_metrics_summary() == {}

    with pytest.raises(StateNotFoundError):
        await manager.load_state(DEP)  # HOT miss, WARM not found
    await manager.save_state(StateData(DEP, 1, {}))  # WARM save, HOT save
    await manager.load_state(DEP)  # HOT hit
    with pytest.raises(StateConflictError):
        await manager.save_state(StateData(DEP, 5, {}))  # WARM failure

    got = [(m.tier, m.operation, m.success, m.error) for m in manager.get_metrics()]
    assert got == [
        (WARM, "save", False, "version_conflict"),
        (HOT, "load", True, None),
        (HOT, "save", True, None),
        (WARM, "save", True, None),
        (WARM, "load", True, "not_found"),
        (HOT, "load", True, "cache_miss"),
    ]
    assert all(m.latency_ms >= 0 for m in manager.get_metrics())
    assert [m.operation for m in manager.get_metrics(limit=2)] == ["save", "load"]
    assert manager.get_metrics(limit=2) == manager.get_metrics()[:2]
    assert len(manager.get_metrics(limit=0)) == 6  # the reference's metrics[-0:]: all

    summary = manager.get_metrics_summary()
    assert set(summary) == {"HOT", "WARM"}
    assert summary["HOT"]["total_operations"] == 3
    assert summary["HOT"]["successful_operations"] == 3
    assert summary["HOT"]["success_rate"] == 1.0
    assert summary["WARM"]["total_operations"] == 3
    assert summary["WARM"]["successful_operations"] == 2
    assert summary["WARM"]["success_rate"] == pytest.approx(2 / 3)
    for tier in summary.values():
        assert tier["min_latency_ms"] <= tier["avg_latency_ms"] <= tier["max_latency_ms"]
    ok_warm = [m.latency_ms for m in manager.get_metrics() if m.tier is WARM and m.success]
    assert summary["WARM"]["avg_latency_ms"] == pytest.approx(sum(ok_warm) / len(ok_warm))
    assert summary["WARM"]["max_latency_ms"] == pytest.approx(max(ok_warm))

    manager.clear_metrics()
    assert manager.get_metrics() == []
    assert manager.get_metrics_summary() == {}


async def test_metrics_callback_receives_every_metric(store_url: str) -> None:
    seen: list[TierMetrics] = []
    manager = StateManager(config(store_url, metrics_callback=seen.append))
    await manager.initialize()
    try:
        await manager.save_state(StateData(DEP, 1, {}))
        await manager.load_state(DEP)
        assert seen == manager.get_metrics()[::-1]  # oldest first, the same objects
        assert [(m.tier, m.operation) for m in seen] == [
            (WARM, "save"),
            (HOT, "save"),
            (HOT, "load"),
        ]
        await manager.get_latest_snapshot(DEP)
        assert (seen[-1].tier, seen[-1].operation) == (WARM, "get_latest_snapshot")
    finally:
        await manager.close()

    def broken(metric: TierMetrics) -> None:
        raise RuntimeError("sink down")

    faulty = StateManager(config(store_url, metrics_callback=broken))
    await faulty.initialize()
    try:  # a failing callback is logged, never fails the operation
        saved = await faulty.save_state(StateData(DEP, 2, {"x": 1}))
        assert saved.version == 2
        assert len(faulty.get_metrics()) == 2
    finally:
        await faulty.close()


# =============================================================================
# CLOB orders
# =============================================================================


async def test_clob_orders(manager: StateManager) -> None:
    o1 = order("o1", "m1", T0)
    o2 = order("o2", "m2", T0 + timedelta(minutes=1))
    o3 = order("o3", "m1", T0 + timedelta(minutes=2), status=ClobOrderStatus.PENDING)
    for o in (o1, o2, o3):
        assert await manager.save_clob_order(o) is True

    got = await manager.get_clob_order("o1", deployment_id=DEP)
    assert got is not None
    assert (got.order_id, got.market_id, got.token_id, got.side) == ("o1", "m1", "tok-m1", "BUY")
    assert (got.status, got.price, got.size) == (ClobOrderStatus.LIVE, Decimal("0.42"), 100)
    assert (got.filled_size, got.average_fill_price, got.fills) == (Decimal("0"), None, ())
    assert (got.order_type, got.metadata, got.submitted_at) == ("GTC", {"note": "o1"}, T0)
    assert await manager.get_clob_order("nope", deployment_id=DEP) is None
    assert await manager.get_clob_order("o1", deployment_id="dep-other") is None

    # open orders: newest first by submission; a market filters, "" does not
    ids = [o.order_id for o in await manager.get_open_clob_orders(deployment_id=DEP)]
    assert ids == ["o3", "o2", "o1"]
    ids = [o.order_id for o in await manager.get_open_clob_orders("m1", deployment_id=DEP)]
    assert ids == ["o3", "o1"]
    ids = [o.order_id for o in await manager.get_open_clob_orders("", deployment_id=DEP)]
    assert ids == ["o3", "o2", "o1"]
    assert await manager.get_open_clob_orders("m9", deployment_id=DEP) == []

    # a status update with fills
    f1, f2 = fill("f1", "0.41", "40"), fill("f2", "0.40", "60")
    updated = await manager.update_clob_order_status(
        "o1",
        ClobOrderStatus.PARTIALLY_FILLED,
        fills=[f1],
        filled_size="40",
        average_fill_price="0.41",
        deployment_id=DEP,
    )
    assert updated is True
    got = await manager.get_clob_order("o1", deployment_id=DEP)
    assert got is not None
    assert got.status is ClobOrderStatus.PARTIALLY_FILLED
    assert (got.fills, got.filled_size, got.average_fill_price) == ((f1,), 40, Decimal("0.41"))
    assert got.submitted_at == T0
    assert "o1" in [o.order_id for o in await manager.get_open_clob_orders(deployment_id=DEP)]

    # fills replace the list; arguments left None keep what is stored
    assert await manager.update_clob_order_status(
        "o1", ClobOrderStatus.PARTIALLY_FILLED, fills=[f1, f2], deployment_id=DEP
    )
    got = await manager.get_clob_order("o1", deployment_id=DEP)
    assert got is not None
    assert (got.fills, got.filled_size, got.average_fill_price) == ((f1, f2), 40, Decimal("0.41"))

    # a terminal status leaves the open set
    assert await manager.update_clob_order_status(
        "o1", ClobOrderStatus.MATCHED, filled_size="100", deployment_id=DEP
    )
    assert await manager.update_clob_order_status(
        "o3", ClobOrderStatus.FAILED, error="rejected", deployment_id=DEP
    )
    ids = [o.order_id for o in await manager.get_open_clob_orders(deployment_id=DEP)]
    assert ids == ["o2"]
    got = await manager.get_clob_order("o3", deployment_id=DEP)
    assert got is not None and (got.status, got.error) == (ClobOrderStatus.FAILED, "rejected")

    # unknown order: False, nothing written
    events = await log_count(manager, DEP)
    assert (
        await manager.update_clob_order_status("nope", ClobOrderStatus.LIVE, deployment_id=DEP)
        is False
    )
    assert await log_count(manager, DEP) == events

    # re-saving keeps the first submitted_at (the legacy upsert does)
    assert await manager.save_clob_order(order("o2", "m2", T0 + timedelta(hours=5)))
    got = await manager.get_clob_order("o2", deployment_id=DEP)
    assert got is not None and got.submitted_at == T0 + timedelta(minutes=1)


async def test_clob_orders_require_a_deployment_id(manager: StateManager) -> None:
    with pytest.raises(ValueError, match="deployment_id"):
        await manager.get_clob_order("o1", deployment_id="")
    with pytest.raises(ValueError, match="deployment_id"):
        await manager.get_open_clob_orders(deployment_id="")
    with pytest.raises(ValueError, match="deployment_id"):
        await manager.update_clob_order_status("o1", ClobOrderStatus.LIVE, deployment_id="")
    blank = order("o1", "m1", T0)
    blank.deployment_id = ""
    manager.clear_metrics()
    assert await manager.save_clob_order(blank) is False  # the reference's False, not a raise
    m = last_metric(manager)
    assert (m.tier, m.operation, m.success) == (WARM, "save_clob_order", False)
    assert await log_count(manager) == 0


# =============================================================================
# portfolio snapshots and metrics
# =============================================================================


async def test_portfolio_snapshots(manager: StateManager) -> None:
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    assert await manager.get_latest_snapshot(DEP) is None
    assert await manager.get_first_snapshot(DEP) is None

    ids = [
        await manager.save_portfolio_snapshot(snapshot(T0, "1000", cycle_id="c0")),
        await manager.save_portfolio_snapshot(snapshot(t1, "1100")),
        await manager.save_portfolio_snapshot(snapshot(t2, "1200")),
    ]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(set(ids))  # distinct, increasing

    # re-saving a timestamp overwrites the values and keeps the id; a set identity stays
    assert await manager.save_portfolio_snapshot(snapshot(t1, "1150")) == ids[1]
    assert await manager.save_portfolio_snapshot(snapshot(T0, "1000", cycle_id="cX")) == ids[0]

    latest = await manager.get_latest_snapshot(DEP)
    assert latest is not None
    assert (latest.timestamp, latest.total_value_usd, latest.id) == (t2, 1200, ids[2])
    assert latest.positions == [{"id": "p1", "value_usd": "1200"}]
    first = await manager.get_first_snapshot(DEP)
    assert first is not None
    assert (first.timestamp, first.id, first.cycle_id) == (T0, ids[0], "c0")

    # since: inclusive, oldest first, limited
    since = await manager.get_snapshots_since(DEP, t1)
    assert [(s.timestamp, s.total_value_usd) for s in since] == [(t1, 1150), (t2, 1200)]
    assert [s.timestamp for s in await manager.get_snapshots_since(DEP, T0, limit=2)] == [T0, t1]

    # recent: the newest `limit`, oldest first, so [-1] is the latest
    recent = await manager.get_recent_snapshots(DEP, limit=2)
    assert [s.timestamp for s in recent] == [t1, t2]
    assert [s.timestamp for s in await manager.get_recent_snapshots(DEP)] == [T0, t1, t2]
    assert await manager.get_recent_snapshots(DEP, limit=0) == []

    # window: both ends inclusive, raw stored text, oldest first
    rows, truncated = await manager.get_snapshots_in_window(DEP, t1, t2)
    assert truncated is False
    assert [(r[0], r[1], r[2]) for r in rows] == [(t1, "1150", "HIGH"), (t2, "1200", "HIGH")]
    assert json.loads(rows[0][3]) == [{"id": "p1", "value_usd": "1150"}]
    rows, truncated = await manager.get_snapshots_in_window(DEP, None, None, scan_cap=2)
    assert ([r[0] for r in rows], truncated) == ([t1, t2], True)  # the newest scan_cap kept
    rows, truncated = await manager.get_snapshots_in_window(DEP, None, T0)
    assert ([r[0] for r in rows], truncated) == ([T0], False)
    assert await manager.get_snapshots_in_window(DEP, t2, t1) == ([], False)

    # nav series, full mode: newest scan_cap rows, oldest first
    rows, truncated = await manager.get_nav_series(DEP)
    assert truncated is False
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (T0, "1000", "10", ids[0]),
        (t1, "1150", "10", ids[1]),
        (t2, "1200", "10", ids[2]),
    ]
    rows, truncated = await manager.get_nav_series(DEP, scan_cap=2)
    assert ([r[3] for r in rows], truncated) == ([ids[1], ids[2]], True)
    # incremental mode: strictly after the (timestamp, id) cursor, oldest scan_cap rows
    rows, truncated = await manager.get_nav_series(DEP, since=(T0, ids[0]))
    assert ([r[3] for r in rows], truncated) == ([ids[1], ids[2]], False)
    rows, truncated = await manager.get_nav_series(DEP, since=(T0, ids[0]), scan_cap=1)
    assert ([r[3] for r in rows], truncated) == ([ids[1]], True)
    rows, truncated = await manager.get_nav_series(DEP, since=(rows[-1][0], rows[-1][3]))
    assert ([r[3] for r in rows], truncated) == ([ids[2]], False)
    assert await manager.get_nav_series(DEP, since=(t2, ids[2])) == ([], False)

    # at: the closest at or before the time, never a later one
    at = await manager.get_snapshot_at(DEP, t1 + timedelta(minutes=59))
    assert at is not None and at.timestamp == t1
    at = await manager.get_snapshot_at(DEP, t2)
    assert at is not None and at.timestamp == t2
    assert await manager.get_snapshot_at(DEP, T0 - timedelta(seconds=1)) is None

    # another deployment sees none of it
    assert await manager.get_latest_snapshot("dep-other") is None
    assert await manager.get_recent_snapshots("dep-other") == []


async def test_snapshot_window_and_nav_series_bad_scan_cap(manager: StateManager) -> None:
    await manager.save_portfolio_snapshot(snapshot(T0, "1"))
    with pytest.raises(ValueError, match="scan_cap"):  # loud: raised
        await manager.get_snapshots_in_window(DEP, None, None, scan_cap=0)
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "get_snapshots_in_window",
        False,
    )
    assert await manager.get_nav_series(DEP, scan_cap=0) == ([], False)  # graceful
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "get_nav_series",
        False,
    )


async def test_cleanup_old_snapshots(manager: StateManager) -> None:
    for i in range(3):
        await manager.save_portfolio_snapshot(snapshot(T0 + timedelta(hours=i), "1"))
    await manager.save_portfolio_snapshot(snapshot(T0, "2", dep="dep-2"))
    # retention compares the write time (created_at), not the snapshot's timestamp
    assert await manager.cleanup_old_snapshots() == 0
    assert await manager.cleanup_old_snapshots(retention_days=7) == 0
    assert len(await manager.get_recent_snapshots(DEP)) == 3
    # every deployment of the store, as the reference's global delete
    assert await manager.cleanup_old_snapshots(retention_days=0) == 4
    assert await manager.get_latest_snapshot(DEP) is None
    assert await manager.get_latest_snapshot("dep-2") is None
    assert await manager.cleanup_old_snapshots(retention_days=0) == 0
    # ids are never reused after retention
    new_id = await manager.save_portfolio_snapshot(snapshot(T0 + timedelta(days=1), "3"))
    assert new_id > 3


async def test_first_snapshot_sync(manager: StateManager) -> None:
    assert manager.has_first_snapshot_backend() is True
    assert manager.get_first_snapshot_sync(DEP) is None
    later = await manager.save_portfolio_snapshot(snapshot(T0 + timedelta(hours=1), "2"))
    earliest = await manager.save_portfolio_snapshot(snapshot(T0, "1"))
    first = manager.get_first_snapshot_sync(DEP)
    assert first is not None
    assert (first.timestamp, first.id, first.total_value_usd) == (T0, earliest, 1)
    assert later != earliest
    assert manager.get_first_snapshot_sync("dep-other") is None


async def test_portfolio_metrics(manager: StateManager) -> None:
    assert await manager.get_portfolio_metrics(DEP) is None
    metrics = PortfolioMetrics(
        deployment_id=DEP,
        initial_value_usd=Decimal("10000.50"),
        timestamp=T0,
        deposits_usd=Decimal("500"),
        withdrawals_usd=None,  # unmeasured
        gas_spent_usd=Decimal("1.25"),
        total_value_usd=Decimal("10400"),
        positions=[{"id": "p1"}],
        cycle_id="c7",
        execution_mode="live",
        is_complete=False,
    )
    assert await manager.save_portfolio_metrics(metrics) is True
    got = await manager.get_portfolio_metrics(DEP)
    assert got is not None
    assert (got.deployment_id, got.initial_value_usd) == (DEP, Decimal("10000.50"))
    assert (got.deposits_usd, got.withdrawals_usd, got.gas_spent_usd) == (
        500,
        None,
        Decimal("1.25"),
    )
    assert (got.total_value_usd, got.positions) == (10400, [{"id": "p1"}])
    assert (got.cycle_id, got.execution_mode, got.is_complete) == ("c7", "live", False)

    # a save replaces the whole row
    replacement = PortfolioMetrics(deployment_id=DEP, initial_value_usd=Decimal("1"), timestamp=T0)
    assert await manager.save_portfolio_metrics(replacement)
    got = await manager.get_portfolio_metrics(DEP)
    assert got is not None
    assert (got.initial_value_usd, got.withdrawals_usd, got.cycle_id) == (1, 0, None)
    assert await manager.get_portfolio_metrics("dep-other") is None


# =============================================================================
# the loud / graceful contract, with a backend that really fails
# =============================================================================


async def test_failing_backend_dropped_tables(manager: StateManager) -> None:
    await manager.save_portfolio_snapshot(snapshot(T0, "1"))
    await manager.save_ledger_entry(ledger_entry("e1", T0, gas_usd=Decimal("1")))
    store = warm_of(manager).store
    await store.execute(
        [Statement("DROP TABLE rm_portfolio_snapshots"), Statement("DROP TABLE rm_ledger_stats")]
    )
    manager.clear_metrics()

    # loud: the operator asked for history; the failure is raised and recorded
    with pytest.raises((sqlite3.OperationalError, asyncpg.UndefinedTableError)) as loud:
        await manager.get_snapshots_in_window(DEP, None, None)
    assert "rm_portfolio_snapshots" in str(loud.value)
    failure = last_metric(manager)
    assert (failure.tier, failure.operation, failure.success) == (
        WARM,
        "get_snapshots_in_window",
        False,
    )
    assert failure.error

    # graceful: the documented empty value, with a failed metric
    graceful: list[tuple[str, Any, Any]] = [
        ("get_nav_series", await manager.get_nav_series(DEP), ([], False)),
        ("get_recent_snapshots", await manager.get_recent_snapshots(DEP), []),
        ("get_ledger_quant_stats", await manager.get_ledger_quant_stats(DEP), LedgerQuantStats()),
        ("get_latest_snapshot", await manager.get_latest_snapshot(DEP), None),
        ("get_snapshots_since", await manager.get_snapshots_since(DEP, T0), []),
        ("get_snapshot_at", await manager.get_snapshot_at(DEP, T0), None),
    ]
    for operation, got, expected in graceful:
        assert got == expected, operation
    failed = [(m.operation, m.success, bool(m.error)) for m in manager.get_metrics()[::-1]]
    assert failed == [("get_snapshots_in_window", False, True)] + [
        (operation, False, True) for operation, _, _ in graceful
    ]
    # the tables that were not dropped still answer
    assert [e.entry_id for e in await manager.get_ledger_entries(DEP)] == ["e1"]


async def test_failing_backend_closed_store(manager: StateManager, backend_name: str) -> None:
    await manager.save_state(StateData(DEP, 1, {"a": 1}))
    await manager.save_portfolio_snapshot(snapshot(T0, "1"))
    await warm_of(manager).store.close()  # the WARM store dies underneath the manager
    await asyncio.sleep(0.05)  # let the store's connection-loss callbacks run
    manager.clear_metrics()

    with pytest.raises(StoreClosed):
        await manager.get_snapshots_in_window(DEP, T0, None)
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "get_snapshots_in_window",
        False,
    )

    assert await manager.get_nav_series(DEP) == ([], False)
    assert last_metric(manager).operation == "get_nav_series"
    assert last_metric(manager).success is False
    assert await manager.get_recent_snapshots(DEP) == []
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "get_recent_snapshots",
        False,
    )
    assert await manager.get_ledger_quant_stats(DEP) == LedgerQuantStats()
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "get_ledger_quant_stats",
        False,
    )
    assert await manager.get_ledger_entries(DEP) == []
    assert await manager.get_ledger_anchor_candidates(DEP) == []
    assert await manager.get_first_snapshot(DEP) is None
    assert await manager.get_portfolio_metrics(DEP) is None
    assert await manager.get_clob_order("o1", deployment_id=DEP) is None
    assert await manager.save_clob_order(order("o1", "m1", T0)) is False
    assert await manager.get_position_events(DEP) == []
    assert await manager.save_position_event(position_event("pe", "P", "OPEN", T0)) is False
    assert await manager.cleanup_old_snapshots() == 0
    assert manager.get_first_snapshot_sync(DEP) is None
    assert manager.get_accounting_events_sync(DEP) == []  # the sync readers degrade too
    assert manager.get_position_events_sync(DEP) == []
    assert await manager.get_accounting_events_for_dashboard(DEP) == []
    assert await manager.get_position_events_for_dashboard(DEP) == []

    # SQLite: HOT still answers. PostgreSQL: losing the store's notification connection
    # drops HOT (other processes' writes may have gone unseen), so the state is "not found"
    if backend_name == "sqlite":
        assert (await manager.load_state(DEP)).loaded_from is HOT
    else:
        with pytest.raises(StateNotFoundError):
            await manager.load_state(DEP)
        assert (last_metric(manager).tier, last_metric(manager).success) == (WARM, False)
    # a WARM outage looks like "not found", with a failed WARM metric
    with pytest.raises(StateNotFoundError):
        await manager.load_state("dep-other")
    assert (last_metric(manager).tier, last_metric(manager).success) == (WARM, False)

    # accounting writes raise AccountingPersistenceError carrying the cause
    with pytest.raises(AccountingPersistenceError) as ledger:
        await manager.save_ledger_entry(ledger_entry("e1", T0))
    assert ledger.value.write_kind == "ledger"
    assert ledger.value.deployment_id == DEP
    assert isinstance(ledger.value.cause, StoreClosed)
    with pytest.raises(AccountingPersistenceError) as snap:
        await manager.save_portfolio_snapshot(snapshot(T0, "2"))
    assert snap.value.write_kind == "snapshot"
    with pytest.raises(AccountingPersistenceError) as metrics:
        await manager.save_portfolio_metrics(
            PortfolioMetrics(deployment_id=DEP, initial_value_usd=Decimal("1"), timestamp=T0)
        )
    assert metrics.value.write_kind == "metrics"
    with pytest.raises(AccountingPersistenceError) as gas:
        await manager.sum_ledger_gas_usd(DEP)
    assert gas.value.write_kind == "metrics"
    with pytest.raises(AccountingPersistenceError) as atomic:
        await manager.save_ledger_and_registry(
            ledger=ledger_entry("e2", T0), registry=registry_row("h1")
        )
    assert atomic.value.write_kind == "accounting"
    # an accounting event write is re-raised as is (unlike save_position_event), recorded
    with pytest.raises(StoreClosed):
        await manager.save_accounting_event(accounting_event("a1", "k", T0, "1"))
    assert (last_metric(manager).operation, last_metric(manager).success) == (
        "save_accounting_event",
        False,
    )
    # a state save propagates the store's error unwrapped, with a failed metric
    with pytest.raises(StoreClosed):
        await manager.save_state(StateData(DEP, 2, {"a": 2}))
    assert (last_metric(manager).operation, last_metric(manager).success) == ("save", False)


# =============================================================================
# no WARM tier
# =============================================================================


async def test_without_warm_tier(store_url: str) -> None:
    manager = StateManager(config(store_url, enable_warm=False))  # the URL is not opened
    await manager.initialize()
    try:
        assert manager.enabled_tiers == [HOT]
        assert manager.warm_backend is None
        assert manager.warm_backend_type is None

        # state lives in HOT only: no CAS, the version is the caller's
        saved = await manager.save_state(StateData(DEP, 3, {"a": 1}))
        assert saved.version == 3
        loaded = await manager.load_state(DEP)
        assert (loaded.loaded_from, loaded.version, loaded.state) == (HOT, 3, {"a": 1})
        with pytest.raises(StateNotFoundError):
            await manager.load_state("dep-other")
        assert await manager.delete_state(DEP) is True
        assert await manager.delete_state(DEP) is False

        # accounting writes raise AccountingPersistenceError with their kind
        writes = [
            (manager.save_portfolio_snapshot(snapshot(T0, "1")), AccountingWriteKind.SNAPSHOT),
            (
                manager.save_portfolio_metrics(
                    PortfolioMetrics(deployment_id=DEP, initial_value_usd=Decimal(1), timestamp=T0)
                ),
                AccountingWriteKind.METRICS,
            ),
            (manager.save_ledger_entry(ledger_entry("e1", T0)), AccountingWriteKind.LEDGER),
            (
                manager.save_ledger_and_registry(
                    ledger=ledger_entry("e1", T0), registry=registry_row("h1")
                ),
                AccountingWriteKind.ACCOUNTING,
            ),
        ]
        for call, kind in writes:
            with pytest.raises(AccountingPersistenceError) as caught:
                await call
            assert caught.value.write_kind == kind.value
            assert caught.value.deployment_id == DEP
            assert "No WARM backend configured" in str(caught.value)

        # cutover storage raises CutoverStorageNotSupported
        cutover = [
            manager.get_position_registry_open_rows(DEP),
            manager.find_open_auto_mode_registry_row(
                deployment_id=DEP, chain="c", accounting_category="a", semantic_grouping_key="g"
            ),
            manager.insert_position_registry_row_if_absent(row=registry_row("h1")),
            manager.upsert_migration_state(deployment_id=DEP, primitive="lp", cutover_key="k"),
            manager.get_migration_state(deployment_id=DEP, primitive="lp", cutover_key="k"),
            manager.get_position_events_filtered(
                deployment_id=DEP, position_types=frozenset({"LP"})
            ),
        ]
        for pending in cutover:
            with pytest.raises(CutoverStorageNotSupported):
                await pending

        # the windowed read is loud: RuntimeError, with the metric the reference records
        manager.clear_metrics()
        with pytest.raises(RuntimeError, match="does not support windowed snapshot reads"):
            await manager.get_snapshots_in_window(DEP, None, None)
        m = last_metric(manager)
        assert (m.tier, m.operation, m.success, m.error) == (
            WARM,
            "get_snapshots_in_window",
            False,
            "unsupported backend",
        )
        # get_nav_series is graceful, and records the same "unsupported backend" metric
        assert await manager.get_nav_series(DEP) == ([], False)
        m = last_metric(manager)
        assert (m.operation, m.success, m.error) == ("get_nav_series", False, "unsupported backend")

        # every other read degrades to its empty value
        assert await manager.get_latest_snapshot(DEP) is None
        assert await manager.get_first_snapshot(DEP) is None
        assert await manager.get_snapshots_since(DEP, T0) == []
        assert await manager.get_recent_snapshots(DEP) == []
        assert await manager.get_snapshot_at(DEP, T0) is None
        assert await manager.get_portfolio_metrics(DEP) is None
        assert await manager.cleanup_old_snapshots() == 0
        assert await manager.get_ledger_entries(DEP) == []
        assert await manager.get_ledger_quant_stats(DEP) == LedgerQuantStats()
        assert await manager.get_ledger_anchor_candidates(DEP) == []
        assert await manager.sum_ledger_gas_usd(DEP) == Decimal("0")
        assert await manager.save_clob_order(order("o1", "m1", T0)) is False
        assert await manager.get_clob_order("o1", deployment_id=DEP) is None
        assert await manager.get_open_clob_orders(deployment_id=DEP) == []
        assert (
            await manager.update_clob_order_status("o1", ClobOrderStatus.LIVE, deployment_id=DEP)
            is False
        )
        assert await manager.save_position_event(position_event("pe", "P", "OPEN", T0)) is False
        assert await manager.save_accounting_event(accounting_event("a", "k", T0, "1")) is False
        assert await manager.update_position_attribution("pe", "{}", 1) is False
        assert await manager.get_position_events(DEP) == []
        assert await manager.get_position_history(DEP, "P") == []
        assert await manager.get_position_events_for_dashboard(DEP) == []
        assert await manager.get_accounting_events_for_dashboard(DEP) == []
        assert manager.get_position_events_sync(DEP) == []
        assert manager.get_accounting_events_sync(DEP) == []
        assert manager.has_accounting_event_backend() is False
        assert manager.has_first_snapshot_backend() is False
        assert manager.get_first_snapshot_sync(DEP) is None
    finally:
        await manager.close()


async def test_without_warm_tier_lazy_init_records_nav_series_metric() -> None:
    manager = StateManager(StateManagerConfig(enable_warm=False))
    try:  # no initialize(): the first call initializes, then takes the unsupported path
        assert await manager.get_nav_series(DEP) == ([], False)
        assert manager.is_initialized
        m = last_metric(manager)
        assert (m.operation, m.success, m.error) == ("get_nav_series", False, "unsupported backend")
    finally:
        await manager.close()


# =============================================================================
# ledger
# =============================================================================


async def test_ledger_entries_quant_stats_anchors_and_gas(manager: StateManager) -> None:
    minutes = [T0 + timedelta(minutes=i) for i in range(5)]
    entries = [
        ledger_entry("e0", minutes[0], gas_usd=Decimal("1.5"), tx_hash="0x0"),
        ledger_entry(
            "e1",
            minutes[1],
            gas_usd=Decimal("2.25"),
            tx_hash="0x1",
            price_inputs={"ETH": {"price_usd": "2000"}},
            pre_state={"wallet_balances": {"ETH": "0"}},  # a zero wallet cannot anchor
            post_state={"wallet_balances": {"ETH": "1"}},
        ),
        ledger_entry(
            "e2",
            minutes[2],
            intent_type="LP_OPEN",
            success=False,
            error="reverted",
            price_inputs={"ETH": {"price_usd": "1500"}},
            pre_state={"wallet_balances": {"ETH": "2"}},
            post_state={},
        ),
        ledger_entry("e3", minutes[3], gas_usd=Decimal("0"), cycle_id=""),
        ledger_entry("e4", minutes[4], gas_usd=Decimal("0.000000000000000000000000000001")),
    ]
    for entry in entries:
        assert await manager.save_ledger_entry(entry) is None

    def ids(found: list[LedgerEntry]) -> list[str]:
        return [e.entry_id for e in found]

    assert ids(await manager.get_ledger_entries(DEP)) == ["e4", "e3", "e2", "e1", "e0"]
    assert await manager.get_ledger_entries(DEP) == entries[::-1]  # every field round-trips
    assert ids(await manager.get_ledger_entries(DEP, limit=2)) == ["e4", "e3"]
    assert ids(await manager.get_ledger_entries(DEP, since=minutes[2])) == ["e4", "e3"]  # strict
    assert ids(await manager.get_ledger_entries(DEP, before=minutes[2])) == ["e1", "e0"]  # strict
    assert ids(await manager.get_ledger_entries(DEP, since=minutes[0], before=minutes[3])) == [
        "e2",
        "e1",
    ]
    assert ids(await manager.get_ledger_entries(DEP, intent_type="SWAP")) == [
        "e4",
        "e3",
        "e1",
        "e0",
    ]
    assert ids(await manager.get_ledger_entries(DEP, intent_type="LP_OPEN")) == ["e2"]
    # the cursor filters in SQL: a page before the oldest is empty, not "newest N, filtered"
    assert await manager.get_ledger_entries(DEP, before=minutes[0]) == []
    assert await manager.get_ledger_entries("dep-other") == []

    stats = await manager.get_ledger_quant_stats(DEP)
    assert stats == LedgerQuantStats(
        total=5,
        with_tx_hash=2,
        with_cycle_id=4,
        with_price_inputs=2,
        with_pre_post_state=2,
        with_positive_gas_usd=3,
        gas_usd_sum=Decimal("3.750000000000000000000000000001"),  # exact, beyond 28 digits
        # Chronicle computes the first-action anchor in the store (the reference's store
        # returns None and leaves it to the caller): e2's wallet, 2 ETH x 1500
        first_action_wallet_value_usd=Decimal("3000"),
    )
    assert await manager.get_ledger_quant_stats("dep-other") == LedgerQuantStats()

    # anchor candidates: rows with pre-state and price inputs, oldest first, paged
    anchors = await manager.get_ledger_anchor_candidates(DEP)
    assert ids(anchors) == ["e1", "e2"]
    assert ids(await manager.get_ledger_anchor_candidates(DEP, limit=1)) == ["e1"]
    assert ids(await manager.get_ledger_anchor_candidates(DEP, limit=1, offset=1)) == ["e2"]
    assert await manager.get_ledger_anchor_candidates(DEP, limit=0) == []

    assert await manager.sum_ledger_gas_usd(DEP) == Decimal("3.750000000000000000000000000001")
    assert await manager.sum_ledger_gas_usd("dep-other") == Decimal("0")

    # re-saving an entry id replaces the entry (the reference's INSERT OR REPLACE)
    await manager.save_ledger_entry(ledger_entry("e0", minutes[0], gas_usd=Decimal("10")))
    assert len(await manager.get_ledger_entries(DEP)) == 5
    assert (await manager.get_ledger_quant_stats(DEP)).total == 5
    assert await manager.sum_ledger_gas_usd(DEP) == Decimal("12.250000000000000000000000000001")


# =============================================================================
# atomic ledger + registry, registry reads, migration state
# =============================================================================


async def test_save_ledger_and_registry_atomic(manager: StateManager) -> None:
    assert (
        await manager.save_ledger_and_registry(
            ledger=ledger_entry("L1", T0), registry=registry_row("H1", opened_at_block=10)
        )
        is None
    )
    assert [e.entry_id for e in await manager.get_ledger_entries(DEP)] == ["L1"]
    open_rows = await manager.get_position_registry_open_rows(DEP)
    assert [r["physical_identity_hash"] for r in open_rows] == ["H1"]
    assert open_rows[0]["payload"] == {"identity": "H1"}
    assert open_rows[0]["handle"] is None
    assert await manager.find_open_auto_mode_registry_row(
        deployment_id=DEP,
        chain="arbitrum",
        accounting_category="uniswap_v3_lp",
        semantic_grouping_key="WETH/USDC",
    ) == {"physical_identity_hash": "H1", "opened_tx": "0xH1"}

    # a second open, handle-less row of the same group is refused: nothing lands
    events = await log_count(manager)
    manager.clear_metrics()
    with pytest.raises(RegistryAutoCollisionError) as caught:
        await manager.save_ledger_and_registry(
            ledger=ledger_entry("L2", T0 + timedelta(minutes=1)), registry=registry_row("H2")
        )
    assert not isinstance(caught.value, AccountingPersistenceError)  # passed on unchanged
    assert caught.value.colliding_row is not None
    assert caught.value.colliding_row["existing_physical_identity_hash"] == "H1"
    assert caught.value.colliding_row["opened_tx"] == "0xH1"
    assert caught.value.colliding_row["semantic_grouping_key"] == "WETH/USDC"
    assert "H1" in str(caught.value)
    m = last_metric(manager)
    assert (m.operation, m.success, m.error) == (
        "save_ledger_and_registry",
        False,
        "RegistryAutoCollisionError",
    )
    assert await log_count(manager) == events
    assert [e.entry_id for e in await manager.get_ledger_entries(DEP)] == ["L1"]
    assert [
        r["physical_identity_hash"] for r in await manager.get_position_registry_open_rows(DEP)
    ] == ["H1"]

    # with a handle the same group may hold a second open position
    await manager.save_ledger_and_registry(
        ledger=ledger_entry("L3", T0 + timedelta(minutes=2)),
        registry=registry_row("H3", opened_at_block=20),
        handle=HandleMapping(handle="h-1", deployment_id=DEP, accounting_category="uniswap_v3_lp"),
    )
    rows = await manager.get_position_registry_open_rows(DEP)
    assert [(r["physical_identity_hash"], r["handle"]) for r in rows] == [
        ("H1", None),
        ("H3", "h-1"),
    ]

    # any other refusal is an AccountingPersistenceError (kind accounting): a used handle
    events = await log_count(manager)
    with pytest.raises(AccountingPersistenceError) as handle_taken:
        await manager.save_ledger_and_registry(
            ledger=ledger_entry("L4", T0 + timedelta(minutes=3)),
            registry=registry_row("H4", handle="h-1"),
        )
    assert handle_taken.value.write_kind == "accounting"
    assert isinstance(handle_taken.value.cause, RegistryHandleConflict)
    assert "h-1" in str(handle_taken.value.cause)
    assert await log_count(manager) == events
    assert "L4" not in [e.entry_id for e in await manager.get_ledger_entries(DEP)]

    # closing H1 frees the group for an auto-mode open
    await manager.save_ledger_and_registry(
        ledger=ledger_entry("L5", T0 + timedelta(minutes=4)),
        registry=registry_row("H1", status=RegistryStatus.CLOSED, closed_tx="0xclose"),
    )
    assert (
        await manager.find_open_auto_mode_registry_row(
            deployment_id=DEP,
            chain="arbitrum",
            accounting_category="uniswap_v3_lp",
            semantic_grouping_key="WETH/USDC",
        )
        is None
    )
    await manager.save_ledger_and_registry(
        ledger=ledger_entry("L6", T0 + timedelta(minutes=5)), registry=registry_row("H2")
    )
    assert [e.entry_id for e in await manager.get_ledger_entries(DEP)] == [
        "L6",
        "L5",
        "L3",
        "L1",
    ]


async def test_registry_reads_and_backfill_insert(manager: StateManager) -> None:
    assert await manager.get_position_registry_open_rows(DEP) == []
    await manager.save_ledger_and_registry(
        ledger=ledger_entry("L1", T0), registry=registry_row("A", opened_at_block=5)
    )
    backfilled = registry_row(
        "B", chain="base", primitive="perp", accounting_category="gmx_perp", opened_at_block=3
    )
    assert await manager.insert_position_registry_row_if_absent(row=backfilled) is True
    assert await manager.insert_position_registry_row_if_absent(row=backfilled) is False
    # the key (deployment, chain, primitive, hash) decides, not the other columns
    same_key = registry_row("A", payload={"other": True}, status=RegistryStatus.CLOSED)
    assert await manager.insert_position_registry_row_if_absent(row=same_key) is False
    closed = registry_row("C", status=RegistryStatus.CLOSED, semantic_grouping_key="other")
    assert await manager.insert_position_registry_row_if_absent(row=closed) is True

    rows = await manager.get_position_registry_open_rows(DEP)
    assert [r["physical_identity_hash"] for r in rows] == ["B", "A"]  # by opened_at_block
    assert rows[1]["payload"] == {"identity": "A"}  # the backfill did not touch A
    assert set(rows[0]) >= {
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
    }
    assert rows[0]["status"] == "open"

    def hashes(found: list[dict[str, Any]]) -> list[str]:
        return [r["physical_identity_hash"] for r in found]

    assert hashes(await manager.get_position_registry_open_rows(DEP, chain="base")) == ["B"]
    assert hashes(await manager.get_position_registry_open_rows(DEP, primitive="lp")) == ["A"]
    assert hashes(
        await manager.get_position_registry_open_rows(DEP, accounting_category="gmx_perp")
    ) == ["B"]
    assert await manager.get_position_registry_open_rows(DEP, chain="nowhere") == []
    assert await manager.get_position_registry_open_rows("dep-other") == []

    assert await manager.find_open_auto_mode_registry_row(
        deployment_id=DEP,
        chain="base",
        accounting_category="gmx_perp",
        semantic_grouping_key="WETH/USDC",
    ) == {"physical_identity_hash": "B", "opened_tx": "0xB"}
    assert (
        await manager.find_open_auto_mode_registry_row(
            deployment_id=DEP,
            chain="base",
            accounting_category="gmx_perp",
            semantic_grouping_key="x",
        )
        is None
    )


async def test_migration_state(manager: StateManager) -> None:
    key = {"deployment_id": DEP, "primitive": "lp", "cutover_key": "registry-v1"}
    assert await manager.get_migration_state(**key) is None
    assert await manager.upsert_migration_state(**key) is None
    row = await manager.get_migration_state(**key)
    assert row is not None
    assert (row.deployment_id, row.primitive, row.cutover_key) == (DEP, "lp", "registry-v1")
    assert row.position_registry_backfill_complete is False
    assert (row.backfill_started_at, row.backfill_completed_at) == (None, None)
    assert (row.backfill_source_table, row.backfill_reader_version) == ("position_events", 1)
    assert (row.rows_synthesized, row.rows_skipped_already_present, row.notes) == (0, 0, {})
    assert row.created_at == row.updated_at

    events = await log_count(manager, DEP)
    await manager.upsert_migration_state(**key)  # idempotent: the row is left as it is
    assert await manager.get_migration_state(**key) == row
    assert await log_count(manager, DEP) == events
    assert await manager.get_migration_state(**{**key, "cutover_key": "other"}) is None
    assert await manager.get_migration_state(**{**key, "deployment_id": "dep-other"}) is None


# =============================================================================
# position events
# =============================================================================


async def test_position_events(manager: StateManager) -> None:
    at = [T0 + timedelta(minutes=i) for i in range(4)]
    events = [
        position_event("pe1", "P1", "OPEN", at[0]),
        position_event("pe2", "P1", "COLLECT_FEES", at[1]),
        position_event("pe3", "P2", "OPEN", at[2], position_type="PERP"),
        position_event("pe4", "P1", "CLOSE", at[3]),
    ]
    for event in events:
        assert await manager.save_position_event(event) is True
    # the first write of an id wins; a repeat is accepted and ignored
    changed = msgspec.structs.replace(events[0], value_usd=Decimal("999"), position_id="P9")
    assert await manager.save_position_event(changed) is True

    def ids(found: list[Any]) -> list[str]:
        return [e.position_event_id for e in found]

    newest_first = await manager.get_position_events(DEP)
    assert ids(newest_first) == ["pe4", "pe3", "pe2", "pe1"]
    assert newest_first[-1] == events[0]  # typed records, as saved (first write)
    assert ids(await manager.get_position_events(DEP, event_type="OPEN")) == ["pe3", "pe1"]
    assert ids(await manager.get_position_events(DEP, limit=2)) == ["pe4", "pe3"]
    assert await manager.get_position_events("dep-other") == []

    assert ids(await manager.get_position_history(DEP, "P1")) == ["pe1", "pe2", "pe4"]
    assert ids(await manager.get_position_history(DEP, "P2")) == ["pe3"]
    assert await manager.get_position_history(DEP, "P9") == []

    filtered = await manager.get_position_events_filtered(
        deployment_id=DEP, position_types=frozenset({"LP"})
    )
    assert [r["id"] for r in filtered] == ["pe1", "pe2", "pe4"]
    both = await manager.get_position_events_filtered(
        deployment_id=DEP, position_types=frozenset({"LP", "PERP"})
    )
    assert [r["id"] for r in both] == ["pe1", "pe2", "pe4", "pe3"]  # position, time, id
    assert (
        await manager.get_position_events_filtered(deployment_id=DEP, position_types=frozenset())
        == []
    )

    # the dict readers: oldest first, legacy columns, ISO timestamps
    rows = manager.get_position_events_sync(DEP)
    assert [r["id"] for r in rows] == ["pe1", "pe2", "pe3", "pe4"]
    assert rows[0]["timestamp"] == at[0].isoformat()
    assert (rows[0]["event_type"], rows[0]["position_type"], rows[0]["value_usd"]) == (
        "OPEN",
        "LP",
        "100.5",
    )
    assert [r["id"] for r in manager.get_position_events_sync(DEP, position_id="P1")] == [
        "pe1",
        "pe2",
        "pe4",
    ]
    assert [r["id"] for r in manager.get_position_events_sync(DEP, position_type="PERP")] == ["pe3"]
    assert [r["id"] for r in manager.get_position_events_sync(DEP, event_type="CLOSE")] == ["pe4"]
    assert manager.get_position_events_sync("dep-other") == []
    assert await manager.get_position_events_for_dashboard(DEP) == rows
    assert await manager.get_position_events_for_dashboard(
        DEP, position_id="P1", event_type="OPEN"
    ) == manager.get_position_events_sync(DEP, position_id="P1", event_type="OPEN")

    # attribution: a partial update of one event
    attribution = json.dumps({"fees_usd": "1.5", "il_usd": "-0.2"})
    assert await manager.update_position_attribution("pe1", attribution, 2) is True
    assert await manager.update_position_attribution("pe1", attribution, 2, deployment_id=DEP)
    assert await manager.update_position_attribution("nope", attribution, 2) is False
    # the attribution must be a JSON object: anything else is refused, nothing logged
    before = await log_count(manager, DEP)
    manager.clear_metrics()
    for text in ("[1, 2]", '"text"', "not json"):
        assert await manager.update_position_attribution("pe1", text, 9) is False
        m = last_metric(manager)
        assert (m.operation, m.success) == ("update_position_attribution", False)
    assert await log_count(manager, DEP) == before
    assert (
        await manager.update_position_attribution("pe1", attribution, 3, deployment_id="dep-x")
        is False
    )
    row = manager.get_position_events_sync(DEP, position_id="P1", event_type="OPEN")[0]
    assert json.loads(row["attribution_json"]) == {"fees_usd": "1.5", "il_usd": "-0.2"}
    assert row["attribution_version"] == 2
    history = await manager.get_position_history(DEP, "P1")
    assert (history[0].attribution, history[0].attribution_version) == (
        {"fees_usd": "1.5", "il_usd": "-0.2"},
        2,
    )
    assert history[0].value_usd == Decimal("100.5")  # the rest of the event is unchanged


# =============================================================================
# accounting events
# =============================================================================


async def test_accounting_events(manager: StateManager) -> None:
    # Chronicle serves accounting events on both backends (the reference's
    # PostgresStore lacked the sync read, so its probe said False there)
    assert manager.has_accounting_event_backend() is True
    assert manager.get_accounting_events_sync(DEP) == []

    at = [T0 + timedelta(minutes=i) for i in range(3)]
    saved = [
        accounting_event("a1", "K1", at[0], "1"),
        accounting_event("a2", "K2", at[1], "2"),
        accounting_event("a3", "K1", at[2], "3"),
    ]
    for event in saved:
        assert await manager.save_accounting_event(event) is True

    rows = manager.get_accounting_events_sync(DEP)
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"]  # oldest first, no limit
    first = rows[0]
    assert list(first) == [
        "id",
        "deployment_id",
        "cycle_id",
        "execution_mode",
        "timestamp",
        "chain",
        "protocol",
        "wallet_address",
        "event_type",
        "position_key",
        "ledger_entry_id",
        "tx_hash",
        "confidence",
        "payload_json",
        "schema_version",
        "position_reference",
    ]
    assert (first["timestamp"], first["event_type"], first["position_key"]) == (
        at[0].isoformat(),
        "SUPPLY",
        "K1",
    )
    assert json.loads(first["payload_json"]) == {"amount": "1"}
    assert first["schema_version"] == 1
    assert [r["id"] for r in manager.get_accounting_events_sync(DEP, "K1")] == ["a1", "a3"]
    assert manager.get_accounting_events_sync(DEP, "K9") == []
    assert manager.get_accounting_events_sync("dep-other") == []
    assert await manager.get_accounting_events_for_dashboard(DEP) == rows
    assert await manager.get_accounting_events_for_dashboard(
        DEP, "K1"
    ) == manager.get_accounting_events_sync(DEP, "K1")

    # re-saving an id replaces the event (deterministic ids: an idempotent overwrite)
    assert await manager.save_accounting_event(accounting_event("a2", "K2", at[1], "20"))
    rows = manager.get_accounting_events_sync(DEP)
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"]
    assert json.loads(rows[1]["payload_json"]) == {"amount": "20"}


# =============================================================================
# two processes on PostgreSQL: HOT invalidated through LISTEN/NOTIFY
# =============================================================================

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from statemanager import StateData, StateManager, StateManagerConfig

    async def main(url, dep):
        manager = StateManager(StateManagerConfig(database_url=url))
        await manager.initialize()
        try:
            current = await manager.load_state(dep)
            saved = await manager.save_state(
                StateData(dep, current.version + 1, {"by": "B"}), expected_version=current.version
            )
            print(saved.version, flush=True)
        finally:
            await manager.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.postgres_only
async def test_hot_invalidated_across_processes(pg_dsn: str, pg_schema: str) -> None:
    url = with_params(pg_dsn, schema=pg_schema)
    manager = StateManager(StateManagerConfig(database_url=url))
    await manager.initialize()
    try:
        await manager.save_state(StateData(DEP, 1, {"by": "A"}))
        before = await manager.load_state(DEP)
        assert (before.loaded_from, before.version) == (HOT, 1)

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            url,
            DEP,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, err.decode()
        assert out.decode().strip() == "2"

        deadline = time.monotonic() + 5.0
        loaded = await manager.load_state(DEP)
        while loaded.version != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            loaded = await manager.load_state(DEP)
        assert (loaded.version, loaded.state) == (2, {"by": "B"}), "HOT was never invalidated"
        assert loaded.loaded_from is WARM  # the first load after the invalidation
        assert (await manager.load_state(DEP)).loaded_from is HOT
    finally:
        await manager.close()

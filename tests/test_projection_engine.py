"""The projection engine: inline, asynchronous, rebuilds, version changes, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from conftest import settled

import eventstore
from eventstore import EventStore, NewEvent, RecordedEvent, Statement
from projections.engine import ProjectionEngine
from projections.errors import ProjectionOutdated
from projections.events import DomainEvent, LedgerEntry, LedgerEntryRecorded, StateSaved
from projections.models.ledger import LedgerProjection, LedgerQuantStats
from projections.models.state import StateProjection

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def state(dep: str, version: int, **values: Any) -> StateSaved:
    return StateSaved(
        deployment_id=dep,
        version=version,
        state=values,
        checksum=f"c{version}",
        created_at=T0 + timedelta(minutes=version),
    )


def ledger(
    dep: str, entry_id: str, minute: int, gas: str | None, **extra: Any
) -> LedgerEntryRecorded:
    return LedgerEntryRecorded(
        entry=LedgerEntry(
            entry_id=entry_id,
            deployment_id=dep,
            cycle_id=extra.pop("cycle_id", f"cycle-{minute}"),
            timestamp=T0 + timedelta(minutes=minute),
            intent_type=extra.pop("intent_type", "SWAP"),
            gas_usd=None if gas is None else Decimal(gas),
            **extra,
        )
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [StateProjection, LedgerProjection])
    await engine.start()
    yield engine


async def rows(store: EventStore, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await store.query(f"SELECT * FROM {table} ORDER BY 1, 2")]


async def test_inline_projections_read_their_writes(engine: ProjectionEngine) -> None:
    await engine.append("dep", "state", [state("dep", 1, nav="10.5")], expected_version=0)
    current = await engine.live("state").get(engine.store, "dep")  # type: ignore[attr-defined]
    assert current is not None and current.version == 1 and current.state == {"nav": "10.5"}
    await engine.append("dep", "state", [state("dep", 2, nav="11")], expected_version=1)
    current = await engine.live("state").get(engine.store, "dep")  # type: ignore[attr-defined]
    assert current.version == 2 and current.created_at == T0 + timedelta(minutes=1)


async def test_quant_stats_follow_entries_and_replacements(engine: ProjectionEngine) -> None:
    led: Any = engine.live("ledger")
    assert await led.quant_stats(engine.store, "dep") == LedgerQuantStats()
    pre = {"wallet_balances": {"USDC": "100", "WETH": "0.5"}}
    prices = {"USDC": {"price_usd": "1"}, "WETH": {"price_usd": "3000"}}
    await engine.append(
        "dep",
        "ledger",
        [
            ledger(
                "dep",
                "b",
                5,
                "0.10",
                tx_hash="0xb",
                pre_state=pre,
                price_inputs=prices,
                post_state={},
            ),
            ledger("dep", "a", 9, "0.000000000000000001", tx_hash="0xa"),
            ledger("dep", "c", 7, None, cycle_id="", success=False, error="reverted"),
        ],
    )
    stats = await led.quant_stats(engine.store, "dep")
    assert stats == LedgerQuantStats(
        total=3,
        with_tx_hash=2,
        with_cycle_id=2,
        with_price_inputs=1,
        with_pre_post_state=1,
        with_positive_gas_usd=2,
        gas_usd_sum=Decimal("0.100000000000000001"),
        first_action_wallet_value_usd=Decimal("1600.0"),
    )
    # an earlier action with a priced wallet becomes the anchor; replacing "a" adjusts sums
    await engine.append(
        "dep",
        "ledger",
        [
            ledger(
                "dep",
                "z",
                1,
                "1",
                pre_state={"wallet_balances": {"USDC": "7"}},
                price_inputs={"USDC": {"price_usd": "1"}},
            ),
            ledger("dep", "a", 9, "2", tx_hash=""),
        ],
    )
    stats = await led.quant_stats(engine.store, "dep")
    assert (stats.total, stats.with_tx_hash, stats.gas_usd_sum) == (4, 1, Decimal("3.10"))
    assert stats.first_action_wallet_value_usd == Decimal("7")
    entries = await led.entries(engine.store, "dep", limit=10)
    assert [e.entry_id for e in entries] == ["a", "c", "b", "z"]
    assert [
        e.entry_id for e in await led.entries(engine.store, "dep", before=entries[0].timestamp)
    ] == ["c", "b", "z"]
    assert [e.entry_id for e in await led.anchor_candidates(engine.store, "dep")] == ["z", "b"]
    assert await led.gas_usd_sum(engine.store, "dep") == Decimal("3.10")


async def fill(engine: ProjectionEngine, n: int = 30) -> None:
    for i in range(1, n + 1):
        dep = f"dep-{i % 3}"
        await engine.append(dep, "state", [state(dep, i, i=i)])
        await engine.append(dep, "ledger", [ledger(dep, f"e{i % 11}", i, f"0.{i}")])


async def snapshot_rows(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    return {t: await rows(store, t) for t in ("rm_state", "rm_ledger", "rm_ledger_stats")}


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    await fill(engine)
    before = await snapshot_rows(engine.store)
    reports = await engine.rebuild(batch_size=7)
    assert {r.projection: r.events for r in reports} == {"ledger": 30, "state": 30}
    assert await snapshot_rows(engine.store) == before
    catalog = await engine.catalog()
    assert catalog["state"].generation == 2 and catalog["state"].status == "live"


async def test_an_interrupted_rebuild_resumes(engine: ProjectionEngine) -> None:
    await fill(engine)
    before = await snapshot_rows(engine.store)

    def stop_midway(name: str, done: int) -> None:
        if done >= 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await engine.rebuild("ledger", batch_size=7, progress=stop_midway)
    assert (await engine.catalog())["ledger"].status == "rebuilding"
    assert await snapshot_rows(engine.store) == before  # live tables kept answering
    (report,) = await engine.rebuild("ledger", batch_size=7)
    assert report.resumed_from > 0 and report.events == 16
    assert await snapshot_rows(engine.store) == before


async def test_rebuild_one_deployment(engine: ProjectionEngine) -> None:
    await fill(engine)
    before = await snapshot_rows(engine.store)
    await engine.store.execute([Statement("DELETE FROM rm_ledger WHERE deployment_id = 'dep-1'")])
    assert await snapshot_rows(engine.store) != before
    (report,) = await engine.rebuild("ledger", deployment_id="dep-1", batch_size=4)
    assert report.events == 10
    assert await snapshot_rows(engine.store) == before


async def test_a_changed_version_is_rebuilt_or_refused(store: EventStore) -> None:
    first = ProjectionEngine(store, [StateProjection])
    await first.start()
    await first.append("dep", "state", [state("dep", 1, a=1)])

    class StateV2(StateProjection):
        version = StateProjection.version + 1

    refusing = ProjectionEngine(store, [StateV2], on_version_change="refuse")
    await refusing.start()
    with pytest.raises(ProjectionOutdated, match="chronicle rebuild --projection state"):
        refusing.live("state")
    with pytest.raises(ProjectionOutdated):
        await refusing.append("dep", "state", [state("dep", 2)])
    rebuilding = ProjectionEngine(store, [StateV2])
    await rebuilding.start()
    assert (await rebuilding.catalog())["state"].version == StateProjection.version + 1
    current = await rebuilding.live("state").get(store, "dep")  # type: ignore[attr-defined]
    assert current.state == {"a": 1}


async def test_a_projection_added_later_is_built_from_the_log(store: EventStore) -> None:
    only_state = ProjectionEngine(store, [StateProjection])
    await only_state.start()
    await only_state.append("dep", "ledger", [ledger("dep", "x", 1, "0.5")])
    both = ProjectionEngine(store, [StateProjection, LedgerProjection])
    await both.start()
    stats = await both.live("ledger").quant_stats(store, "dep")  # type: ignore[attr-defined]
    assert stats.total == 1 and stats.gas_usd_sum == Decimal("0.5")


async def test_asynchronous_projection_catches_up(store: EventStore) -> None:
    engine = ProjectionEngine(store, [StateProjection, LedgerProjection], run_async=["ledger"])
    await engine.start()
    await fill(engine, 12)
    led: Any = engine.live("ledger")
    assert (await led.quant_stats(store, "dep-1")).total == 0
    await settled(store)
    assert await engine.catch_up(batch_size=5) == 12
    assert (await led.quant_stats(store, "dep-1")).total == 4
    assert (await engine.catalog())["ledger"].checkpoint == (await store.read_all(0, 100))[
        -1
    ].position
    assert await engine.catch_up() == 0  # applied exactly once


class Fragile(StateProjection):
    """Fails on one particular state, to show a failure stops only this projection."""

    name = "fragile"
    tables = (StateProjection.tables[0].__class__("fragile", StateProjection.tables[0].columns),)

    def prepare(self) -> None:
        self.t["state"] = self.t["fragile"]
        super().prepare()

    def apply(self, event: DomainEvent, recorded: RecordedEvent) -> Iterable[Statement]:
        if isinstance(event, StateSaved) and event.state.get("poison"):
            raise ValueError("cannot digest this state")
        return super().apply(event, recorded)


async def test_a_failing_event_stops_only_its_projection(store: EventStore) -> None:
    engine = ProjectionEngine(store, [StateProjection, Fragile], run_async=["fragile", "state"])
    await engine.start()
    await engine.append("dep", "state", [state("dep", 1)])
    await engine.append("dep", "state", [state("dep", 2, poison=True)])
    await engine.append("dep", "state", [state("dep", 3)])
    await settled(store)
    await engine.catch_up(batch_size=10)
    catalog = await engine.catalog()
    assert catalog["state"].status == "live"
    assert catalog["fragile"].status == "failed"
    poisoned = (await store.read_all(0, 10))[1]
    assert f"position {poisoned.position} (StateSaved" in (catalog["fragile"].error or "")
    assert catalog["fragile"].checkpoint == (await store.read_all(0, 10))[0].position
    assert (await engine.live("state").get(store, "dep")).version == 3  # type: ignore[attr-defined]


async def test_unhandled_event_types_are_counted(engine: ProjectionEngine) -> None:
    await engine.store.append("dep", "misc", [NewEvent("SomethingElse", {}), NewEvent("Other", {})])
    await engine.append("dep", "state", [state("dep", 1)])
    assert await engine.unhandled_counts() == {"Other": 1, "SomethingElse": 1}
    (report,) = await engine.rebuild("state")
    assert report.events == 1


async def test_unknown_projection_names_are_refused(engine: ProjectionEngine) -> None:
    with pytest.raises(KeyError):
        await engine.rebuild("nope")
    with pytest.raises(eventstore.InvalidIdentifier):
        await engine.rebuild("state", deployment_id="")


async def test_a_second_start_rebuilds_nothing(engine: ProjectionEngine) -> None:
    """Inline projections never move their checkpoint: a restart must not read that
    as "never built" and replay the whole log (it did, found by the verify work)."""
    await fill(engine)
    catalog = await engine.catalog()
    again = ProjectionEngine(engine.store, [StateProjection, LedgerProjection])
    await again.start()
    assert await again.catalog() == catalog


async def test_a_projection_added_to_an_existing_log_is_built_on_start(store: EventStore) -> None:
    first = ProjectionEngine(store, [StateProjection])
    await first.start()
    await fill(first)
    later = ProjectionEngine(store, [StateProjection, LedgerProjection])
    await later.start()
    catalog = await later.catalog()
    assert catalog["ledger"].status == "live" and catalog["ledger"].generation == 2
    assert catalog["state"].generation == 1  # untouched
    stats = await later.live("ledger").quant_stats(store, "dep-1")  # type: ignore[attr-defined]
    assert stats.total == len({f"e{i % 11}" for i in range(1, 31) if i % 3 == 1})

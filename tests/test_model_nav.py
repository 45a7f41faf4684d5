"""The NAV-series read model: portfolio snapshots, their reads, re-records and retention."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from conftest import settled

from eventstore import EventStore, Statement
from projections.engine import ProjectionEngine
from projections.errors import ProjectionWriteRefused
from projections.events import (
    PortfolioSnapshotRecorded,
    SnapshotRetentionApplied,
    StateSaved,
    ValueConfidence,
)
from projections.models.nav import NavProjection, Snapshot, SnapshotIdConflict

T0 = datetime(2026, 5, 9, tzinfo=UTC)
SNAPS = "rm_portfolio_snapshots"
STATS = "rm_portfolio_snapshot_stats"


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def snap(
    dep: str,
    minute: int,
    total: str = "1000",
    *,
    sid: int | None = None,
    created: datetime | None = None,
    **extra: Any,
) -> PortfolioSnapshotRecorded:
    return PortfolioSnapshotRecorded(
        deployment_id=dep,
        snapshot_id=sid,
        timestamp=at(minute),
        total_value_usd=Decimal(total),
        available_cash_usd=extra.pop("cash", Decimal("0")),
        positions=extra.pop("positions", []),
        created_at=created or at(minute) + timedelta(seconds=1),
        **extra,
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [NavProjection])
    await engine.start()
    yield engine


def nav(engine: ProjectionEngine) -> NavProjection:
    projection = engine.live("nav")
    assert isinstance(projection, NavProjection)
    return projection


async def record(engine: ProjectionEngine, *events: PortfolioSnapshotRecorded) -> None:
    for event in events:
        await engine.append(event.deployment_id, "snapshots", [event])


async def table(store: EventStore, name: str, order: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await store.query(f"SELECT * FROM {name} ORDER BY {order}")]


def ids(snapshots: Sequence[Snapshot]) -> list[int]:
    return [s.snapshot_id for s in snapshots]


# -- empty deployments --------------------------------------------------------------


async def test_an_unknown_deployment_reads_empty(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    await record(engine, snap("other", 1, sid=1))
    assert await n.latest(store, "dep") is None
    assert await n.first(store, "dep") is None
    assert await n.at(store, "dep", at(5)) is None
    assert await n.since(store, "dep", T0) == []
    assert await n.recent(store, "dep") == []
    assert await n.in_window(store, "dep", None, None) == ([], False)
    assert await n.nav_series(store, "dep") == ([], False)
    assert await n.nav_series(store, "dep", since=(T0, 0)) == ([], False)
    assert await n.max_snapshot_id(store, "dep") == 0
    assert await n.count(store, "dep") == 0


# -- exact values -------------------------------------------------------------------


async def test_every_column_round_trips_exactly(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    positions = {
        "schema_version": 1,
        "positions": [
            {
                "position_type": "LP",
                "value_usd": "5043.31663500",
                "details": {"fees": "0E-7", "drift": "-3.1782230750000000000000E-8"},
                "liquidity": 1115489085710619414828654646022418608911583149704,
            }
        ],
        "metadata": {"capital_flows": '{"deposits": "1.0"}'},
        "reconciliation": {},
    }
    prices = {"arbitrum:0xaf88": {"decimals": 6, "price_usd": "0.99990000", "symbol": "USDC"}}
    balances = [
        {
            "symbol": "USDC",
            "balance": "1.0",
            "value_usd": "1.0",
            "address": "0xA",
            "price_usd": None,
        }
    ]
    event = PortfolioSnapshotRecorded(
        deployment_id="dep",
        snapshot_id=4,
        cycle_id="cycle-1",
        execution_mode="live",
        timestamp=at(0),
        iteration_number=5,
        total_value_usd=Decimal("5043.31663500"),
        available_cash_usd=Decimal("10.00616589969173248633700042"),
        deployed_capital_usd=Decimal("0E-24"),
        wallet_total_value_usd=Decimal("1.0"),
        value_confidence=ValueConfidence.ESTIMATED,
        positions=positions,
        token_prices=prices,
        wallet_balances=balances,
        chain="arbitrum",
        created_at=at(0) + timedelta(microseconds=343576),
    )
    await record(engine, event)
    expected = Snapshot(
        deployment_id="dep",
        snapshot_id=4,
        cycle_id="cycle-1",
        execution_mode="live",
        timestamp=at(0),
        iteration_number=5,
        total_value_usd=Decimal("5043.31663500"),
        available_cash_usd=Decimal("10.00616589969173248633700042"),
        deployed_capital_usd=Decimal("0E-24"),
        wallet_total_value_usd=Decimal("1.0"),
        value_confidence=ValueConfidence.ESTIMATED,
        positions=positions,
        token_prices=prices,
        wallet_balances=balances,
        chain="arbitrum",
        created_at=at(0) + timedelta(microseconds=343576),
    )
    latest = await n.latest(store, "dep")
    assert latest == expected
    assert latest is not None and latest.timestamp.tzinfo is not None
    assert str(latest.deployed_capital_usd) == "0E-24"
    assert str(latest.total_value_usd) == "5043.31663500"
    for read in (
        await n.first(store, "dep"),
        await n.at(store, "dep", at(0)),
        *(await n.since(store, "dep", at(0))),
        *(await n.recent(store, "dep")),
    ):
        assert read == expected
    # the raw rows carry the stored text: exact digits, JSON still to be parsed
    (window_row,), _ = await n.in_window(store, "dep", None, None)
    assert window_row[:3] == (at(0), "5043.31663500", "ESTIMATED")
    assert json.loads(window_row[3]) == positions
    (series_row,), _ = await n.nav_series(store, "dep")
    assert series_row[:4] == (at(0), "5043.31663500", "10.00616589969173248633700042", 4)
    assert json.loads(series_row[4]) == positions and series_row[5] == "ESTIMATED"

    await record(engine, snap("bare", 0, sid=1, positions=[], chain=None))
    bare = await n.latest(store, "bare")
    assert bare is not None and bare.positions == [] and bare.chain is None
    assert (bare.token_prices, bare.wallet_balances) == ({}, [])
    assert bare.value_confidence is ValueConfidence.HIGH


# -- ends, points, pages ----------------------------------------------------------------


async def test_reads_order_by_timestamp_not_by_write_order(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    # written out of time order; ids follow write order, as a writer assigns them
    await record(
        engine,
        snap("dep", 30, "3", sid=1),
        snap("dep", 10, "1", sid=2),
        snap("dep", 40, "4", sid=3),
        snap("dep", 20, "2", sid=4),
        snap("other", 50, "9", sid=1),
        snap("other", 5, "8", sid=2),
    )
    latest, first = await n.latest(store, "dep"), await n.first(store, "dep")
    assert latest is not None and (latest.timestamp, latest.snapshot_id) == (at(40), 3)
    assert first is not None and (first.timestamp, first.snapshot_id) == (at(10), 2)
    # closest at or before: inclusive at a snapshot, the earlier one between two
    point = await n.at(store, "dep", at(20))
    assert point is not None and point.total_value_usd == Decimal("2")
    point = await n.at(store, "dep", at(29) + timedelta(seconds=59))
    assert point is not None and point.total_value_usd == Decimal("2")
    point = await n.at(store, "dep", at(1000))
    assert point is not None and point.snapshot_id == 3
    assert await n.at(store, "dep", at(10) - timedelta(microseconds=1)) is None

    # since: inclusive, oldest first, limited
    assert ids(await n.since(store, "dep", at(20))) == [4, 1, 3]
    assert ids(await n.since(store, "dep", at(20) + timedelta(microseconds=1))) == [1, 3]
    assert ids(await n.since(store, "dep", at(0), limit=2)) == [2, 4]
    assert await n.since(store, "dep", at(41)) == []
    assert await n.since(store, "dep", at(0), limit=0) == []
    assert await n.since(store, "dep", at(0), limit=-1) == []

    # recent: the newest n, oldest first
    assert ids(await n.recent(store, "dep", limit=2)) == [1, 3]
    assert ids(await n.recent(store, "dep")) == [2, 4, 1, 3]
    assert ids(await n.recent(store, "dep", limit=1)) == [3]
    assert await n.recent(store, "dep", limit=0) == []
    assert await n.recent(store, "dep", limit=-5) == []
    assert await n.count(store, "dep") == 4
    assert await n.max_snapshot_id(store, "dep") == 4


async def test_window_bounds_and_truncation(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    await record(engine, *(snap("dep", m, str(m), sid=100 - m) for m in range(10)))
    await record(engine, *(snap("other", m, "7", sid=m + 1) for m in range(10)))

    def minutes(rows: Sequence[tuple[Any, ...]]) -> list[int]:
        return [int((r[0] - T0).total_seconds() // 60) for r in rows]

    rows, truncated = await n.in_window(store, "dep", at(2), at(5))
    assert (minutes(rows), truncated) == ([2, 3, 4, 5], False)  # both ends inclusive
    assert rows[0] == (at(2), "2", "HIGH", "[]")
    rows, _ = await n.in_window(store, "dep", at(2) + timedelta(microseconds=1), at(5))
    assert minutes(rows) == [3, 4, 5]
    rows, _ = await n.in_window(store, "dep", None, at(1))
    assert minutes(rows) == [0, 1]
    rows, _ = await n.in_window(store, "dep", at(8), None)
    assert minutes(rows) == [8, 9]
    rows, _ = await n.in_window(store, "dep", at(4), at(4))
    assert minutes(rows) == [4]
    assert await n.in_window(store, "dep", at(5), at(4)) == ([], False)
    # a cap keeps the newest rows of the window, returned oldest first
    rows, truncated = await n.in_window(store, "dep", at(2), at(7), scan_cap=3)
    assert (minutes(rows), truncated) == ([5, 6, 7], True)
    rows, truncated = await n.in_window(store, "dep", at(2), at(7), scan_cap=6)
    assert (minutes(rows), truncated) == ([2, 3, 4, 5, 6, 7], False)
    rows, truncated = await n.in_window(store, "dep", None, None, scan_cap=9)
    assert (minutes(rows), truncated) == (list(range(1, 10)), True)
    for cap in (0, -1):
        with pytest.raises(ValueError, match=f"scan_cap must be positive, got {cap}"):
            await n.in_window(store, "dep", None, None, scan_cap=cap)


async def test_nav_series_pages_through_the_series(engine: ProjectionEngine) -> None:
    """~50 snapshots over two deployments that share timestamps, written shuffled."""
    n, store = nav(engine), engine.store
    plan = [("dep-a", m) for m in range(30)] + [("dep-b", m) for m in range(20)]
    random.Random(7).shuffle(plan)
    for number, (dep, minute) in enumerate(plan):
        # the writer assigns max + 1; now and then an event leaves the id to the model
        sid = None if number % 9 == 4 else await n.max_snapshot_id(store, dep) + 1
        await record(engine, snap(dep, minute, f"{minute}.{number}", sid=sid))
    assert await n.count(store, "dep-a") == 30 and await n.count(store, "dep-b") == 20

    full, truncated = await n.nav_series(store, "dep-a")
    assert not truncated and len(full) == 30
    assert [r[0] for r in full] == [at(m) for m in range(30)]
    assert len({r[3] for r in full}) == 30  # ids unique per deployment
    for row in full:
        assert len(row) == 6 and row[0].tzinfo is not None
        assert isinstance(row[1], str) and isinstance(row[2], str)
        assert isinstance(row[3], int) and row[4] == "[]" and row[5] == "HIGH"
    assert [r[3] for r in full] == [s.snapshot_id for s in await n.recent(store, "dep-a")]

    # full mode keeps the newest rows
    newest, truncated = await n.nav_series(store, "dep-a", scan_cap=7)
    assert (newest, truncated) == (full[-7:], True)
    assert await n.nav_series(store, "dep-a", scan_cap=30) == (full, False)
    assert await n.nav_series(store, "dep-a", scan_cap=29) == (full[1:], True)

    # incremental mode: strictly after the cursor, oldest first, in pages
    pages: list[bool] = []
    collected: list[tuple[Any, ...]] = []
    cursor = (T0 - timedelta(days=1), 0)
    while True:
        page, more = await n.nav_series(store, "dep-a", since=cursor, scan_cap=7)
        collected.extend(page)
        pages.append(more)
        cursor = (page[-1][0], page[-1][3])
        if not more:
            break
    assert collected == full
    assert pages == [True, True, True, True, False]
    assert await n.nav_series(store, "dep-a", since=cursor, scan_cap=2) == ([], False)
    assert await n.nav_series(store, "dep-a", since=(full[0][0], 0), scan_cap=30) == (
        full,
        False,
    )
    assert await n.nav_series(store, "dep-a", since=(full[0][0], 0), scan_cap=29) == (
        full[:29],
        True,
    )

    # the cursor is (timestamp, id): same timestamp, lower id -> the row comes back
    ts10, id10 = full[10][0], full[10][3]
    after, _ = await n.nav_series(store, "dep-a", since=(ts10, id10 - 1), scan_cap=2)
    assert after == full[10:12]
    after, _ = await n.nav_series(store, "dep-a", since=(ts10, id10), scan_cap=2)
    assert after == full[11:13]
    after, _ = await n.nav_series(store, "dep-a", since=(ts10, id10 + 1000), scan_cap=2)
    assert after == full[11:13]
    after, _ = await n.nav_series(store, "dep-a", since=(ts10 - timedelta(seconds=1), 10**9))
    assert after == full[10:]

    # the other deployment's rows at the same timestamps never leak in
    series_b, _ = await n.nav_series(store, "dep-b")
    assert [r[0] for r in series_b] == [at(m) for m in range(20)]
    assert all(r[1].startswith(f"{m}.") for r, m in zip(series_b, range(20), strict=True))

    # new points show up after the last cursor, and only they
    last = (full[-1][0], full[-1][3])
    await record(engine, snap("dep-a", 31, "31", sid=await n.max_snapshot_id(store, "dep-a") + 1))
    fresh, more = await n.nav_series(store, "dep-a", since=last)
    assert [r[0] for r in fresh] == [at(31)] and not more
    for cap in (0, -3):
        with pytest.raises(ValueError, match="scan_cap must be positive"):
            await n.nav_series(store, "dep-a", since=last, scan_cap=cap)


# -- ids --------------------------------------------------------------------------------


async def test_re_recording_a_timestamp_keeps_its_id(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    await record(
        engine,
        snap("dep", 1, "100", sid=5, cycle_id="cycle-1", execution_mode="live"),
        snap("dep", 2, "200", sid=6),
        snap("dep", 3, "300", sid=7, cycle_id=""),
    )
    cursor = (at(1), 5)
    # the writer did not know minute 1 existed and assigned the next id
    await record(
        engine,
        snap(
            "dep",
            1,
            "101.50",
            sid=8,
            cycle_id="cycle-2",
            execution_mode="",
            iteration_number=9,
            cash=Decimal("1.25"),
            value_confidence=ValueConfidence.STALE,
            positions={"positions": [{"value_usd": "101.50"}]},
            chain="base",
            created=at(100),
        ),
    )
    replaced = await n.at(store, "dep", at(1))
    assert replaced is not None
    assert replaced.snapshot_id == 5
    assert (replaced.total_value_usd, replaced.available_cash_usd) == (
        Decimal("101.50"),
        Decimal("1.25"),
    )
    assert (replaced.iteration_number, replaced.value_confidence) == (9, ValueConfidence.STALE)
    assert replaced.positions == {"positions": [{"value_usd": "101.50"}]}
    assert (replaced.chain, replaced.created_at) == ("base", at(100))
    # a non-empty identity survives; an empty one is filled
    assert (replaced.cycle_id, replaced.execution_mode) == ("cycle-1", "live")
    await record(engine, snap("dep", 3, "301", sid=7, cycle_id="cycle-3", execution_mode="x"))
    filled = await n.at(store, "dep", at(3))
    assert filled is not None and (filled.cycle_id, filled.execution_mode) == ("cycle-3", "x")
    # an id that names another row is ignored too: the row keeps its own
    await record(engine, snap("dep", 2, "202", sid=7))
    again = await n.at(store, "dep", at(2))
    assert again is not None and (again.snapshot_id, again.total_value_usd) == (6, Decimal("202"))

    assert await n.count(store, "dep") == 3
    assert await n.max_snapshot_id(store, "dep") == 7  # the unused 8 is not taken
    # an already-folded point is not delivered again to a cursor past it
    rows, _ = await n.nav_series(store, "dep", since=cursor)
    assert [(r[0], r[3]) for r in rows] == [(at(2), 6), (at(3), 7)]


async def test_an_id_of_another_timestamp_is_refused(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    await record(engine, snap("dep", 1, sid=1), snap("dep", 2, sid=2), snap("other", 1, sid=2))
    head = (await store.read_deployment("dep"))[-1].deployment_seq
    with pytest.raises(SnapshotIdConflict, match="snapshot id 2 of deployment 'dep'") as caught:
        await record(engine, snap("dep", 3, sid=2))
    assert isinstance(caught.value, ProjectionWriteRefused)
    assert (await store.read_deployment("dep"))[-1].deployment_seq == head  # nothing written
    assert await n.count(store, "dep") == 2
    assert await n.at(store, "dep", at(3)) == await n.at(store, "dep", at(2))
    # within one append, two new timestamps claiming one id are refused as well
    with pytest.raises(ProjectionWriteRefused):
        await engine.append("dep", "snapshots", [snap("dep", 4, sid=9), snap("dep", 5, sid=9)])
    assert await n.count(store, "dep") == 2 and await n.max_snapshot_id(store, "dep") == 2


async def test_a_missing_id_is_the_events_deployment_seq(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    await engine.append(
        "dep",
        "state",
        [StateSaved(deployment_id="dep", version=1, state={}, checksum="c", created_at=T0)],
    )
    await record(engine, snap("dep", 1, sid=1))
    result = await engine.append("dep", "snapshots", [snap("dep", 2)])
    assert result.deployment_seq == 3
    latest = await n.latest(store, "dep")
    assert latest is not None and latest.snapshot_id == 3
    assert await n.max_snapshot_id(store, "dep") == 3
    await record(engine, snap("dep", 3, sid=4))
    assert ids(await n.recent(store, "dep")) == [1, 3, 4]


# -- retention --------------------------------------------------------------------------


async def test_retention_prunes_one_deployment_by_write_time(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    cutoff = at(100)
    for dep in ("dep", "other"):
        await record(
            engine,
            snap(dep, 1, sid=1, created=at(50)),
            snap(dep, 2, sid=2, created=cutoff - timedelta(microseconds=1)),
            snap(dep, 3, sid=3, created=cutoff),  # not earlier: kept
            snap(dep, 0, sid=4, created=at(90)),  # newest id, old write time
            snap(dep, 4, sid=5, created=at(200)),
        )
    # re-recording refreshes the write time, which saves minute 1 from the prune
    await record(engine, snap("dep", 1, "1.5", sid=99, created=at(150)))
    await engine.append(
        "dep",
        "snapshots",
        [SnapshotRetentionApplied(deployment_id="dep", retention_days=7, cutoff=cutoff)],
    )
    assert ids(await n.recent(store, "dep")) == [1, 3, 5]
    assert await n.count(store, "dep") == 3
    assert await n.max_snapshot_id(store, "dep") == 5  # pruned id 4 never comes back
    first = await n.first(store, "dep")
    assert first is not None and first.timestamp == at(1)
    assert ids(await n.recent(store, "other")) == [4, 1, 2, 3, 5]  # untouched
    assert await n.count(store, "other") == 5

    # a snapshot recorded after the retention event survives, whatever its created_at
    await record(engine, snap("dep", 5, sid=6, created=at(10)))
    assert await n.count(store, "dep") == 4
    # pruning everything leaves an empty series but keeps the id high-water mark
    await engine.append(
        "dep",
        "snapshots",
        [SnapshotRetentionApplied(deployment_id="dep", retention_days=0, cutoff=at(10_000))],
    )
    assert await n.latest(store, "dep") is None
    assert await n.count(store, "dep") == 0
    assert await n.max_snapshot_id(store, "dep") == 6
    # a retention event for a deployment without snapshots changes nothing
    await engine.append(
        "none",
        "snapshots",
        [SnapshotRetentionApplied(deployment_id="none", retention_days=7, cutoff=cutoff)],
    )
    assert await n.count(store, "none") == 0


# -- rebuild ----------------------------------------------------------------------------


async def fill(engine: ProjectionEngine) -> None:
    n, store = nav(engine), engine.store
    for i in range(36):
        dep = f"dep-{i % 3}"
        minute = (i * 7) % 20  # repeats: re-records of the same timestamp
        sid = None if i % 5 == 0 else await n.max_snapshot_id(store, dep) + 1
        await record(
            engine,
            snap(
                dep,
                minute,
                f"{i}.{i:02d}",
                sid=sid,
                cycle_id=f"c{i}" if i % 2 else "",
                created=at(i),
            ),
        )
        if i % 12 == 11:
            await engine.append(
                dep,
                "snapshots",
                [SnapshotRetentionApplied(deployment_id=dep, retention_days=1, cutoff=at(i - 8))],
            )


async def model_rows(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    return {
        SNAPS: await table(store, SNAPS, "deployment_id, ts"),
        STATS: await table(store, STATS, "deployment_id"),
    }


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    await fill(engine)
    before = await model_rows(engine.store)
    assert len(before[SNAPS]) > 20 and len(before[STATS]) == 3
    counted = {row[0]: row[2] for row in before[STATS]}
    assert counted == {
        dep: sum(1 for row in before[SNAPS] if row[0] == dep) for dep in ("dep-0", "dep-1", "dep-2")
    }
    (report,) = await engine.rebuild("nav", batch_size=5)
    assert report.events == 39
    assert await model_rows(engine.store) == before
    await engine.store.execute([Statement(f"DELETE FROM {SNAPS} WHERE deployment_id = 'dep-1'")])
    await engine.rebuild("nav", deployment_id="dep-1", batch_size=4)
    assert await model_rows(engine.store) == before


async def test_the_projector_builds_the_same_rows(store: EventStore) -> None:
    inline = ProjectionEngine(store, [NavProjection])
    await inline.start()
    await fill(inline)
    before = await model_rows(store)
    await store.execute([Statement(f"DELETE FROM {SNAPS}"), Statement(f"DELETE FROM {STATS}")])
    await store.execute(
        [Statement("UPDATE chronicle_projections SET checkpoint = 0 WHERE name = 'nav'")]
    )
    projector = ProjectionEngine(store, [NavProjection], run_async=["nav"])
    await projector.start()
    await settled(store)
    assert await projector.catch_up(batch_size=7) == 39
    assert await model_rows(store) == before


# -- scale: bounded reads at 200k snapshots (timings printed, never asserted) ------------------

BIG = 200_000


async def plan_of(store: EventStore, sql: str, params: Sequence[Any]) -> str:
    if store.backend == "sqlite":
        rows = await store.query(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(r[-1]) for r in rows)
    rows = await store.query(f"EXPLAIN {sql}", params)
    return "\n".join(str(r[0]) for r in rows)


async def test_bounded_reads_use_the_index_at_200k_snapshots(
    engine: ProjectionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, store = nav(engine), engine.store
    minute = 60_000_000
    base = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    await store.execute(
        [
            Statement(
                "WITH RECURSIVE k(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL "
                f"SELECT i + 1 FROM k WHERE i < {BIG}) "
                f"INSERT INTO {SNAPS} SELECT 'big', i, '', '', {base} + i * {minute}, i, "
                "CAST(i AS TEXT), '1', '0', '0', 'HIGH', '[]', '{}', '[]', 'arbitrum', "
                f"{base} + i * {minute} FROM k"
            ),
            Statement(f"INSERT INTO {STATS} VALUES ('big', {BIG}, {BIG})"),
        ]
    )
    await record(engine, snap("small", 1, sid=1))  # another deployment in the same table
    if store.backend == "postgresql":
        await store.execute([Statement(f"ANALYZE {SNAPS}")])

    seen: list[tuple[str, Sequence[Any]]] = []
    query = store.query

    async def spying(sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        seen.append((sql, params))
        return await query(sql, params)

    monkeypatch.setattr(store, "query", spying)
    timings: dict[str, float] = {}

    async def timed(label: str, read: Any) -> Any:
        started = time.perf_counter()
        result = await read
        timings[label] = time.perf_counter() - started
        return result

    def moment(i: int) -> datetime:
        return T0 + timedelta(minutes=i)

    assert await timed("count", n.count(store, "big")) == BIG
    assert await timed("max_snapshot_id", n.max_snapshot_id(store, "big")) == BIG
    latest = await timed("latest", n.latest(store, "big"))
    assert latest.snapshot_id == BIG and latest.total_value_usd == Decimal(BIG)
    assert (await timed("first", n.first(store, "big"))).snapshot_id == 1
    assert ids(await timed("since", n.since(store, "big", moment(1000)))) == list(range(1000, 1168))
    assert ids(await timed("recent", n.recent(store, "big"))) == list(range(BIG - 167, BIG + 1))
    assert (
        await timed("at", n.at(store, "big", moment(777) + timedelta(seconds=30)))
    ).snapshot_id == 777
    rows, truncated = await timed(
        "in_window", n.in_window(store, "big", moment(5000), moment(5099))
    )
    assert [r[1] for r in rows] == [str(i) for i in range(5000, 5100)] and not truncated
    rows, truncated = await timed(
        "in_window capped", n.in_window(store, "big", None, None, scan_cap=500)
    )
    assert [r[1] for r in rows] == [str(i) for i in range(BIG - 499, BIG + 1)] and truncated
    rows, truncated = await timed("nav_series capped", n.nav_series(store, "big", scan_cap=1000))
    assert (rows[0][3], rows[-1][3], truncated) == (BIG - 999, BIG, True)
    rows, truncated = await timed(
        "nav_series page",
        n.nav_series(store, "big", since=(moment(150_000), 150_000), scan_cap=500),
    )
    assert (rows[0][3], rows[-1][3], truncated) == (150_001, 150_500, True)
    bounded = list(seen)
    rows, truncated = await timed("nav_series full", n.nav_series(store, "big"))
    assert len(rows) == BIG and not truncated and rows[-1][3] == BIG
    monkeypatch.undo()

    print({label: f"{seconds * 1000:.1f} ms" for label, seconds in timings.items()})
    for sql, params in bounded:
        if SNAPS not in sql.replace(STATS, ""):
            continue  # the stats reads are primary-key lookups of a one-row-per-deployment table
        plan = await plan_of(store, sql, params)
        assert "TEMP B-TREE" not in plan and "Seq Scan" not in plan, (sql, plan)
        assert " Sort" not in plan and not plan.startswith("Sort"), (sql, plan)
        assert "INDEX" in plan.upper(), (sql, plan)

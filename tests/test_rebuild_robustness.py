"""Rebuilds under interruption and concurrency, on SQLite and on PostgreSQL.

A rebuild replays the log into shadow tables, batch by batch, and swaps them in
with one transaction. These tests hold it to its promises when things go wrong
around it:

* cancelled (deterministically after a committed batch, or at arbitrary await
  points by ``asyncio.wait_for``), it resumes from its last batch and ends with
  the rows an uninterrupted rebuild gives;
* SIGKILLed in a child process mid-way, it resumes in another process to the same
  rows;
* readers (same process, a second connection, another process) never see an
  empty or partial model while it runs;
* appends that commit while it runs are in the final rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import with_params

import eventstore
from eventstore import EventStore, NewEvent, Statement
from projections.engine import CATALOG, ProjectionEngine, RebuildReport
from projections.events import (
    AccountingEventRecorded,
    ClobOrderSaved,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
    LedgerAndRegistryCommitted,
    LedgerEntry,
    LedgerEntryRecorded,
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
    encode_event,
)
from projections.models import ALL_PROJECTIONS
from projections.models.state import StateProjection

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 4, 1, tzinfo=UTC)
NAMES = sorted(cls.name for cls in ALL_PROJECTIONS)  # the order a full rebuild takes
TABLES = tuple(table.physical() for cls in ALL_PROJECTIONS for table in cls.tables)
TYPES = {cls.name: cls.event_types() for cls in ALL_PROJECTIONS}

# -- a workload touching all nine read models, with no write any model refuses ----------


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def entry(dep: str, i: int) -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"e{i % 37}",  # ids come back: replaced entries adjust the quant stats
        deployment_id=dep,
        cycle_id=f"c{i}" if i % 3 else "",
        timestamp=at(i),
        intent_type=("SWAP", "LP_OPEN", "BORROW")[i % 3],
        gas_usd=Decimal(f"0.{i:04d}") if i % 5 else None,
        tx_hash=f"0x{i:x}" if i % 2 else "",
        pre_state={"wallet_balances": {"USDC": str(i)}} if i % 4 == 0 else None,
        price_inputs={"USDC": {"price_usd": "1"}} if i % 4 == 0 else None,
        post_state={} if i % 4 == 0 else None,
    )


def registry_row(dep: str, i: int) -> RegistryRow:
    return RegistryRow(
        deployment_id=dep,
        chain="eth",
        primitive="lp",
        accounting_category="cat",
        physical_identity_hash=f"h{i}",
        semantic_grouping_key=f"g{i}",  # one group per row: no auto-mode collision
        grouping_policy_version="v1",
        status=RegistryStatus.OPEN if i % 3 else RegistryStatus.CLOSED,
        payload={"i": i},
        opened_at_block=i,
        opened_tx=f"0x{i:04x}",
    )


def writes(dep: str, i: int) -> Iterator[tuple[str, DomainEvent]]:
    """Round ``i`` of a deployment's writes: every model gets one or two events."""
    yield (
        "state",
        StateSaved(
            deployment_id=dep, version=i + 1, state={"i": i}, checksum=f"c{i}", created_at=at(i)
        ),
    )
    if i % 41 == 40:
        yield "state", StateDeleted(deployment_id=dep, deleted_at=at(i))
    order_id = f"o{i % 23}"
    yield (
        "orders",
        ClobOrderSaved(
            deployment_id=dep,
            order_id=order_id,
            market_id=f"m{i % 2}",
            token_id="t",
            side="BUY" if i % 2 else "SELL",
            status=ClobOrderStatus.LIVE,
            price=Decimal(f"0.{i % 97 + 1:02d}"),
            size=Decimal(i + 1),
            submitted_at=at(i),
            updated_at=at(i),
        ),
    )
    if i % 3 == 0:
        yield (
            "orders",
            ClobOrderStatusUpdated(
                deployment_id=dep,
                order_id=order_id,
                status=ClobOrderStatus.MATCHED if i % 2 else ClobOrderStatus.PARTIALLY_FILLED,
                filled_size=Decimal(i),
                updated_at=at(i + 1),
            ),
        )
    yield (
        "portfolio",
        PortfolioSnapshotRecorded(
            deployment_id=dep,
            timestamp=at(i),
            total_value_usd=Decimal(1000 + i),
            available_cash_usd=Decimal(i),
            positions={"schema_version": 2, "positions": [i]},
            created_at=at(i),
        ),
    )
    if i % 5 == 0:
        yield (
            "portfolio",
            PortfolioMetricsSaved(
                deployment_id=dep,
                initial_value_usd=Decimal(1000),
                initial_timestamp=at(i),
                deposits_usd=None if i % 2 else Decimal(i),
                updated_at=at(i),
            ),
        )
    if i % 29 == 28:
        yield (
            "portfolio",
            SnapshotRetentionApplied(deployment_id=dep, retention_days=7, cutoff=at(i - 20)),
        )
    yield "ledger", LedgerEntryRecorded(entry=entry(dep, i))
    if i % 4 == 1:
        yield (
            "ledger",
            LedgerAndRegistryCommitted(ledger=entry(dep, 1000 + i), registry=registry_row(dep, i)),
        )
    if i % 4 == 2:
        yield "registry", RegistryRowBackfilled(row=registry_row(dep, i))
    primitive, key = "lp", f"k{i % 5}"
    mig = (
        MigrationStateUpserted(
            deployment_id=dep, primitive=primitive, cutover_key=key, created_at=at(i)
        ),
        MigrationStateUpdated(
            deployment_id=dep,
            primitive=primitive,
            cutover_key=key,
            updated_at=at(i),
            rows_synthesized=i,
            notes={"i": i},
        ),
        MigrationBackfillMarkedComplete(
            deployment_id=dep,
            primitive=primitive,
            cutover_key=key,
            completed_at=at(i),
            updated_at=at(i),
            rows_synthesized=i,
            rows_skipped_already_present=1,
        ),
    )
    yield "migration", mig[(i // 5) % 3]
    yield (
        "positions",
        PositionEventRecorded(
            position_event_id=f"p{i % 53}",  # repeats are ignored: the first write wins
            deployment_id=dep,
            position_id=f"pos{i % 4}",
            position_type="LP",
            position_event_type="OPEN",
            timestamp=at(i // 2),
            amount0=Decimal(i),
        ),
    )
    if i % 2:
        yield (
            "positions",
            PositionAttributionUpdated(
                deployment_id=dep,
                position_event_id=f"p{(i * 7) % 53}",
                attribution={"pnl": str(i)},
                attribution_version=i,
            ),
        )
    yield (
        "accounting",
        AccountingEventRecorded(
            accounting_event_id=f"a{i % 31}",
            deployment_id=dep,
            cycle_id=f"c{i}",
            execution_mode="live",
            timestamp=at(i // 3),
            chain="eth",
            protocol="aave",
            wallet_address="0xw",
            accounting_event_type="SUPPLY",
            position_key=f"k{i % 3}",
            confidence="HIGH",
            payload={"amount": str(i)},
        ),
    )


def appends(
    deployments: list[str], rounds: range, per_append: int = 1
) -> Iterator[tuple[str, str, list[DomainEvent]]]:
    """``(deployment, stream, events)``: ``per_append`` rounds' events of one stream each."""
    for start in range(rounds.start, rounds.stop, per_append):
        for dep in deployments:
            streams: dict[str, list[DomainEvent]] = {}
            for i in range(start, min(start + per_append, rounds.stop)):
                for name, event in writes(dep, i):
                    streams.setdefault(name, []).append(event)
            for name, events in streams.items():
                yield dep, name, events


async def fill(engine: ProjectionEngine, deployments: list[str], rounds: int) -> int:
    """Append ``rounds`` rounds for every deployment; the number of events written."""
    written = 0
    for dep, stream, events in appends(deployments, range(rounds), per_append=10):
        await engine.append(dep, stream, events)
        written += len(events)
    return written


# -- what readers see ----------------------------------------------------------------


async def dump(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, in a fixed order."""
    return {
        t: sorted((tuple(r) for r in await store.query(f"SELECT * FROM {t}")), key=repr)
        for t in TABLES
    }


async def answers(engine: ProjectionEngine, deployments: list[str]) -> list[Any]:
    """The queries a dashboard makes, one or more per read model."""
    store = engine.store
    q: Any = {name: engine.live(name) for name in NAMES}
    out: list[Any] = []
    for dep in deployments:
        out += [
            await q["state"].get(store, dep),
            await q["orders"].open_orders(store, dep),
            await q["nav"].count(store, dep),
            await q["nav"].max_snapshot_id(store, dep),
            await q["nav"].latest(store, dep),
            await q["nav"].nav_series(store, dep, scan_cap=50),
            await q["metrics"].get(store, dep),
            await q["ledger"].quant_stats(store, dep),
            await q["ledger"].entries(store, dep, limit=20),
            await q["registry"].open_rows(store, dep),
            await q["migration"].for_deployment(store, dep),
            await q["position_events"].events(store, dep, limit=20),
            await q["accounting"].records(store, dep, "k1"),
        ]
    return out


def digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()


async def catalog_rows(store: EventStore) -> dict[str, tuple[Any, ...]]:
    rows = await store.query(
        f"SELECT name, status, generation, shadow_checkpoint FROM {CATALOG} ORDER BY name"
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def by_name(reports: list[RebuildReport]) -> dict[str, RebuildReport]:
    return {report.projection: report for report in reports}


async def events_after(store: EventStore, name: str, position: int) -> int:
    """Events of the projection's types after ``position`` (what a resume must replay).

    Counted in SQL: on PostgreSQL ``read_all`` holds back positions behind any open
    transaction on the server, another test's included.
    """
    types = TYPES[name]
    marks = ", ".join(f"${i}" for i in range(2, len(types) + 2))
    rows = await store.query(
        f"SELECT count(*) FROM chronicle_events WHERE position > $1 AND type IN ({marks})",
        (position, *types),
    )
    return int(rows[0][0])


async def settle(store: EventStore) -> None:
    """Wait until every committed event is readable by ``read_all`` (and so by a rebuild).

    On PostgreSQL the global log stops below the oldest write transaction in flight
    anywhere on the server; a rebuild started behind one goes straight to its swap,
    and the tests below need its batches. Only another session can hold it here.
    """
    deadline = time.monotonic() + 60
    while (await store.horizon()).held_back:
        assert time.monotonic() < deadline, "a transaction elsewhere held the log back for 60 s"
        await asyncio.sleep(0.05)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")) if p
    )
    return env


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, ALL_PROJECTIONS)
    await engine.start()
    yield engine


DEPLOYMENTS = ["dep-a", "dep-b"]


# -- (a) cancellation ------------------------------------------------------------------


async def test_a_cancelled_rebuild_resumes_to_the_same_rows(engine: ProjectionEngine) -> None:
    store = engine.store
    written = await fill(engine, DEPLOYMENTS, 60)
    inline = await dump(store)
    await engine.rebuild(batch_size=500)  # the uninterrupted rebuild
    uninterrupted = await dump(store)
    assert uninterrupted == inline
    target = "nav"
    seen: list[tuple[str, int]] = []
    await settle(store)

    def cancel_midway(name: str, done: int) -> None:
        seen.append((name, done))
        if name == target and done >= 24:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # lands at the rebuild's next await, after this committed batch

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(engine.rebuild(batch_size=8, progress=cancel_midway))
    # one pass over the log feeds every projection: all were part-way when cut
    assert {name for name, _ in seen} == set(NAMES)
    catalog = await catalog_rows(store)
    checkpoints = {name: catalog[name][2] for name in NAMES}
    assert all(catalog[name][0] == "rebuilding" for name in NAMES)
    assert all(checkpoint > 0 for checkpoint in checkpoints.values()), checkpoints
    assert await dump(store) == inline, "the live tables changed before the swap"

    reports = by_name(await engine.rebuild(batch_size=8))
    for name in NAMES:
        # nothing replayed twice, nothing skipped: the resume replays exactly the rest
        assert reports[name].resumed_from == checkpoints[name] > 0
        assert reports[name].events == await events_after(store, name, checkpoints[name])
    assert await dump(store) == uninterrupted
    assert all(row[0] == "live" and row[2] is None for row in (await catalog_rows(store)).values())
    assert written > 1000


async def test_a_rebuild_cancelled_at_arbitrary_points_still_converges(
    engine: ProjectionEngine,
) -> None:
    """``asyncio.wait_for`` cuts the rebuild wherever it is awaiting: a read, a batch's
    commit, the swap's transaction. Each retry resumes or restarts; none may leave the
    live rows changed, and the one that finishes gives the uninterrupted rows."""
    store = engine.store
    await fill(engine, DEPLOYMENTS, 40)
    inline = await dump(store)
    await settle(store)
    timeout, cuts, resumable = 0.002, 0, 0
    while True:
        try:
            await asyncio.wait_for(engine.rebuild(batch_size=6), timeout)
            break
        except TimeoutError:
            cuts += 1
            timeout *= 1.4
        assert await dump(store) == inline, f"cut {cuts} changed the live rows"
        catalog = await catalog_rows(store)
        resumable += any(row[0] == "rebuilding" and (row[2] or 0) > 0 for row in catalog.values())
    assert cuts >= 3 and resumable >= 1, (cuts, resumable)
    assert await dump(store) == inline
    assert all(row[0] == "live" and row[2] is None for row in (await catalog_rows(store)).values())
    # the rows are those of a rebuild nobody interrupted
    await engine.rebuild(batch_size=1000)
    assert await dump(store) == inline


# -- (b) SIGKILL in a child process ------------------------------------------------------

REBUILD_CHILD = """
import asyncio, sys
import eventstore
from projections.engine import ProjectionEngine
from projections.models import ALL_PROJECTIONS

async def main(url, batch_size):
    async with eventstore.connect(url) as store:
        await ProjectionEngine(store, ALL_PROJECTIONS).rebuild(batch_size=batch_size)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_b_a_rebuild_killed_mid_way_resumes_in_another_process(
    engine: ProjectionEngine, store_url: str
) -> None:
    store = engine.store
    written = await fill(engine, [*DEPLOYMENTS, "dep-c"], 100)
    assert written > 2500
    inline = await dump(store)
    generations = {name: row[1] for name, row in (await catalog_rows(store)).items()}
    target = "ledger"
    await settle(store)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", REBUILD_CHILD, store_url, "4", cwd=ROOT, env=child_env()
    )
    try:
        deadline = time.monotonic() + 60
        observed = 0
        while not observed:
            assert child.returncode is None, "the child finished before it could be killed"
            assert time.monotonic() < deadline, "the child never reached the target"
            row = (await catalog_rows(store))[target]
            if row[0] == "rebuilding" and (row[2] or 0) > 0:
                observed = row[2]
            else:
                await asyncio.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 30) == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    catalog = await catalog_rows(store)
    status, _, checkpoint = catalog[target]
    assert status == "rebuilding" and checkpoint >= observed > 0
    # one pass feeds every projection: each stopped at its last committed batch,
    # none was swapped
    assert all(catalog[name][1] == generations[name] for name in NAMES)
    checkpoints = {name: catalog[name][2] for name in NAMES}
    assert await dump(store) == inline, "the kill left the live tables changed"

    reports = by_name(await engine.rebuild(batch_size=1000))
    for name in NAMES:
        assert reports[name].resumed_from == checkpoints[name]
        assert reports[name].events == await events_after(store, name, checkpoints[name])
    assert await dump(store) == inline  # what an uninterrupted rebuild gives (test a)
    assert all(row[0] == "live" and row[2] is None for row in (await catalog_rows(store)).values())


# -- (c) live reads during a rebuild -----------------------------------------------------

READER_CHILD = """
import asyncio, json, sys, traceback
import eventstore
from projections.engine import ProjectionEngine
from projections.models import ALL_PROJECTIONS
import test_rebuild_robustness as t

async def main(url, deployments):
    async with eventstore.connect(url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        baseline = t.digest(await t.answers(engine, deployments))
        print(json.dumps({"baseline": baseline}), flush=True)
        reads, wrong, errors = 0, 0, []
        stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        while not stop.done():
            try:
                if t.digest(await t.answers(engine, deployments)) != baseline:
                    wrong += 1
            except Exception:
                errors.append(traceback.format_exc(limit=3))
            reads += 1
            await asyncio.sleep(0)
        print(json.dumps({"reads": reads, "wrong": wrong, "errors": errors[:3]}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2].split(",")))
"""


async def test_c_readers_never_see_an_empty_or_partial_model(
    engine: ProjectionEngine, store_url: str
) -> None:
    store = engine.store
    await fill(engine, DEPLOYMENTS, 40)
    before = await answers(engine, DEPLOYMENTS)
    inline = await dump(store)
    await settle(store)
    # readers: this connection, a second connection, and another process
    async with eventstore.connect(store_url) as second:
        other = ProjectionEngine(second, ALL_PROJECTIONS)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            READER_CHILD,
            store_url,
            ",".join(DEPLOYMENTS),
            cwd=ROOT,
            env=child_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            started = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
            assert started["baseline"] == digest(before)

            rebuilding: set[str] = set()  # one pass rebuilds them all at once
            read_during = 0

            def note(name: str, done: int) -> None:
                rebuilding.add(name)

            task = asyncio.create_task(engine.rebuild(batch_size=8, progress=note))

            async def read(reader: ProjectionEngine) -> int:
                reads = 0
                while not task.done():
                    seen = await answers(reader, DEPLOYMENTS)
                    assert seen == before, f"a reader saw a changed model while {rebuilding!r}"
                    reads += 1
                    if rebuilding == set(NAMES):
                        nonlocal read_during
                        read_during += 1
                    await asyncio.sleep(0)
                return reads

            _, own, seconds = await asyncio.gather(task, read(engine), read(other))
            child.stdin.write(b"stop\n")
            await child.stdin.drain()
            report = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
    assert report["errors"] == [] and report["wrong"] == 0, report
    assert report["reads"] > 0 and own > 0 and seconds > 0
    assert read_during > 0, "no read while the projections were rebuilt"
    assert await answers(engine, DEPLOYMENTS) == before
    assert await dump(store) == inline


# -- (d) appends during a rebuild -------------------------------------------------------


async def test_d_appends_during_a_rebuild_are_in_the_final_rows(engine: ProjectionEngine) -> None:
    store = engine.store
    await fill(engine, DEPLOYMENTS, 50)
    # more rounds for the same deployments, and a deployment that is new
    extra = appends([*DEPLOYMENTS, "dep-new"], range(50, 400))
    await settle(store)
    rebuilding: set[str] = set()  # one pass rebuilds them all at once
    appended_during = 0

    def note(name: str, done: int) -> None:
        rebuilding.add(name)

    task = asyncio.create_task(engine.rebuild(batch_size=5, progress=note))
    last_state: dict[str, int | None] = {}  # the version each deployment's state is at
    while not task.done():
        try:
            dep, stream, events = next(extra)
        except StopIteration:
            pytest.fail("the appends ran out before the rebuild finished")
        await engine.append(dep, stream, events)
        for event in events:
            if isinstance(event, StateSaved | StateDeleted):
                last_state[dep] = event.version if isinstance(event, StateSaved) else None
        appended_during += rebuilding == set(NAMES)
        await asyncio.sleep(0)
    await task
    assert appended_during > 0, "the rebuild saw no appends"
    after = await dump(store)
    state: Any = engine.live("state")
    for dep, version in last_state.items():
        current = await state.get(store, dep)
        assert (current and current.version) == version, dep
    await engine.rebuild(batch_size=1000)  # an independent rebuild, nothing running
    assert await dump(store) == after, "the rows after the rebuild missed concurrent appends"
    # and a third, per deployment, agrees too
    for dep in [*DEPLOYMENTS, "dep-new"]:
        await engine.rebuild(deployment_id=dep, batch_size=100)
    assert await dump(store) == after


# -- regressions: asynchronous projections and rebuilds (bugs found, then fixed) --------


class Crash(Exception):
    """Stands for a process dying mid-rebuild."""


async def test_b_the_projector_does_not_spin_on_an_interrupted_rebuild(store: EventStore) -> None:
    engine = ProjectionEngine(store, ALL_PROJECTIONS, run_async=["ledger"])
    await engine.start()
    await fill(engine, DEPLOYMENTS, 12)
    await settle(store)
    await engine.catch_up()

    def crash(name: str, done: int) -> None:
        if done >= 8:
            raise Crash

    with pytest.raises(Crash):
        await engine.rebuild("ledger", batch_size=4, progress=crash)
    assert (await engine.catalog())["ledger"].status == "rebuilding"
    await fill_more(engine, range(12, 14))
    # the projector must leave a projection that is being rebuilt alone, not spin on it
    await asyncio.wait_for(engine.catch_up(), 2)
    await engine.rebuild("ledger", batch_size=4)  # the resume
    await engine.catch_up()
    settled = await dump(store)
    await engine.rebuild("ledger")
    assert await dump(store) == settled


async def fill_more(engine: ProjectionEngine, rounds: range) -> None:
    for dep, stream, events in appends(DEPLOYMENTS, rounds, per_append=len(rounds)):
        await engine.append(dep, stream, events)


@pytest.mark.postgres_only
async def test_d_an_async_projection_keeps_an_append_in_flight_at_the_swap(
    pg_dsn: str, pg_schema: str
) -> None:
    url = with_params(pg_dsn, schema=pg_schema)
    gate_key = int.from_bytes(os.urandom(4), "big") >> 1  # fits pg_locks.objid
    async with eventstore.connect(url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS, run_async=["ledger"])
        await engine.start()
        await fill(engine, DEPLOYMENTS, 5)
        await settle(store)
        await engine.catch_up()
        gate = await asyncpg.connect(pg_dsn)
        try:
            await gate.execute("SELECT pg_advisory_lock($1)", gate_key)
            # an append that takes its position, then waits on the gate before committing
            kind, version, data = encode_event(LedgerEntryRecorded(entry=entry("dep-slow", 1)))
            held = asyncio.create_task(
                store.append(
                    "dep-slow",
                    "ledger",
                    [NewEvent(kind, msgspec.Raw(data), schema_version=version)],
                    inline=lambda recorded: [
                        Statement("SELECT 1"),
                        Statement("SELECT pg_advisory_xact_lock($1)", (gate_key,)),
                    ],
                )
            )
            deadline = time.monotonic() + 10
            while not (
                await store.query(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
                    "AND NOT granted",
                    (gate_key,),
                )
            ):
                assert time.monotonic() < deadline, "the held append never reached the gate"
                await asyncio.sleep(0.01)
            # a later append commits first, then the rebuild swaps while the first is open
            await engine.append(
                "dep-fast", "ledger", [LedgerEntryRecorded(entry=entry("dep-fast", 2))]
            )
            await engine.rebuild("ledger")
            assert not held.done()
            await gate.execute("SELECT pg_advisory_unlock($1)", gate_key)
            await asyncio.wait_for(held, 10)
        finally:
            await gate.close()
        ledger: Any = engine.live("ledger")
        deadline = time.monotonic() + 3
        while (await ledger.quant_stats(store, "dep-slow")).total == 0:
            if time.monotonic() > deadline:  # the projector never applies it
                break
            await engine.catch_up()
            await asyncio.sleep(0.05)
        assert (await ledger.quant_stats(store, "dep-slow")).total == 1, "the event was lost"


async def test_a_state_table_from_before_stream_version_is_rebuilt_on_start(
    store: EventStore,
) -> None:
    await ProjectionEngine(store, [StateProjection]).start()
    # the table and catalog row as the previous release (state version 1) left them
    await store.execute(
        [
            Statement(f"UPDATE {CATALOG} SET version = 1 WHERE name = 'state'"),
            Statement("DROP TABLE rm_state"),
            Statement(
                "CREATE TABLE rm_state (deployment_id TEXT PRIMARY KEY, version BIGINT NOT NULL, "
                "state TEXT NOT NULL, schema_version BIGINT NOT NULL, checksum TEXT NOT NULL, "
                "created_at BIGINT, updated_at BIGINT)"
            ),
        ]
    )
    upgraded = ProjectionEngine(store, [StateProjection])
    await upgraded.start()
    saved = StateSaved(deployment_id="dep", version=1, state={}, checksum="c", created_at=T0)
    await upgraded.append("dep", "state", [saved])
    current = await upgraded.live("state").get(store, "dep")  # type: ignore[attr-defined]
    assert current is not None and current.stream_version == 1

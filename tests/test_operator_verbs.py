"""``chronicle replay``, ``verify``, ``export``, ``verify --file`` and ``stats``, on both backends.

- A scripted runner (state saves, CLOB orders with fills, ledger entries, registry
  rows opened and closed, position events, snapshots, metrics, accounting and
  migration state, all through the StateManager) records what its read models
  answer at several points; a replay at each point (by sequence number and by
  time) answers the same, without reading today's read models.
- ``verify`` names an event altered behind the log's back, and a read-model row
  that was changed, deleted or added (table, key, column, stored and replayed).
- An export round-trips the stored bytes exactly and verifies offline; one
  changed byte anywhere, or a truncated file, fails.
- ``stats`` counts what the log holds; bad input exits 2 with a message and
  leaves the store as it was (a missing store is not created).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import settled, with_params
from test_immutability import Raw, split_pg_url, tamper

import eventstore
from eventstore import EventStore, NewEvent
from projections.engine import ProjectionEngine
from projections.events import PortfolioSnapshotRecorded, ValueConfidence
from projections.models import ALL_PROJECTIONS
from statemanager import StateData, StateManager, StateManagerConfig
from statemanager.audit import AuditInputError, compare
from statemanager.audit.check import verify_store
from statemanager.audit.export import verify_file
from statemanager.audit.replay import (
    DeploymentView,
    ReplayRefused,
    replay_deployment,
    view_of,
)
from statemanager.audit.source import deployment_length
from statemanager.records import (
    AccountingEvent,
    ClobFill,
    ClobOrderState,
    ClobOrderStatus,
    LedgerEntry,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
    RegistryRow,
)

DEP = "audit-dep"
T0 = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)


def chronicle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it (no CHRONICLE_URL from the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "CHRONICLE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "statemanager.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def export_to_stdout(url: str, into: Path, *, cwd: Path) -> int:
    """``chronicle export`` to stdout, its bytes kept in ``into``; the exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "statemanager.cli", "export", "--deployment", DEP, "--url", url],
        cwd=cwd,
        capture_output=True,
        timeout=120,
    )
    into.write_bytes(done.stdout)
    return done.returncode


def exists(path: str) -> bool:
    return Path(path).exists()


# -- a scripted runner that records its read models along the way ------------------------


@dataclass
class Point:
    seq: int
    at: datetime
    view: DeploymentView
    state_version: int
    open_rows: list[dict[str, Any]]
    open_orders: int
    snapshots: int


def registry_row(n: int, status: str) -> RegistryRow:
    return RegistryRow(
        deployment_id=DEP,
        chain="arbitrum",
        primitive="lp",
        accounting_category="lp",
        physical_identity_hash="0x" + hashlib.sha256(f"lp-{n}".encode()).hexdigest(),
        semantic_grouping_key="arbitrum:pool",
        grouping_policy_version="univ3_lp@v1",
        status=status,  # type: ignore[arg-type]
        payload={"token_id": str(n)},
        opened_tx=f"0xopen{n}",
        closed_tx=None if status == "open" else f"0xclose{n}",
    )


def ledger_entry(cycle: int, at: datetime, intent: str = "SWAP") -> LedgerEntry:
    return LedgerEntry(
        entry_id=f"{DEP}:{intent}:{cycle}",
        deployment_id=DEP,
        cycle_id=f"c{cycle}",
        execution_mode="paper",
        timestamp=at,
        intent_type=intent,
        token_in="USDC",
        amount_in=Decimal("25.5"),
        token_out="WETH",
        amount_out=Decimal("0.008123456789012345"),
        gas_used=140_000,
        gas_usd=Decimal("0.0131") + Decimal(cycle) / 10_000,
        tx_hash=f"0xtx{cycle}{intent}",
        chain="arbitrum",
        protocol="uniswap_v3",
        price_inputs={"WETH": {"price_usd": "3010.5"}, "USDC": {"price_usd": "1"}},
        pre_state={"wallet_balances": {"USDC": "1000", "WETH": "0.5"}},
        post_state={"wallet_balances": {"USDC": "974.5", "WETH": "0.508"}},
    )


async def record_point(manager: StateManager, store: EventStore) -> Point:
    await asyncio.sleep(0.002)  # the next event is stamped strictly after ``at``
    at = datetime.now(UTC)
    await asyncio.sleep(0.002)
    state = await manager.load_state(DEP)
    return Point(
        seq=await deployment_length(store, DEP),
        at=at,
        view=await view_of(store, DEP),
        state_version=state.version,
        open_rows=await manager.get_position_registry_open_rows(DEP),
        open_orders=len(await manager.get_open_clob_orders(deployment_id=DEP)),
        snapshots=len((await manager.get_nav_series(DEP))[0]),
    )


async def scripted_run(
    url: str, cycles: int = 16, record_after: tuple[int, ...] = ()
) -> list[Point]:
    """A runner through the public API; the read models' answers after the given cycles."""
    manager = StateManager(StateManagerConfig(database_url=url, load_state_on_startup=False))
    await manager.initialize()
    points: list[Point] = []
    try:
        assert manager.warm_backend is not None
        store = manager.warm_backend.store
        state = await manager.save_state(StateData(deployment_id=DEP, version=1, state={}))
        fills: list[ClobFill] = []
        for cycle in range(1, cycles + 1):
            at = T0 + timedelta(minutes=5 * cycle)
            if cycle % 6 == 1:  # a new order each 6 cycles, filled in parts
                fills = []
                await manager.save_clob_order(
                    ClobOrderState(
                        deployment_id=DEP,
                        order_id=f"ord-{cycle}",
                        market_id="ETH-USDC",
                        token_id="weth",
                        side="BUY",
                        status=ClobOrderStatus.LIVE,
                        price=Decimal("3000.00"),
                        size=Decimal("2.0"),
                        submitted_at=at,
                        updated_at=at,
                    )
                )
            elif cycle % 6 in (2, 4):
                fills.append(
                    ClobFill(
                        fill_id=f"fill-{cycle}",
                        price=Decimal("3000.00"),
                        size=Decimal("1.0"),
                        fee=Decimal("0.15"),
                        timestamp=at,
                    )
                )
                done = len(fills) == 2
                await manager.update_clob_order_status(
                    f"ord-{cycle - cycle % 6 + 1}",
                    ClobOrderStatus.MATCHED if done else ClobOrderStatus.PARTIALLY_FILLED,
                    fills=list(fills),
                    filled_size=str(Decimal("1.0") * len(fills)),
                    average_fill_price="3000.00",
                    deployment_id=DEP,
                )
            if cycle % 5 == 1:  # open an LP position: ledger + registry in one event
                await manager.save_ledger_and_registry(
                    ledger=ledger_entry(cycle, at, "LP_OPEN"), registry=registry_row(cycle, "open")
                )
                await manager.save_position_event(
                    PositionEvent(
                        position_event_id=f"lp-{cycle}:open",
                        deployment_id=DEP,
                        cycle_id=f"c{cycle}",
                        position_id=f"lp-{cycle}",
                        position_type="LP",
                        position_event_type="OPEN",
                        timestamp=at,
                        value_usd=Decimal("2500.00"),
                    )
                )
            elif cycle % 5 == 3:  # ... and close it two cycles later
                opened = cycle - 2
                await manager.save_ledger_and_registry(
                    ledger=ledger_entry(cycle, at, "LP_CLOSE"),
                    registry=registry_row(opened, "closed"),
                )
                await manager.update_position_attribution(
                    f"lp-{opened}:open", '{"fees_usd": "1.25"}', 2, deployment_id=DEP
                )
            else:
                await manager.save_ledger_entry(ledger_entry(cycle, at))
            state.state = {"cycle": cycle, "nav": str(Decimal("10000.5") + cycle)}
            state = await manager.save_state(state, expected_version=state.version)
            await manager.save_portfolio_snapshot(
                PortfolioSnapshot(
                    deployment_id=DEP,
                    timestamp=at,
                    total_value_usd=Decimal("10000.50") + Decimal(cycle) / 4,
                    available_cash_usd=Decimal("7500.25"),
                    iteration_number=cycle,
                    cycle_id=f"c{cycle}",
                    positions={"lp": [cycle]},
                    created_at=at,
                )
            )
            if cycle in (1, 8):
                await manager.save_portfolio_metrics(
                    PortfolioMetrics(
                        deployment_id=DEP,
                        initial_value_usd=Decimal("10000.00"),
                        timestamp=at,
                        gas_spent_usd=None,
                    )
                )
            if cycle == 4:
                await manager.save_accounting_event(
                    AccountingEvent(
                        accounting_event_id="acct-4",
                        deployment_id=DEP,
                        cycle_id="c4",
                        execution_mode="paper",
                        timestamp=at,
                        chain="arbitrum",
                        protocol="uniswap_v3",
                        wallet_address="0xwallet",
                        accounting_event_type="LP_OPEN",
                        position_key="lp-1",
                        confidence="high",
                        payload={"amount_usd": "2500.00"},
                    )
                )
                await manager.upsert_migration_state(
                    deployment_id=DEP, primitive="lp", cutover_key="v2"
                )
            if cycle in record_after:
                points.append(await record_point(manager, store))
    finally:
        await manager.close()
    return points


# -- replay ---------------------------------------------------------------------------------


async def test_replay_answers_as_the_read_models_did_at_that_point(
    store_url: str, tmp_path: Path
) -> None:
    points = await scripted_run(store_url, cycles=16, record_after=(2, 7, 12, 16))
    assert [p.seq for p in points] == sorted({p.seq for p in points})  # the log grew
    async with eventstore.connect(store_url) as store:
        for point in points:
            by_seq = await replay_deployment(store, DEP, at_seq=point.seq)
            assert by_seq.events == point.seq and by_seq.chain_ok
            assert by_seq.view == point.view
            by_time = await replay_deployment(store, DEP, at_time=point.at)
            assert by_time.events == point.seq
            assert by_time.view == point.view
            # ... and those are what the runner API answered then
            view = by_seq.view
            assert view.state is not None and view.state.version == point.state_version
            assert view.open_registry_rows == point.open_rows
            assert len(view.open_orders) == point.open_orders
            assert len(view.nav_series) == point.snapshots
        first, last = points[0], points[-1]
        assert first.view != last.view
        assert first.view.quant_stats.total < last.view.quant_stats.total
        assert last.view.metrics is not None and last.view.metrics.gas_spent_usd is None
        # a time after the last event is "now"
        now = await replay_deployment(store, DEP, at_time=datetime.now(UTC) + timedelta(days=1))
        assert now.view == await view_of(store, DEP)

    # as an operator runs it
    middle = points[1]
    done = chronicle(
        "replay",
        "--deployment",
        DEP,
        "--at-seq",
        str(middle.seq),
        "--json",
        "--url",
        store_url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["events"] == middle.seq and answer["chain_ok"] is True
    assert answer["view"] == json.loads(msgspec.json.encode(middle.view))
    text = chronicle(
        "replay",
        "--deployment",
        DEP,
        "--at-time",
        middle.at.isoformat(),
        "--url",
        store_url,
        cwd=tmp_path,
    )
    assert text.returncode == 0, text.stderr
    assert f"as of event #{middle.seq} of {points[-1].seq}" in text.stdout
    for heading in ("current state", "open registry", "open orders", "NAV series", "ledger"):
        assert heading in text.stdout
    assert "audit chain      intact" in text.stdout


# -- verify ---------------------------------------------------------------------------------


async def test_verify_names_a_changed_read_model_row_and_an_altered_event(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await scripted_run(store_url, cycles=10)
    clean = chronicle("verify", "--url", store_url, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "every hash chain intact" in clean.stdout
    assert "ok: 9 of 9 compared" in clean.stdout
    async with eventstore.connect(store_url) as store:
        whole = await verify_store(store)
        monkeypatch.setattr(compare, "PAGE", 2)  # tables read two rows at a time
        paged = await verify_store(store)
    assert whole.ok and paged.ok and paged.rows_compared == whole.rows_compared > 30

    raw = await Raw(store_url).open()
    try:
        entry = f"{DEP}:SWAP:2"
        (stored_gas,) = (
            await raw.fetch("SELECT gas_usd FROM rm_ledger WHERE entry_id = $1", entry)
        )[0]
        await raw.execute("UPDATE rm_ledger SET gas_usd = '999.99' WHERE entry_id = $1", entry)
        await raw.execute(
            "DELETE FROM rm_clob_orders WHERE deployment_id = $1 AND order_id = 'ord-7'", DEP
        )
        await raw.execute(  # rows no event of the log produces: a forged deployment
            "INSERT INTO rm_portfolio_metrics SELECT 'forged', initial_value_usd, "
            "initial_timestamp, deposits_usd, withdrawals_usd, gas_spent_usd, total_value_usd, "
            "positions, cycle_id, execution_mode, is_complete, updated_at "
            "FROM rm_portfolio_metrics WHERE deployment_id = $1",
            DEP,
        )
        done = chronicle("verify", "--url", store_url, "--json", cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["chain_ok"] is True and report["ok"] is False
        assert report["projections_ok"] is False and report["differing_rows"] == 3
        found = {(d["table"], d["kind"]): d for d in report["differences"]}
        async with eventstore.connect(store_url) as store:
            paged = await verify_store(store)  # still two rows at a time: the same findings
        assert json.loads(msgspec.json.encode(paged.differences)) == report["differences"]
        changed = found["rm_ledger", "differs"]
        assert changed["key"] == {"deployment_id": DEP, "entry_id": entry}
        assert (changed["column"], changed["stored"], changed["replayed"]) == (
            "gas_usd",
            "999.99",
            stored_gas,
        )
        assert found["rm_clob_orders", "missing"]["key"] == {
            "deployment_id": DEP,
            "order_id": "ord-7",
        }
        assert found["rm_portfolio_metrics", "extra"]["deployment_id"] == "forged"
        text = chronicle("verify", "--url", store_url, "--deployment", DEP, cwd=tmp_path)
        assert text.returncode == 1
        assert "DIFFERENT: 2 row(s)" in text.stdout  # the forged deployment is not in scope
        assert f"rm_ledger (ledger) deployment_id={DEP!r}, entry_id={entry!r}" in text.stdout
        assert "column gas_usd stored '999.99' replayed" in text.stdout
        assert "chronicle rebuild --deployment" in text.stdout

        # the rebuild the message suggests puts the replayed rows back
        assert (
            chronicle("rebuild", "--deployment", DEP, "--url", store_url, cwd=tmp_path).returncode
            == 0
        )
        again = chronicle("verify", "--deployment", DEP, "--url", store_url, cwd=tmp_path)
        assert again.returncode == 0, again.stdout

        # an event altered behind the log's back (append-only triggers bypassed)
        async with eventstore.connect(store_url) as store:
            target = (await store.read_deployment(DEP, 9, 1))[0]
        await tamper(raw, "data", target.raw_data[:-1] + b"\x00", target.position)
    finally:
        await raw.close()
    broken = chronicle("verify", "--url", store_url, cwd=tmp_path)
    assert broken.returncode == 1
    assert f"BROKEN: deployment {DEP!r} event #9" in broken.stdout
    assert "stored hash does not match" in broken.stdout
    assert "1 of 1 deployment(s) fail their chain; their read models are not compared" in (
        broken.stdout
    )
    assert "the log is intact" not in broken.stdout
    chain_only = chronicle("verify", "--chain-only", "--json", "--url", store_url, cwd=tmp_path)
    report = json.loads(chain_only.stdout)
    assert chain_only.returncode == 1
    assert (report["first_bad_deployment_id"], report["first_bad_deployment_seq"]) == (DEP, 9)
    assert report["first_bad_position"] == target.position
    replay = chronicle(
        "replay", "--deployment", DEP, "--at-seq", "12", "--url", store_url, cwd=tmp_path
    )
    assert replay.returncode == 1  # the altered payload no longer decodes
    assert "event #9 of deployment 'audit-dep'" in replay.stderr
    assert "the log's hash chain breaks at event #9" in replay.stderr
    assert "run `chronicle verify --deployment audit-dep`" in replay.stderr
    before = chronicle(
        "replay", "--deployment", DEP, "--at-seq", "8", "--url", store_url, cwd=tmp_path
    )
    assert before.returncode == 0 and "audit chain      intact" in before.stdout


def snapshot(n: int) -> PortfolioSnapshotRecorded:
    at = T0 + timedelta(minutes=n)
    return PortfolioSnapshotRecorded(
        deployment_id=DEP,
        snapshot_id=n,
        cycle_id=f"c{n}",
        execution_mode="paper",
        timestamp=at,
        iteration_number=n,
        total_value_usd=Decimal("100.5") + n,
        available_cash_usd=Decimal("50"),
        deployed_capital_usd=Decimal("50.5"),
        wallet_total_value_usd=Decimal("100.5"),
        value_confidence=ValueConfidence.HIGH,
        positions=[],
        token_prices={},
        wallet_balances=[],
        chain="arbitrum",
        created_at=at,
    )


async def test_an_asynchronous_read_model_is_compared_up_to_its_checkpoint(
    store: EventStore, store_url: str, tmp_path: Path
) -> None:
    engine = ProjectionEngine(store, ALL_PROJECTIONS, run_async=["nav"])
    await engine.start()
    for n in range(1, 6):
        await engine.append(DEP, "snapshots", [snapshot(n)])
    await settled(store)
    assert await engine.catch_up() == 5
    for n in range(6, 9):  # the projector has not applied these yet
        await engine.append(DEP, "snapshots", [snapshot(n)])

    lagging = await verify_store(store)  # taken for inline: three snapshots "missing"
    assert not lagging.ok and lagging.differing_rows == 4  # 3 rows + the stats row
    assert {d.kind for d in lagging.differences} == {"missing", "differs"}
    report = await verify_store(store, async_projections=["nav"])
    assert report.ok and report.projections_ok, report.differences
    (nav,) = [p for p in report.projections if p.name == "nav"]
    assert nav.mode == "async" and nav.checkpoint is not None and nav.checkpoint > 0

    stats = chronicle("stats", "--async", "nav", "--json", "--url", store_url, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    by_name = {p["name"]: p for p in json.loads(stats.stdout)["projections"]}
    assert (by_name["nav"]["mode"], by_name["nav"]["lag"]) == ("async", 3)
    assert (by_name["ledger"]["mode"], by_name["ledger"]["lag"]) == ("inline", None)
    done = chronicle("verify", "--async", "nav", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert f"nav             compared up to position {nav.checkpoint}" in done.stdout


async def test_an_event_the_read_models_cannot_take_is_reported(store: EventStore) -> None:
    engine = ProjectionEngine(store, ALL_PROJECTIONS)
    await engine.start()
    await engine.append(DEP, "snapshots", [snapshot(1)])
    # appended beside the engine: chained like any event, but no StateSaved
    await store.append(DEP, "state", [NewEvent("StateSaved", {"deployment_id": DEP})])
    report = await verify_store(store)
    assert report.chain_ok and not report.ok
    (refused,) = report.differences
    assert (refused.kind, refused.key["deployment_seq"]) == ("refused", 2)
    assert "StateSaved v1" in refused.replayed and "cannot be applied" in refused.replayed
    with pytest.raises(ReplayRefused, match="event #2 of deployment"):
        await replay_deployment(store, DEP, at_seq=2)
    assert len((await replay_deployment(store, DEP, at_seq=1)).view.nav_series) == 1


# -- export and offline verification -----------------------------------------------------


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


async def test_export_round_trips_and_one_changed_byte_fails_offline(
    store_url: str, tmp_path: Path
) -> None:
    await scripted_run(store_url, cycles=6)
    out = tmp_path / "dep.jsonl"
    done = chronicle(
        "export", "--deployment", DEP, "--out", str(out), "--url", store_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    async with eventstore.connect(store_url) as store:
        events = await store.read_deployment(DEP)
    assert f"exported {len(events)} events" in done.stdout  # --out: stdout is free
    assert len(lines) == len(events) + 2  # header and trailer
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    assert (header["kind"], header["deployment_id"], header["events"]) == (
        "header",
        DEP,
        len(events),
    )
    assert trailer["last_hash"] == events[-1].hash.hex()
    for line, event in zip(lines[1:-1], events, strict=True):
        row = json.loads(line)
        assert msgspec.json.decode(line, type=dict[str, Any])["kind"] == "event"
        assert row["deployment_seq"] == event.deployment_seq
        assert row["position"] == event.position and row["hash"] == event.hash.hex()
        assert msgspec.json.decode(json.dumps(row["data_msgpack"]), type=bytes) == event.raw_data
        assert row["data"] == json.loads(msgspec.json.encode(event.data))  # the readable view

    ok = chronicle("verify", "--file", str(out), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"holds {len(events)} events of deployment {DEP!r}, hash chain intact" in ok.stdout

    # one changed byte anywhere fails: header, hashes, stored bytes, the readable view, trailer
    second = len(lines[0]) + len(lines[1])
    places = {
        "header": lines[0].index(b'"events"') + 10,
        "position": len(lines[0]) + lines[1].index(b'"position"') + 11,
        "hash": second + lines[2].index(b'"hash"') + 9,
        "stored bytes": second + lines[2].index(b'"data_msgpack"') + 30,
        "readable view": second + lines[2].index(b'"data":') + 12,
        "trailer": len(data) - 5,
    }
    for name, index in places.items():
        altered = tmp_path / f"altered-{name.replace(' ', '-')}.jsonl"
        altered.write_bytes(flip(data, index))
        report = verify_file(str(altered))
        assert not report.ok, name
    altered = tmp_path / "altered.jsonl"
    altered.write_bytes(flip(data, places["readable view"]))
    bad = chronicle("verify", "--file", str(altered), "--json", cwd=tmp_path)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert (report["first_bad_line"], report["first_bad_deployment_seq"]) == (3, 2)
    assert "disagree with its stored bytes" in report["reason"]
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"".join(lines[:-2]))
    cut = verify_file(str(truncated))
    assert not cut.ok and cut.reason is not None and "truncated" in cut.reason
    assert cut.events_checked == len(events) - 1
    relinked = tmp_path / "dropped.jsonl"  # an event taken out of the middle
    relinked.write_bytes(b"".join(lines[:3] + lines[4:]))
    gap = verify_file(str(relinked))
    assert not gap.ok and gap.first_bad_line == 4 and "sequence jumps" in (gap.reason or "")

    # to stdout, then verified
    piped = tmp_path / "piped.jsonl"
    assert export_to_stdout(store_url, piped, cwd=tmp_path) == 0
    assert verify_file(str(piped)).ok


# -- stats ----------------------------------------------------------------------------------


async def test_stats_counts_what_the_log_holds(store_url: str, tmp_path: Path) -> None:
    await scripted_run(store_url, cycles=5)
    async with eventstore.connect(store_url) as store:
        await store.append(
            "other-dep", "notes", [NewEvent("OperatorNote", {"n": i}) for i in range(3)]
        )
        events = await store.read_deployment(DEP)
    done = chronicle("stats", "--json", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    expected = Counter(e.type for e in events)
    expected["OperatorNote"] = 3
    assert stats["events_per_type"] == dict(sorted(expected.items()))
    assert stats["unhandled_types"] == ["OperatorNote"]
    assert stats["events"] == len(events) + 3
    assert [(d["deployment_id"], d["events"]) for d in stats["deployments"]] == [
        (DEP, len(events)),
        ("other-dep", 3),
    ]
    assert [p["name"] for p in stats["projections"]] == [cls.name for cls in ALL_PROJECTIONS]
    assert all(p["stored_version"] == p["code_version"] for p in stats["projections"])
    text = chronicle("stats", "--url", store_url, cwd=tmp_path)
    assert text.returncode == 0
    assert f"{len(events) + 3} events in 2 deployment(s)" in text.stdout
    assert "OperatorNote" in text.stdout and "(no read model)" in text.stdout


# -- bad input ------------------------------------------------------------------------------


async def fingerprint(url: str) -> str:
    """Every table of the store's database (schema) and every row, as one digest."""
    digest = hashlib.sha256()
    if url.startswith("sqlite:"):
        db = sqlite3.connect(f"file:{url[len('sqlite:///') :]}?mode=ro", uri=True)
        try:
            for line in db.iterdump():
                digest.update(line.encode())
        finally:
            db.close()
        return digest.hexdigest()
    dsn, schema = split_pg_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
        )
        for (table,) in tables:
            rows = await conn.fetch(f'SELECT * FROM "{schema}"."{table}"')
            digest.update(table.encode())
            for row in sorted(repr(tuple(r)) for r in rows):
                digest.update(row.encode())
    finally:
        await conn.close()
    return digest.hexdigest()


async def test_bad_input_exits_2_with_a_message_and_leaves_the_store_alone(
    store_url: str, tmp_path: Path
) -> None:
    await scripted_run(store_url, cycles=3)
    async with eventstore.connect(store_url) as store:
        first = (await store.read_deployment(DEP, 1, 1))[0]
        length = await deployment_length(store, DEP)
    before = await fingerprint(store_url)
    export = str(tmp_path / "never.jsonl")
    early = (first.recorded_at - timedelta(seconds=1)).isoformat()
    cases = {
        "unknown deployment": (
            ["replay", "--deployment", "nope", "--at-seq", "1"],
            "deployment 'nope' has no events",
        ),
        "unknown deployment (export)": (
            ["export", "--deployment", "nope", "--out", export],
            "has no events",
        ),
        "unknown deployment (verify)": (["verify", "--deployment", "nope"], "has no events"),
        "time before the first event": (
            ["replay", "--deployment", DEP, "--at-time", early],
            "before deployment",
        ),
        "time without an offset": (
            ["replay", "--deployment", DEP, "--at-time", "2026-11-03T14:05:00"],
            "has no UTC offset",
        ),
        "not a time": (["replay", "--deployment", DEP, "--at-time", "tuesday"], "not an ISO 8601"),
        "seq beyond the end": (
            ["replay", "--deployment", DEP, "--at-seq", str(length + 1)],
            f"has {length} events; --at-seq must be between 1 and {length}",
        ),
        "unknown async projection": (["verify", "--async", "navs"], "unknown projection(s) navs"),
    }
    for name, (args, message) in cases.items():
        done = chronicle(*args, "--url", store_url, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert done.stdout == "", name
    assert not exists(export)
    assert await fingerprint(store_url) == before

    # the API refuses the same way
    async with eventstore.connect(store_url) as store:
        with pytest.raises(AuditInputError, match="between 1 and"):
            await replay_deployment(store, DEP, at_seq=0)


def test_bad_urls_files_and_missing_stores_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for verb in (
        ["stats"],
        ["verify"],
        ["replay", "--deployment", DEP, "--at-seq", "1"],
        ["export", "--deployment", DEP],
    ):
        done = chronicle(*verb, "--url", f"sqlite:///{missing}", cwd=tmp_path)
        assert done.returncode == 2, (verb, done.stderr)
        assert "does not exist" in done.stderr and "--url" in done.stderr
    assert not missing.exists()
    # the default store (./chronicle.db) is not created either
    default = chronicle("stats", cwd=tmp_path)
    assert default.returncode == 2 and not (tmp_path / "chronicle.db").exists()

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some text " * 200)
    done = chronicle("verify", "--url", f"sqlite:///{garbage}", cwd=tmp_path)
    assert done.returncode == 2 and "is not a SQLite database" in done.stderr
    assert garbage.read_bytes().startswith(b"this is not a database")
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    done = chronicle("stats", "--url", f"sqlite:///{empty}", cwd=tmp_path)
    assert done.returncode == 2 and "without a Chronicle store" in done.stderr

    for url, message in (
        ("mysql://somewhere/db", "unsupported store URL"),
        ("sqlite://host/x.db", "has no host"),
        ("postgresql:///db", "names no host"),
    ):
        done = chronicle("stats", "--url", url, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (url, done.stderr)

    not_export = tmp_path / "notes.txt"
    not_export.write_text("hello\n")
    for path, message in ((not_export, "is not a Chronicle export"), (tmp_path / "x", "no export")):
        done = chronicle("verify", "--file", str(path), cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    both = chronicle("verify", "--file", str(not_export), "--deployment", DEP, cwd=tmp_path)
    assert both.returncode == 2 and "drop --deployment" in both.stderr


@pytest.mark.postgres_only
async def test_a_schema_without_a_store_is_refused_not_created(pg_dsn: str, tmp_path: Path) -> None:
    schema = "t_no_store_here"
    done = chronicle("stats", "--url", with_params(pg_dsn, schema=schema), cwd=tmp_path)
    assert done.returncode == 2 and f"no Chronicle store in schema {schema!r}" in done.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema
        )
    finally:
        await conn.close()
    unreachable = chronicle(
        "stats", "--url", "postgresql://postgres@127.0.0.1:1/test", cwd=tmp_path
    )
    assert unreachable.returncode == 2 and "cannot connect to PostgreSQL" in unreachable.stderr

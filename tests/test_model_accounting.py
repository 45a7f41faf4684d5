"""The accounting-events read model: full history, oldest first, replace by id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import AccountingEventRecorded
from projections.models.accounting import AccountingProjection

T0 = datetime(2026, 8, 11, 18, 50, 18, tzinfo=UTC)
LP_KEY = "lp:uniswap_v3:arbitrum:0x54776446aa29fc49d152b4850bd410ea1e4d24bf:0xpool"
LENDING_KEY = "lending:arbitrum:aave_v3:wallet:USDC"


def recorded(dep: str, event_id: str, minute: int, **fields: Any) -> AccountingEventRecorded:
    values: dict[str, Any] = {
        "cycle_id": f"cycle-{minute}",
        "execution_mode": "live",
        "timestamp": T0 + timedelta(minutes=minute),
        "chain": "arbitrum",
        "protocol": "uniswap_v3",
        "wallet_address": "0x54776446Aa29Fc49d152B4850bD410eA1E4d24bF",
        "accounting_event_type": "LP_OPEN",
        "position_key": LP_KEY,
        "confidence": "HIGH",
        "payload": {"event_type": "LP_OPEN", "n": minute},
    }
    values.update(fields)
    return AccountingEventRecorded(accounting_event_id=event_id, deployment_id=dep, **values)


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [AccountingProjection])
    await engine.start()
    yield engine


def model(engine: ProjectionEngine) -> AccountingProjection:
    return cast(AccountingProjection, engine.live("accounting"))


async def ids(engine: ProjectionEngine, dep: str, position_key: str | None = None) -> list[str]:
    return [r["id"] for r in await model(engine).events(engine.store, dep, position_key)]


async def test_rows_have_the_legacy_shape(engine: ProjectionEngine) -> None:
    payload = {
        "event_type": "LP_OPEN",
        "amount0": "2709244538563652195",
        "cost_basis_usd": "0E-24",
        "liquidity": 1115489085710619414828654646022418608911583149704,
        "unmeasured": None,
        "ticks": [-887220, 887220],
        "ratio": 0.25,
        "label": "café",
    }
    reference = {"source": "registry", "primitive": "lp", "registry_handle": None}
    await engine.append(
        "dep",
        "accounting",
        [
            recorded(
                "dep",
                "bdb6ddeb-919e-5bfb-0000-000000000001",
                0,
                ledger_entry_id="ledger-1",
                tx_hash="0xa1",
                confidence="ESTIMATED",
                payload=payload,
                payload_schema_version=2,
                position_reference=reference,
                timestamp=T0 + timedelta(microseconds=343576),
            ),
            recorded("dep", "swap-1", 1, accounting_event_type="SWAP", position_key=""),
        ],
        expected_version=0,
    )
    first, second = await model(engine).events(engine.store, "dep")
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
    assert {k: v for k, v in first.items() if k not in ("payload_json", "position_reference")} == {
        "id": "bdb6ddeb-919e-5bfb-0000-000000000001",
        "deployment_id": "dep",
        "cycle_id": "cycle-0",
        "execution_mode": "live",
        "timestamp": "2026-08-11T18:50:18.343576+00:00",
        "chain": "arbitrum",
        "protocol": "uniswap_v3",
        "wallet_address": "0x54776446Aa29Fc49d152B4850bD410eA1E4d24bF",
        "event_type": "LP_OPEN",
        "position_key": LP_KEY,
        "ledger_entry_id": "ledger-1",
        "tx_hash": "0xa1",
        "confidence": "ESTIMATED",
        "schema_version": 2,
    }
    assert json.loads(first["payload_json"]) == payload  # the 160-bit int and 0E-24 intact
    assert json.loads(first["position_reference"]) == reference
    assert second["timestamp"] == "2026-08-11T18:51:18+00:00"
    assert second["position_key"] == "" and second["position_reference"] is None
    assert second["ledger_entry_id"] is None and second["tx_hash"] is None
    assert json.loads(second["payload_json"]) == {"event_type": "LP_OPEN", "n": 1}


async def test_oldest_first_with_id_tie_break_and_position_filter(
    engine: ProjectionEngine,
) -> None:
    assert await model(engine).events(engine.store, "dep") == []
    await engine.append(
        "dep",
        "accounting",
        [
            recorded("dep", "e-late", 9),
            recorded("dep", "e-b", 5),
            recorded("dep", "e-a", 5, position_key=LENDING_KEY),  # same instant: lower id first
            recorded("dep", "e-early", 1, position_key=LENDING_KEY),
            recorded("dep", "e-swap", 7, position_key=""),
        ],
    )
    await engine.append("other", "accounting", [recorded("other", "e-x", 0)])
    assert await ids(engine, "dep") == ["e-early", "e-a", "e-b", "e-swap", "e-late"]
    assert await ids(engine, "dep", LP_KEY) == ["e-b", "e-late"]
    assert await ids(engine, "dep", LENDING_KEY) == ["e-early", "e-a"]
    assert await ids(engine, "dep", "") == ["e-swap"]  # "" is a key, not "no filter"
    assert await ids(engine, "dep", "lp:unknown") == []
    assert await ids(engine, "nobody") == []
    assert await ids(engine, "other") == ["e-x"]


async def test_re_recording_an_id_replaces_the_event(engine: ProjectionEngine) -> None:
    await engine.append(
        "dep",
        "accounting",
        [
            recorded("dep", "e1", 1, tx_hash="0xold", position_reference={"source": "legacy"}),
            recorded("dep", "e2", 2),
        ],
    )
    await engine.append(
        "dep",
        "accounting",
        [
            recorded(
                "dep",
                "e1",
                3,
                accounting_event_type="LP_CLOSE",
                payload={
                    "event_type": "LP_CLOSE",
                    "realized_pnl_usd": "-3.1782230750000000000000E-8",
                },
            )
        ],
    )
    rows = await model(engine).events(engine.store, "dep")
    assert [r["id"] for r in rows] == ["e2", "e1"]  # one e1, at its new time
    replaced = rows[1]
    assert replaced["event_type"] == "LP_CLOSE" and replaced["tx_hash"] is None
    assert replaced["position_reference"] is None  # the whole event was replaced
    assert json.loads(replaced["payload_json"])["realized_pnl_usd"] == (
        "-3.1782230750000000000000E-8"
    )


async def test_typed_records_round_trip(engine: ProjectionEngine) -> None:
    events = [
        recorded(
            "dep",
            "e1",
            2,
            ledger_entry_id="l1",
            tx_hash="0xa",
            payload={"event_type": "SUPPLY", "amount": "100.000000"},
            payload_schema_version=3,
            position_reference={"source": "registry", "handle": None},
            position_key=LENDING_KEY,
        ),
        recorded("dep", "e0", 1),
    ]
    await engine.append("dep", "accounting", events)
    records = await model(engine).records(engine.store, "dep")
    assert records == [events[1], events[0]]
    assert await model(engine).records(engine.store, "dep", LENDING_KEY) == [events[0]]


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    for i in range(30):
        dep = f"dep-{i % 3}"
        await engine.append(
            dep,
            "accounting",
            [
                recorded(
                    dep,
                    f"e{i % 8}",
                    i % 5,
                    position_key=LP_KEY if i % 2 else LENDING_KEY,
                    payload={"i": i, "x": f"{i}.0"},
                    position_reference={"i": i} if i % 3 else None,
                )
            ],
        )
    sql = "SELECT * FROM rm_accounting_events ORDER BY deployment_id, accounting_event_id"
    before = [tuple(r) for r in await engine.store.query(sql)]
    assert len(before) == 24
    (report,) = await engine.rebuild("accounting", batch_size=7)
    assert report.events == 30
    assert [tuple(r) for r in await engine.store.query(sql)] == before

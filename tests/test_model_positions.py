"""The position events read model: first write wins, attribution patches, legacy orderings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import LegacySource, PositionAttributionUpdated, PositionEventRecorded
from projections.models.positions import PositionEventsProjection

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def pe(
    event_id: str,
    minute: int,
    *,
    seconds: float = 0,
    dep: str = "dep",
    position_id: str = "5642789",
    position_type: str = "LP",
    kind: str = "OPEN",
    **extra: Any,
) -> PositionEventRecorded:
    return PositionEventRecorded(
        position_event_id=event_id,
        deployment_id=dep,
        position_id=position_id,
        position_type=position_type,
        position_event_type=kind,
        timestamp=T0 + timedelta(minutes=minute, seconds=seconds),
        **extra,
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [PositionEventsProjection])
    await engine.start()
    yield engine


def model(engine: ProjectionEngine) -> Any:
    return engine.live("position_events")


async def record(engine: ProjectionEngine, *events: PositionEventRecorded) -> None:
    for event in events:
        await engine.append(event.deployment_id, "positions", [event])


def ids(rows: list[Any]) -> list[str]:
    return [r["id"] if isinstance(r, dict) else r.position_event_id for r in rows]


async def test_a_recorded_event_reads_back_exactly(engine: ProjectionEngine) -> None:
    opened = pe(
        "e1",
        0,
        seconds=0.5,
        cycle_id="cycle-1",
        execution_mode="live",
        protocol="uniswap_v3",
        chain="arbitrum",
        token0="WETH",
        token1="USDC",
        amount0=Decimal("2709244538563652195"),
        amount1=Decimal("0E-18"),
        value_usd=Decimal("-3.1782230750000000000000E-8"),
        tick_lower=-887220,
        tick_upper=887220,
        liquidity=Decimal("1461446703485210103287273052203988822378723970341"),
        in_range=True,
        fees_token0=Decimal("0.0000010"),
        tx_hash="0xabc",
        gas_usd=Decimal("0.01"),
        ledger_entry_id="entry-1",
        protocol_fees_usd=Decimal("0"),
        attribution={"entry_state": {"price": "9.999527650963094E-21"}},
    )
    await record(engine, opened)
    (back,) = await model(engine).history(engine.store, "dep", "5642789")
    assert back == opened
    assert str(back.value_usd) == "-3.1782230750000000000000E-8"
    assert str(back.amount1) == "0E-18"

    (row,) = await model(engine).as_dicts(engine.store, "dep")
    assert row == {
        "id": "e1",
        "deployment_id": "dep",
        "cycle_id": "cycle-1",
        "execution_mode": "live",
        "position_id": "5642789",
        "position_type": "LP",
        "event_type": "OPEN",
        "timestamp": "2026-05-01T00:00:00.500000+00:00",
        "protocol": "uniswap_v3",
        "chain": "arbitrum",
        "token0": "WETH",
        "token1": "USDC",
        "amount0": "2709244538563652195",
        "amount1": "0E-18",
        "value_usd": "-3.1782230750000000000000E-8",
        "tick_lower": -887220,
        "tick_upper": 887220,
        "liquidity": "1461446703485210103287273052203988822378723970341",
        "in_range": 1,
        "fees_token0": "0.0000010",
        "fees_token1": "",
        "leverage": "",
        "entry_price": "",
        "mark_price": "",
        "unrealized_pnl": "",
        "is_long": None,
        "tx_hash": "0xabc",
        "gas_usd": "0.01",
        "ledger_entry_id": "entry-1",
        "protocol_fees_usd": "0",  # a measured zero, unlike '' (not reported)
        "attribution_json": '{"entry_state":{"price":"9.999527650963094E-21"}}',
        "attribution_version": 0,
    }


async def test_first_write_of_an_id_wins(engine: ProjectionEngine) -> None:
    first = pe("e1", 1, value_usd=Decimal("10"))
    await record(engine, first, pe("e1", 9, kind="CLOSE", value_usd=Decimal("99")))
    assert await model(engine).history(engine.store, "dep", "5642789") == [first]
    # the same id in another deployment is that deployment's own event
    await record(engine, pe("e1", 2, dep="other"))
    assert ids(await model(engine).as_dicts(engine.store, "other")) == ["e1"]
    assert ids(await model(engine).as_dicts(engine.store, "dep")) == ["e1"]


async def test_legacy_null_cells_stay_null(engine: ProjectionEngine) -> None:
    legacy = LegacySource(
        source_digest="ab" * 32,
        table="position_events",
        primary_key={"id": "e1"},
        null_columns=("leverage", "mark_price", "protocol", "cycle_id"),
    )
    await record(engine, pe("e1", 1, legacy=legacy, protocol_fees_usd=None))
    (row,) = await model(engine).as_dicts(engine.store, "dep")
    nulls = {k for k, v in row.items() if v is None}
    assert nulls == {
        "leverage",
        "mark_price",
        "protocol",
        "cycle_id",
        "tick_lower",
        "tick_upper",
        "in_range",
        "is_long",
    }
    assert row["entry_price"] == "" and row["protocol_fees_usd"] == "" and row["chain"] == ""
    (back,) = await model(engine).events(engine.store, "dep")
    assert back.leverage is None and back.protocol == "" and back.cycle_id == ""


async def test_attribution_updates_touch_only_attribution(engine: ProjectionEngine) -> None:
    await record(engine, pe("e1", 1, value_usd=Decimal("5")), pe("e1", 1, dep="other"))
    before = await model(engine).as_dicts(engine.store, "dep")
    breakdown = {"principal_recovered_usd": "0", "fees_usd": "1.10"}
    await engine.append(
        "dep",
        "positions",
        [
            PositionAttributionUpdated(
                deployment_id="dep",
                position_event_id="e1",
                attribution=breakdown,
                attribution_version=4,
            ),
            PositionAttributionUpdated(
                deployment_id="dep",
                position_event_id="unknown",
                attribution={},
                attribution_version=9,
            ),
        ],
    )
    (after,) = await model(engine).as_dicts(engine.store, "dep")
    assert after == {
        **before[0],
        "attribution_json": '{"principal_recovered_usd":"0","fees_usd":"1.10"}',
        "attribution_version": 4,
    }
    (event,) = await model(engine).events(engine.store, "dep")
    assert event.attribution == breakdown and event.attribution_version == 4
    # the other deployment's event of the same id, and unknown ids, are untouched
    (other,) = await model(engine).as_dicts(engine.store, "other")
    assert (other["attribution_json"], other["attribution_version"]) == ("{}", 0)
    assert len(await model(engine).as_dicts(engine.store, "dep")) == 1
    # a repeated record does not reset the attribution (first write wins)
    await record(engine, pe("e1", 1))
    (again,) = await model(engine).as_dicts(engine.store, "dep")
    assert again["attribution_version"] == 4


async def fill(engine: ProjectionEngine) -> None:
    await record(
        engine,
        pe("m", 3, position_id="A", kind="CLOSE"),
        pe("z", 1, position_id="A"),
        pe("b", 2, position_id="B", position_type="PERP"),
        pe("a", 2, position_id="B", position_type="PERP", kind="SNAPSHOT"),  # ties "b"
        pe("c", 2, position_id="A", kind="COLLECT_FEES"),  # ties "b" and "a"
        pe("d", 5, position_id="C", position_type="LENDING_DEBT"),
        pe("x", 4, position_id="A", dep="other"),
    )


async def test_events_newest_first(engine: ProjectionEngine) -> None:
    await fill(engine)
    events = model(engine).events
    # equal timestamps: the later recorded first
    assert ids(await events(engine.store, "dep")) == ["d", "m", "c", "a", "b", "z"]
    assert ids(await events(engine.store, "dep", limit=3)) == ["d", "m", "c"]
    assert ids(await events(engine.store, "dep", position_id="A")) == ["m", "c", "z"]
    assert ids(await events(engine.store, "dep", event_type="OPEN")) == ["d", "b", "z"]
    assert ids(await events(engine.store, "dep", position_id="A", event_type="OPEN")) == ["z"]
    assert await events(engine.store, "dep", limit=0) == []
    assert await events(engine.store, "dep", limit=-1) == []
    assert await events(engine.store, "nobody") == []


async def test_history_oldest_first(engine: ProjectionEngine) -> None:
    await fill(engine)
    history = model(engine).history
    assert ids(await history(engine.store, "dep", "A")) == ["z", "c", "m"]
    # equal timestamps: in the order they were recorded
    assert ids(await history(engine.store, "dep", "B")) == ["b", "a"]
    assert ids(await history(engine.store, "other", "A")) == ["x"]
    assert await history(engine.store, "dep", "missing") == []


async def test_filtered_by_position_types(engine: ProjectionEngine) -> None:
    await fill(engine)
    filtered = model(engine).filtered
    assert await filtered(engine.store, "dep", frozenset()) == []
    # position id, then time, then event id (whatever the recording order)
    rows = await filtered(engine.store, "dep", frozenset({"LP", "PERP"}))
    assert ids(rows) == ["z", "c", "m", "a", "b"]
    assert [r["position_id"] for r in rows] == ["A", "A", "A", "B", "B"]
    assert ids(await filtered(engine.store, "dep", frozenset({"LENDING_DEBT"}))) == ["d"]
    assert await filtered(engine.store, "dep", frozenset({"VAULT"})) == []
    assert ids(await filtered(engine.store, "other", frozenset({"LP"}))) == ["x"]


async def test_as_dicts_filters_oldest_first(engine: ProjectionEngine) -> None:
    await fill(engine)
    as_dicts = model(engine).as_dicts
    assert ids(await as_dicts(engine.store, "dep")) == ["z", "b", "a", "c", "m", "d"]
    assert ids(await as_dicts(engine.store, "dep", position_id="A")) == ["z", "c", "m"]
    assert ids(await as_dicts(engine.store, "dep", position_type="PERP")) == ["b", "a"]
    assert ids(await as_dicts(engine.store, "dep", event_type="CLOSE")) == ["m"]
    assert ids(await as_dicts(engine.store, "dep", "A", "LP", "COLLECT_FEES")) == ["c"]
    assert await as_dicts(engine.store, "dep", position_type="PERP", event_type="CLOSE") == []
    # an empty filter filters nothing, as in the legacy reader
    assert ids(await as_dicts(engine.store, "dep", position_id="")) == [
        "z",
        "b",
        "a",
        "c",
        "m",
        "d",
    ]
    assert [r["timestamp"] for r in await as_dicts(engine.store, "dep", position_id="B")] == [
        "2026-05-01T00:02:00+00:00",
        "2026-05-01T00:02:00+00:00",
    ]


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    await fill(engine)
    await record(engine, pe("b", 7, position_id="B"))  # ignored: first write wins
    await engine.append(
        "dep",
        "positions",
        [
            PositionAttributionUpdated(
                deployment_id="dep",
                position_event_id="m",
                attribution={"realized_pnl_usd": "-0.5"},
                attribution_version=4,
            )
        ],
    )
    sql = "SELECT * FROM rm_position_events ORDER BY deployment_id, id"
    before = [tuple(r) for r in await engine.store.query(sql)]
    assert len(before) == 7
    (report,) = await engine.rebuild("position_events", batch_size=3)
    assert report.events == 9
    assert [tuple(r) for r in await engine.store.query(sql)] == before
    (report,) = await engine.rebuild("position_events", deployment_id="dep", batch_size=2)
    assert [tuple(r) for r in await engine.store.query(sql)] == before

"""The CLOB orders read model: saves, partial status updates, deletes, open orders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import (
    ClobFill,
    ClobOrderDeleted,
    ClobOrderSaved,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
)
from projections.models.orders import ClobOrder, OrdersProjection

T0 = datetime(2026, 5, 1, tzinfo=UTC)
S = ClobOrderStatus


def at(minute: int, micro: int = 0) -> datetime:
    return T0 + timedelta(minutes=minute, microseconds=micro)


def saved(dep: str, order_id: str, minute: int, **fields: Any) -> ClobOrderSaved:
    values: dict[str, Any] = {
        "market_id": "mkt-a",
        "token_id": "tok-1",
        "side": "BUY",
        "status": S.LIVE,
        "price": Decimal("0.55"),
        "size": Decimal("100"),
        "submitted_at": at(minute),
        "updated_at": at(minute),
    }
    values.update(fields)
    return ClobOrderSaved(deployment_id=dep, order_id=order_id, **values)


def status(dep: str, order_id: str, new: ClobOrderStatus, minute: int, **fields: Any) -> Any:
    return ClobOrderStatusUpdated(
        deployment_id=dep, order_id=order_id, status=new, updated_at=at(minute), **fields
    )


def fill(fill_id: str, price: str, size: str, fee: str, minute: int) -> ClobFill:
    return ClobFill(
        fill_id=fill_id,
        price=Decimal(price),
        size=Decimal(size),
        fee=Decimal(fee),
        timestamp=at(minute, 123456),
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [OrdersProjection])
    await engine.start()
    yield engine


def model(engine: ProjectionEngine) -> OrdersProjection:
    return cast(OrdersProjection, engine.live("orders"))


async def write(engine: ProjectionEngine, dep: str, *events: DomainEvent) -> None:
    await engine.append(dep, "clob", list(events))


async def ids(engine: ProjectionEngine, dep: str, market_id: str | None = None) -> list[str]:
    return [o.order_id for o in await model(engine).open_orders(engine.store, dep, market_id)]


async def test_a_saved_order_reads_back_exactly(engine: ProjectionEngine) -> None:
    fills = (
        fill("f1", "0.5500", "40", "0E-8", 2),
        ClobFill(
            fill_id="f2",
            price=Decimal("0.549999999999999999999999999999"),
            size=Decimal("1E+1"),
            fee=Decimal("0.01"),
            timestamp=at(3),
            counterparty="0xabc",
        ),
    )
    event = saved(
        "dep",
        "o1",
        1,
        side="SELL",
        status=S.PARTIALLY_FILLED,
        price=Decimal("0.5500"),
        size=Decimal("100.000000000000000001"),
        filled_size=Decimal("50"),
        average_fill_price=Decimal("0.5499999"),
        fills=fills,
        order_type="FOK",
        intent_id="intent-9",
        error="",
        metadata={"nested": {"x": [1, "2.50", None]}, "flag": True},
        updated_at=at(4, 7),
    )
    await write(engine, "dep", event)
    got = await model(engine).get(engine.store, "dep", "o1")
    assert got == ClobOrder(
        deployment_id="dep",
        order_id="o1",
        market_id="mkt-a",
        token_id="tok-1",
        side="SELL",
        status=S.PARTIALLY_FILLED,
        price=Decimal("0.5500"),
        size=Decimal("100.000000000000000001"),
        filled_size=Decimal("50"),
        average_fill_price=Decimal("0.5499999"),
        fills=fills,
        order_type="FOK",
        intent_id="intent-9",
        error="",
        metadata={"nested": {"x": [1, "2.50", None]}, "flag": True},
        submitted_at=at(1),
        updated_at=at(4, 7),
    )
    assert got is not None and got.is_open
    # digits and exponents survive, not just numeric equality
    assert str(got.price) == "0.5500" and str(got.fills[0].fee) == "0E-8"
    assert str(got.fills[1].size) == "1E+1"
    assert got.fills[0].timestamp == at(2, 123456) and got.fills[0].counterparty is None
    assert await model(engine).get(engine.store, "dep", "nope") is None
    assert await model(engine).get(engine.store, "other", "o1") is None


async def test_a_resave_replaces_the_order_but_keeps_its_first_submission(
    engine: ProjectionEngine,
) -> None:
    await write(engine, "dep", saved("dep", "o1", 1, intent_id="i1", error="e"))
    await write(
        engine,
        "dep",
        saved(
            "dep",
            "o1",
            9,
            market_id="mkt-b",
            status=S.SUBMITTED,
            price=Decimal("0.60"),
            average_fill_price=Decimal("0.000"),  # falsy: stored as NULL, like the legacy save
            updated_at=at(10),
        ),
    )
    got = await model(engine).get(engine.store, "dep", "o1")
    assert got is not None
    assert got.submitted_at == at(1) and got.updated_at == at(10)
    assert (got.market_id, got.status, got.price) == ("mkt-b", S.SUBMITTED, Decimal("0.60"))
    assert got.average_fill_price is None
    assert (got.intent_id, got.error) == (None, None)  # a whole-order save clears them


async def test_a_status_update_changes_only_what_it_carries(engine: ProjectionEngine) -> None:
    first = (fill("f1", "0.5", "10", "0.001", 2),)
    await write(
        engine,
        "dep",
        saved(
            "dep",
            "o1",
            1,
            fills=first,
            filled_size=Decimal("10"),
            average_fill_price=Decimal("0.5"),
            error="old",
        ),
    )
    await write(engine, "dep", status("dep", "o1", S.PARTIALLY_FILLED, 5))
    got = await model(engine).get(engine.store, "dep", "o1")
    assert got is not None
    assert (got.status, got.updated_at, got.submitted_at) == (S.PARTIALLY_FILLED, at(5), at(1))
    assert got.fills == first and got.filled_size == Decimal("10")
    assert got.average_fill_price == Decimal("0.5") and got.error == "old"

    second = (fill("f2", "0.51", "20", "0.002", 6), fill("f3", "0.52", "5", "0", 7))
    await write(
        engine,
        "dep",
        status(
            "dep",
            "o1",
            S.MATCHED,
            8,
            fills=second,
            filled_size=Decimal("25.0"),
            average_fill_price=Decimal("0"),  # an update stores what it is given
            error="",
        ),
    )
    got = await model(engine).get(engine.store, "dep", "o1")
    assert got is not None
    assert got.fills == second  # replaced, not appended
    assert str(got.filled_size) == "25.0"
    assert got.average_fill_price == Decimal("0") and got.error == ""
    assert got.status is S.MATCHED and not got.is_open

    # an empty fills list is a value too: it replaces the list
    await write(engine, "dep", status("dep", "o1", S.CANCELLED, 9, fills=()))
    got = await model(engine).get(engine.store, "dep", "o1")
    assert got is not None and got.fills == () and str(got.filled_size) == "25.0"


async def test_updates_and_deletes_of_unknown_orders_change_nothing(
    engine: ProjectionEngine,
) -> None:
    await write(engine, "dep", saved("dep", "o1", 1))
    await write(engine, "other", saved("other", "o1", 1))
    await write(engine, "dep", status("dep", "ghost", S.CANCELLED, 2))
    await write(
        engine, "dep", ClobOrderDeleted(deployment_id="dep", order_id="ghost", deleted_at=at(3))
    )
    assert await model(engine).get(engine.store, "dep", "ghost") is None
    await write(
        engine, "dep", ClobOrderDeleted(deployment_id="dep", order_id="o1", deleted_at=at(4))
    )
    assert await model(engine).get(engine.store, "dep", "o1") is None
    other = await model(engine).get(engine.store, "other", "o1")
    assert other is not None and other.status is S.LIVE  # scoped to its deployment
    assert await ids(engine, "dep") == []
    assert await ids(engine, "other") == ["o1"]


async def test_open_orders_newest_first_filtered_by_status_and_market(
    engine: ProjectionEngine,
) -> None:
    assert await ids(engine, "dep") == []
    await write(
        engine,
        "dep",
        saved("dep", "a", 1, status=S.PENDING),
        saved("dep", "b", 5, status=S.SUBMITTED, market_id="mkt-b"),
        saved("dep", "c", 5, status=S.LIVE),  # same instant as "b": higher id first
        saved("dep", "d", 3, status=S.PARTIALLY_FILLED, market_id="mkt-b"),
        saved("dep", "e", 9, status=S.MATCHED),
        saved("dep", "f", 8, status=S.CANCELLED),
        saved("dep", "g", 7, status=S.EXPIRED),
        saved("dep", "h", 6, status=S.FAILED),
    )
    await write(engine, "other", saved("other", "z", 4))
    assert await ids(engine, "dep") == ["c", "b", "d", "a"]
    assert await ids(engine, "dep", "mkt-b") == ["b", "d"]
    assert await ids(engine, "dep", "") == ["c", "b", "d", "a"]  # "" does not filter
    assert await ids(engine, "dep", "mkt-none") == []
    assert await ids(engine, "nobody") == []

    # a terminal status closes an order; a re-save keeps its place (first submission)
    await write(engine, "dep", status("dep", "c", S.CANCELLED, 10))
    await write(engine, "dep", saved("dep", "a", 20, status=S.LIVE))
    assert await ids(engine, "dep") == ["b", "d", "a"]
    orders = await model(engine).open_orders(engine.store, "dep")
    assert [o.submitted_at for o in orders] == [at(5), at(3), at(1)]
    assert all(o.is_open for o in orders)


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    for i in range(24):
        dep = f"dep-{i % 3}"
        oid = f"o{i % 7}"
        await write(
            engine,
            dep,
            saved(dep, oid, i, fills=(fill(f"f{i}", "0.5", str(i), "0E-9", i),)),
        )
        if i % 4 == 0:
            await write(
                engine, dep, status(dep, oid, S.PARTIALLY_FILLED, i + 1, filled_size=Decimal(i))
            )
        if i % 5 == 0:
            await write(
                engine, dep, ClobOrderDeleted(deployment_id=dep, order_id=oid, deleted_at=at(i))
            )
    sql = "SELECT * FROM rm_clob_orders ORDER BY deployment_id, order_id"
    before = [tuple(r) for r in await engine.store.query(sql)]
    assert len(before) > 5
    (report,) = await engine.rebuild("orders", batch_size=5)
    assert report.events > 24
    assert [tuple(r) for r in await engine.store.query(sql)] == before
    await engine.rebuild("orders", deployment_id="dep-1", batch_size=3)
    assert [tuple(r) for r in await engine.store.query(sql)] == before

"""The store's generic SQL access (for read models), type filters and payload forms."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import pytest
from conftest import settled

import eventstore
from eventstore import EventStore, NewEvent, Statement

TABLE = "CREATE TABLE totals (k TEXT PRIMARY KEY, amount TEXT NOT NULL, n BIGINT NOT NULL)"
UPSERT = (
    "INSERT INTO totals (k, amount, n) VALUES ($1, $2, 1) ON CONFLICT (k) DO UPDATE "
    "SET amount = chronicle_dec_add(totals.amount, excluded.amount), n = totals.n + 1"
)


async def test_execute_runs_statements_atomically(store: EventStore) -> None:
    await store.execute([Statement(TABLE)])
    amounts = ["0.1", "0.2", "0.000000000000000001", "12345678901234567890.5"]
    await store.execute([Statement(UPSERT, ("gas", a)) for a in amounts])
    rows = await store.query("SELECT amount, n FROM totals WHERE k = $1", ("gas",))
    assert [tuple(r) for r in rows] == [("12345678901234567890.800000000000000001", 4)]
    with pytest.raises(Exception):  # noqa: B017 - the driver's own error type differs
        await store.execute([Statement(UPSERT, ("gas", "1")), Statement("SELECT * FROM nope")])
    rows = await store.query("SELECT amount, n FROM totals WHERE k = $1", ("gas",))
    assert [tuple(r) for r in rows] == [("12345678901234567890.800000000000000001", 4)]


async def test_decimal_functions_print_like_numeric(store: EventStore) -> None:
    rows = await store.query(
        "SELECT chronicle_dec_add($1, $2), chronicle_dec_sub($3, $4), chronicle_dec_add($5, NULL)",
        ("0E-7", "0", "1", "0.50", "1.10"),
    )
    assert tuple(rows[0]) == ("0.0000000", "0.50", "1.10")


async def test_read_all_filters_by_type(store: EventStore) -> None:
    for kind in ("A", "B", "A", "C"):
        await store.append("dep", "s", [NewEvent(kind, {})])
    await settled(store)
    only_a = await store.read_all(0, 100, types=["A"])
    assert [e.type for e in only_a] == ["A", "A"]
    assert [e.type for e in await store.read_all(0, 100, types=["B", "C"])] == ["B", "C"]
    assert await store.read_all(0, 100, types=[]) == []
    with pytest.raises(eventstore.InvalidIdentifier):
        await store.read_all(0, 100, types=[""])


async def test_pre_encoded_payloads_and_big_integers(store: EventStore) -> None:
    huge = 1115489085710619414828654646022418608911583149704  # a real 160-bit liquidity
    await store.append("dep", "s", [NewEvent("Big", {"liquidity": huge, "fee": Decimal("0.3")})])
    raw = msgspec.msgpack.encode({"already": "encoded"})
    await store.append("dep", "s", [NewEvent("Raw", msgspec.Raw(raw))])
    big, pre = await store.read_stream("dep", "s")
    assert big.data == {"liquidity": huge, "fee": "0.3"}
    assert pre.raw_data == raw and pre.data == {"already": "encoded"}
    assert (await store.verify()).ok


async def test_a_transaction_reads_and_writes_atomically(store: EventStore) -> None:
    await store.execute([Statement(TABLE)])
    await store.append("dep", "s", [NewEvent("A", {}), NewEvent("B", {})])
    async with store.transaction() as tx:
        events = await tx.read_all(0, 10, ["B"])
        assert [e.type for e in events] == ["B"]
        assert [e.deployment_seq for e in await tx.read_deployment("dep", 2)] == [2]
        await tx.execute([Statement(UPSERT, ("seen", "1.5"))])
        rows = await tx.query("SELECT amount FROM totals WHERE k = $1", ("seen",))
        assert rows[0][0] == "1.5"
    assert (await store.query("SELECT n FROM totals"))[0][0] == 1

    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.execute([Statement(UPSERT, ("seen", "1"))])
            raise RuntimeError("changed my mind")
    assert tuple((await store.query("SELECT amount, n FROM totals"))[0]) == ("1.5", 1)


async def test_appends_wait_for_an_open_transaction(store: EventStore) -> None:
    await store.execute([Statement(TABLE)])
    order: list[str] = []

    async def append_meanwhile() -> None:
        await store.append("dep", "s", [NewEvent("A", {})])
        order.append("append")

    async with store.transaction() as tx:
        task = asyncio.create_task(append_meanwhile())
        await asyncio.sleep(0.05)
        await tx.execute([Statement(UPSERT, ("k", "1"))])
        order.append("transaction")
    await asyncio.wait_for(task, 5)
    if store.backend == "sqlite":  # one writer at a time: the append waited
        assert order == ["transaction", "append"]
    assert await store.stream_version("dep", "s") == 1


async def test_blocking_reads_for_synchronous_callers(store: EventStore) -> None:
    await store.execute([Statement(TABLE), Statement(UPSERT, ("k", "2.5"))])
    # called from inside the running loop, as a synchronous valuer would
    rows = store.query_sync("SELECT amount, n FROM totals WHERE k = $1", ("k",))
    assert [tuple(r) for r in rows] == [("2.5", 1)]

"""Reading the log back: streams, deployments, the global log, subscriptions, verify."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from conftest import settled

import eventstore
from eventstore import EventStore, NewEvent


async def fill(store: EventStore) -> None:
    """Two deployments, interleaved, three streams."""
    for i in range(1, 6):
        await store.append("dep-a", "ledger", [NewEvent("L", {"i": i})])
        await store.append("dep-b", "state", [NewEvent("S", {"i": i})])
        if i % 2:
            await store.append("dep-a", "orders/o-1", [NewEvent("O", {"i": i})])


async def test_read_stream_forward_and_backward(store: EventStore) -> None:
    await fill(store)
    forward = await store.read_stream("dep-a", "ledger")
    assert [e.stream_version for e in forward] == [1, 2, 3, 4, 5]
    assert [e.data["i"] for e in forward] == [1, 2, 3, 4, 5]
    assert [e.stream_version for e in await store.read_stream("dep-a", "ledger", 3)] == [3, 4, 5]
    page = await store.read_stream("dep-a", "ledger", from_version=2, limit=2)
    assert [e.stream_version for e in page] == [2, 3]
    last = await store.read_stream("dep-a", "ledger", backwards=True, limit=1)
    assert [e.stream_version for e in last] == [5]
    back = await store.read_stream("dep-a", "ledger", from_version=3, backwards=True)
    assert [e.stream_version for e in back] == [3, 2, 1]
    assert await store.read_stream("dep-a", "nope") == []
    assert await store.read_stream("dep-a", "ledger", limit=0) == []


async def test_read_deployment_is_commit_order_across_streams(store: EventStore) -> None:
    await fill(store)
    log = await store.read_deployment("dep-a")
    assert [e.deployment_seq for e in log] == list(range(1, 9))
    assert [(e.stream, e.data["i"]) for e in log[:4]] == [
        ("ledger", 1),
        ("orders/o-1", 1),
        ("ledger", 2),
        ("ledger", 3),
    ]
    assert [e.position for e in log] == sorted(e.position for e in log)
    tail = await store.read_deployment("dep-a", from_seq=7, limit=5)
    assert [e.deployment_seq for e in tail] == [7, 8]
    assert await store.read_deployment("nobody") == []


async def test_read_all_pages_through_the_global_log(store: EventStore) -> None:
    await fill(store)
    await settled(store)
    everything = await store.read_all(0, 1000)
    assert len(everything) == 13
    positions = [e.position for e in everything]
    assert positions == sorted(set(positions))
    pages: list[eventstore.RecordedEvent] = []
    after = 0
    while batch := await store.read_all(after, 4):
        pages.extend(batch)
        after = batch[-1].position
    assert [e.event_id for e in pages] == [e.event_id for e in everything]
    assert await store.read_all(everything[-1].position) == []


async def test_subscribe_catches_up_then_follows(store_url: str) -> None:
    async with eventstore.connect(store_url) as reader, eventstore.connect(store_url) as writer:
        await writer.append("dep", "s", [NewEvent("Old", {"n": 1}), NewEvent("Old", {"n": 2})])
        received: list[eventstore.RecordedEvent] = []

        async def follow() -> None:
            async for event in reader.subscribe(after_position=0, idle_timeout=0.05):
                received.append(event)
                if len(received) == 5:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        for n in (3, 4, 5):
            await writer.append("dep", "s", [NewEvent("New", {"n": n})])
        await asyncio.wait_for(task, 10)
    assert [e.data["n"] for e in received] == [1, 2, 3, 4, 5]
    assert [e.type for e in received] == ["Old", "Old", "New", "New", "New"]


async def test_subscribe_resumes_after_a_checkpoint(store: EventStore) -> None:
    await fill(store)
    await settled(store)
    everything = await store.read_all(0, 100)
    checkpoint = everything[6].position
    resumed: list[int] = []
    async for event in store.subscribe(after_position=checkpoint, idle_timeout=0.01):
        resumed.append(event.position)
        if len(resumed) == len(everything) - 7:
            break
    assert resumed == [e.position for e in everything[7:]]


async def test_verify_accepts_an_intact_log(store: EventStore) -> None:
    await fill(store)
    report = await store.verify()
    assert report.ok and report.first_bad_position is None
    assert (report.deployments_checked, report.events_checked) == (2, 13)
    only_b = await store.verify("dep-b")
    assert (only_b.ok, only_b.events_checked) == (True, 5)
    assert (await store.verify("nobody")).events_checked == 0


async def test_hashes_chain_within_each_deployment(store: EventStore) -> None:
    await fill(store)
    log = await store.read_deployment("dep-a")
    assert log[0].prev_hash == bytes(32)
    for before, after in itertools.pairwise(log):
        assert after.prev_hash == before.hash
    assert len({e.hash for e in log}) == len(log)


async def test_a_closed_store_refuses_use(store_url: str) -> None:
    store = await eventstore.connect(store_url)
    await store.append("dep", "s", [NewEvent("A", {})])
    await store.close()
    await store.close()  # closing twice is harmless
    assert store.closed
    with pytest.raises(eventstore.StoreClosed):
        await store.read_all()


async def test_schema_is_created_once_and_reopened(store_url: str) -> None:
    async with eventstore.connect(store_url) as first:
        await first.append("dep", "s", [NewEvent("A", {})])
    async with eventstore.connect(store_url) as again:
        assert await again.stream_version("dep", "s") == 1
        assert (await again.verify()).ok


async def test_a_newer_schema_is_refused(
    store_url: str, backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with eventstore.connect(store_url):
        pass
    if backend_name == "sqlite":
        db = sqlite3.connect(tmp_path / "chronicle.db")
        with db:
            db.execute("UPDATE chronicle_schema SET version = 99")
        db.close()
    else:
        schema = request.getfixturevalue("pg_schema")
        conn = await asyncpg.connect(request.getfixturevalue("pg_dsn"))
        await conn.execute(f'UPDATE "{schema}".chronicle_schema SET version = 99')
        await conn.close()
    with pytest.raises(eventstore.SchemaVersionError, match="upgrade"):
        await eventstore.connect(store_url)


async def test_concurrent_appends_to_one_deployment_keep_the_chain(store: EventStore) -> None:
    """Tasks racing on one deployment (different streams) never fork its chain."""

    async def writer(stream: str) -> None:
        for i in range(15):
            await store.append("dep", stream, [NewEvent("A", {"i": i})])

    await asyncio.gather(*(writer(f"s{n}") for n in range(6)))
    log = await store.read_deployment("dep")
    assert [e.deployment_seq for e in log] == list(range(1, 91))
    assert [e.position for e in log] == sorted(e.position for e in log)
    assert (await store.verify()).ok

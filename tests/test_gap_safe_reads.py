"""Gap-safe global reads while many writers commit out of order.

On PostgreSQL a position is fixed when a row is inserted but becomes visible
only when its transaction commits, so a later-starting append can commit (and
be read) before an earlier one that holds a lower position. ``read_all`` and
``subscribe`` must still hand out every committed event exactly once, in
increasing position order, never advancing past a position that is still in
flight. The race test holds appends open with an inline ``pg_sleep`` and lets
later writers overtake them, while a polling reader, a subscriber and (as a
negative control) a naive ``WHERE position > $1`` reader follow the log.

SQLite serializes writers, so the same scenario runs there with a no-op inline
statement: commit order is position order and nothing is ever held back.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from conftest import with_params

import eventstore
from eventstore import EventStore, Horizon, NewEvent, RecordedEvent, Statement

WRITERS = 10
APPENDS_PER_WRITER = 3
STAGGER = 0.04  # writer i starts i * STAGGER seconds in ...
HOLD_STEP = 0.06  # ... and holds its first append (WRITERS - i) * HOLD_STEP + 0.05 open
LONG_HOLD = 1.2  # writer A's hold; writer B starts after A's INSERT and must overtake it
SETTLE_TIMEOUT = 20.0  # other sessions' open transactions on the server may hold readers back

NAIVE_SQL = "SELECT position FROM chronicle_events WHERE position > $1 ORDER BY position"


# -- raw access to the log, bypassing the store -----------------------------------------


def split_pg_url(url: str) -> tuple[str, str]:
    """A store URL (``...?schema=s``) as an asyncpg DSN and the schema name."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    schema = params.pop("schema", "public")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), parts.fragment))
    return dsn, schema


async def raw_pg(url: str) -> asyncpg.Connection:
    dsn, schema = split_pg_url(url)
    return await asyncpg.connect(dsn, server_settings={"search_path": schema})


class RawLog:
    """Every row of ``chronicle_events``, read directly (no horizon filter)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg: asyncpg.Connection | None = None
        self.sqlite: sqlite3.Connection | None = None

    async def __aenter__(self) -> RawLog:
        if self.url.startswith("sqlite:"):
            self.sqlite = sqlite3.connect(self.url[len("sqlite:///") :], isolation_level=None)
        else:
            self.pg = await raw_pg(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pg is not None:
            await self.pg.close()
        if self.sqlite is not None:
            self.sqlite.close()

    async def rows(self) -> list[tuple[int, uuid.UUID]]:
        sql = "SELECT position, event_id FROM chronicle_events ORDER BY position"
        if self.pg is not None:
            return [(r[0], r[1]) for r in await self.pg.fetch(sql)]
        assert self.sqlite is not None
        return [(p, uuid.UUID(bytes=e)) for p, e in self.sqlite.execute(sql).fetchall()]

    async def visible(self, positions: Sequence[int]) -> int:
        """How many of ``positions`` are committed (visible to a plain query)."""
        assert self.pg is not None
        count: int = await self.pg.fetchval(
            "SELECT count(*) FROM chronicle_events WHERE position = ANY($1::bigint[])",
            list(positions),
        )
        return count


# -- writers ------------------------------------------------------------------------------


@dataclass
class Append:
    writer: str
    deployment_id: str
    event_ids: list[uuid.UUID]
    started: float = 0.0
    inserted: float = 0.0  # the INSERT has run (inline step called); not yet committed
    finished: float = 0.0  # store.append returned: committed
    rank: int = -1  # order of completion among all appends
    positions: list[int] = field(default_factory=list)
    result: eventstore.AppendResult | None = None


class Race:
    """Appends that hold their transaction open for a while after their INSERT."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.pg = store.backend == "postgresql"
        self.loop = asyncio.get_running_loop()
        self.appends: list[Append] = []
        self.completed = 0

    def hold(self, seconds: float) -> Statement:
        if self.pg:
            return Statement("SELECT pg_sleep($1)", (seconds,))
        return Statement("SELECT $1", (seconds,))  # SQLite serializes writers anyway

    async def append(
        self,
        writer: str,
        deployment_id: str,
        n_events: int,
        hold: float,
        inserted: asyncio.Event | None = None,
    ) -> Append:
        events = [NewEvent("Tick", {"writer": writer, "i": i}) for i in range(n_events)]
        record = Append(writer, deployment_id, [e.event_id for e in events])
        self.appends.append(record)

        def step(recorded: Sequence[RecordedEvent]) -> list[Statement]:
            # runs after the INSERT, inside the append's transaction (a worker thread on SQLite)
            record.inserted = time.monotonic()
            record.positions = [e.position for e in recorded]
            if inserted is not None:
                self.loop.call_soon_threadsafe(inserted.set)
            return [self.hold(hold)]

        record.started = time.monotonic()
        record.result = await self.store.append(deployment_id, "ticks", events, inline=step)
        record.finished = time.monotonic()
        record.rank = self.completed
        self.completed += 1
        return record


async def staggered_writer(race: Race, i: int) -> list[Append]:
    """Writer i starts later than writer i-1 and holds its first append open for less time."""
    await asyncio.sleep(i * STAGGER)
    deployment = f"dep-{i:02d}"
    first_hold = 0.05 + (WRITERS - i) * HOLD_STEP
    done = [await race.append(f"w{i}", deployment, 1 + i % 3, first_hold)]
    for k in range(1, APPENDS_PER_WRITER):
        hold = ((i * 7 + k * 3) % 5) * 0.04
        done.append(await race.append(f"w{i}", deployment, 1 + (i + k) % 3, hold))
    return done


@dataclass
class Probe:
    """What was observable while A's transaction was open and B had committed."""

    a_still_running: bool
    a_visible_raw: int
    b_visible_raw: int
    horizon: Horizon
    readable_positions: list[int]


async def long_then_short(race: Race, raw: RawLog) -> tuple[Append, Append, Probe]:
    """A holds its transaction open; B (another deployment) starts after A's INSERT and
    commits first. While A is still open, look at the log from the outside."""
    a_inserted = asyncio.Event()
    a_task = asyncio.create_task(race.append("A", "dep-long", 2, LONG_HOLD, a_inserted))
    await a_inserted.wait()
    b = await race.append("B", "dep-short", 2, 0.0)
    a_record = next(r for r in race.appends if r.writer == "A")
    horizon = await race.store.horizon()
    readable = [e.position for e in await race.store.read_all(0, 100_000)]
    a_visible = b_visible = -1
    if race.pg:
        a_visible = await raw.visible(a_record.positions)
        b_visible = await raw.visible(b.positions)
    probe = Probe(not a_task.done(), a_visible, b_visible, horizon, readable)
    a = await a_task
    return a, b, probe


# -- readers ------------------------------------------------------------------------------


async def poll_read_all(store: EventStore, out: list[RecordedEvent]) -> None:
    """Follow the global log with read_all, advancing by the last position received."""
    position = 0
    while True:
        batch = await store.read_all(position, limit=7)
        if not batch:
            await asyncio.sleep(0.005)
            continue
        out.extend(batch)
        position = batch[-1].position


async def follow_subscription(store: EventStore, out: list[RecordedEvent]) -> None:
    events = store.subscribe(after_position=0, batch_size=5, idle_timeout=0.05)
    try:
        async for event in events:
            out.append(event)
    finally:
        await events.aclose()


async def naive_follow(conn: asyncpg.Connection, out: list[int]) -> None:
    """The bug class: advance past whatever is visible, with no horizon."""
    position = 0
    while True:
        rows = await conn.fetch(NAIVE_SQL, position)
        if not rows:
            await asyncio.sleep(0.005)
            continue
        out.extend(row[0] for row in rows)
        position = rows[-1][0]


async def settled_read_all(store: EventStore, raw: RawLog) -> list[RecordedEvent]:
    """The whole log through read_all, once nothing committed is held back any more."""
    expected = await raw.rows()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        events = await store.read_all(0, 100_000)
        if len(events) == len(expected) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.02)


async def wait_until_caught_up(readers: dict[str, list[RecordedEvent]], last: int) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if all(seen and seen[-1].position >= last for seen in readers.values()):
            await asyncio.sleep(0.1)  # a duplicate or a late extra would show up now
            return
        await asyncio.sleep(0.01)


def inversions(appends: Sequence[Append]) -> int:
    """Pairs of appends whose completion order disagrees with their position order."""
    ordered = sorted(appends, key=lambda a: a.positions[0])
    return sum(
        1
        for i, x in enumerate(ordered)
        for y in ordered[i + 1 :]
        if y.rank < x.rank  # y holds the higher position but completed first
    )


def strictly_increasing(values: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


# -- the race -----------------------------------------------------------------------------


async def test_readers_see_every_commit_once_in_order_despite_late_commits(
    store: EventStore, store_url: str
) -> None:
    race = Race(store)
    polled: list[RecordedEvent] = []
    subscribed: list[RecordedEvent] = []
    naive: list[int] = []
    async with RawLog(store_url) as raw:
        naive_conn = await raw_pg(store_url) if race.pg else None
        tasks = [
            asyncio.create_task(poll_read_all(store, polled)),
            asyncio.create_task(follow_subscription(store, subscribed)),
        ]
        if naive_conn is not None:
            tasks.append(asyncio.create_task(naive_follow(naive_conn, naive)))
        try:
            pair = asyncio.create_task(long_then_short(race, raw))
            staggered = await asyncio.gather(*(staggered_writer(race, i) for i in range(WRITERS)))
            a, b, probe = await pair

            final = await settled_read_all(store, raw)
            truth = await raw.rows()
            await wait_until_caught_up({"read_all": polled, "subscribe": subscribed}, truth[-1][0])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if naive_conn is not None:
                await naive_conn.close()

    # the final full read is the whole table, and it is exactly what the writers committed
    appended_ids = [eid for rec in race.appends for eid in rec.event_ids]
    expected_total = sum(1 + i % 3 + sum(1 + (i + k) % 3 for k in (1, 2)) for i in range(WRITERS))
    assert len(race.appends) == WRITERS * APPENDS_PER_WRITER + 2
    assert len(appended_ids) == expected_total + 4
    assert [(e.position, e.event_id) for e in final] == truth
    assert sorted(e.event_id for e in final) == sorted(appended_ids)
    by_position = {e.position: e for e in final}
    for rec in race.appends:
        assert rec.result is not None and rec.result.position == rec.positions[-1]
        assert [by_position[p].event_id for p in rec.positions] == rec.event_ids
        assert all(by_position[p].deployment_id == rec.deployment_id for p in rec.positions)
    final_positions = [e.position for e in final]
    assert strictly_increasing(final_positions)

    # both readers saw every committed event exactly once, in strictly increasing order
    for name, seen in (("read_all", polled), ("subscribe", subscribed)):
        positions = [e.position for e in seen]
        assert strictly_increasing(positions), f"{name} went backwards or repeated"
        assert positions == final_positions, f"{name} missed or doubled events"
        assert [e.event_id for e in seen] == [e.event_id for e in final]
    assert (await store.verify()).ok

    a_first, b_first = a.positions[0], b.positions[0]
    if race.pg:
        # A and B were in flight together: B started after A's INSERT, committed before A
        assert a.inserted < b.started < b.finished < a.finished
        assert b.finished - b.started < LONG_HOLD / 2  # B never waited for A (no table lock)
        assert a.positions[-1] < b_first  # ... yet B holds the higher positions
        assert probe.a_still_running and probe.a_visible_raw == 0
        assert probe.b_visible_raw == len(b.positions)
        # ... so B's committed events were held back, not released past A's gap
        assert probe.horizon.held_back >= len(b.positions)
        assert probe.horizon.readable_below <= a_first
        assert not set(probe.readable_positions) & set(a.positions + b.positions)
        assert all(p < a_first for p in probe.readable_positions)
        # later-starting staggered writers overtook earlier ones, as designed
        firsts = [writer[0] for writer in staggered]
        assert firsts[-1].started > firsts[0].started and firsts[-1].rank < firsts[0].rank
        assert firsts[0].positions[0] < firsts[-1].positions[0]
        assert inversions(race.appends) > 0
        # negative control: the naive reader saw B, moved past A's positions and lost them
        assert strictly_increasing(naive)
        assert set(naive) < set(final_positions)
        assert set(b.positions) <= set(naive)
        assert not set(a.positions) & set(naive)
    else:
        # one writer at a time: commit order is position order, nothing is held back
        assert inversions(race.appends) == 0
        assert b.started > a.inserted and b_first > a.positions[-1]
        assert probe.horizon.held_back == 0
        assert probe.horizon.readable_below == probe.horizon.head_position + 1
        assert probe.readable_positions == list(range(1, len(probe.readable_positions) + 1))
        assert final_positions == list(range(1, len(final_positions) + 1))  # dense


# -- deterministic negative control ------------------------------------------------------


@pytest.mark.postgres_only
async def test_naive_position_reader_skips_a_late_commit_read_all_does_not(
    pg_dsn: str, pg_schema: str
) -> None:
    """A held-open append (gated on an advisory lock the test owns) and a later append
    that commits: a plain ``position > cursor`` query already returns the later
    position while the earlier one is invisible, so a naive follower skips it for
    good; ``read_all`` returns neither until the first commits, then both, in order."""
    url = with_params(pg_dsn, schema=pg_schema)
    gate_key = uuid.uuid4().int & 0x7FFF_FFFF_FFFF_FFFF
    async with eventstore.connect(url) as store:
        raw = await raw_pg(url)
        gate = await raw_pg(url)
        subscribed: list[RecordedEvent] = []
        try:
            base = (await store.append("dep-0", "s", [NewEvent("Base", {})])).position
            settled = await eventually(lambda: store.read_all(0, 10), lambda got: bool(got))
            assert [e.position for e in settled] == [base]
            follower = asyncio.create_task(_subscribe_after(store, base, subscribed))

            await gate.execute("SELECT pg_advisory_lock($1)", gate_key)
            a_positions: list[int] = []
            a_inserted = asyncio.Event()

            def held(recorded: Sequence[RecordedEvent]) -> list[Statement]:
                a_positions.extend(e.position for e in recorded)
                a_inserted.set()
                return [Statement("SELECT pg_advisory_xact_lock($1)", (gate_key,))]

            a_events = [NewEvent("Early", {"n": n}) for n in range(2)]
            a_task = asyncio.create_task(store.append("dep-a", "s", a_events, inline=held))
            await asyncio.wait_for(a_inserted.wait(), 10)
            b = await store.append("dep-b", "s", [NewEvent("Late", {})])
            assert not a_task.done()
            assert a_positions[-1] < b.position  # A took its positions first

            # the naive query sees B, not A: a follower would now set its cursor past A
            naive_batch = [r[0] for r in await raw.fetch(NAIVE_SQL, base)]
            assert naive_batch == [b.position]
            naive_cursor = naive_batch[-1]
            # the store releases neither while A is open, and says why
            assert await store.read_all(base, 100) == []
            horizon = await store.horizon()
            assert horizon.held_back >= 1
            assert horizon.readable_below <= a_positions[0]
            await asyncio.sleep(0.3)
            assert subscribed == []  # the subscriber waits too

            await gate.execute("SELECT pg_advisory_unlock($1)", gate_key)
            a = await asyncio.wait_for(a_task, 10)
            assert a.position == a_positions[-1]

            # A is committed, below the naive cursor: the naive follower never sees it
            assert [r[0] for r in await raw.fetch(NAIVE_SQL, naive_cursor)] == []
            everything = [r[0] for r in await raw.fetch(NAIVE_SQL, base)]
            assert everything == [*a_positions, b.position]
            # read_all releases A then B, once, in position order
            released = await eventually(lambda: store.read_all(base, 100), lambda r: len(r) >= 3)
            assert [e.position for e in released] == everything
            assert [e.type for e in released] == ["Early", "Early", "Late"]
            await eventually(_now(subscribed), lambda got: len(got) >= 3)
            await asyncio.sleep(0.1)  # a repeat would show up now
            assert [e.position for e in subscribed] == everything
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        finally:
            await gate.close()
            await raw.close()


async def eventually(fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
    """Fetch until ``done(value)`` or SETTLE_TIMEOUT; returns the last value either way."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        value = await fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def _now(value: Any) -> Callable[[], Awaitable[Any]]:
    async def fetch() -> Any:
        return value

    return fetch


async def _subscribe_after(store: EventStore, after: int, out: list[Any]) -> None:
    events = store.subscribe(after_position=after, idle_timeout=0.05)
    try:
        async for event in events:
            out.append(event)
    finally:
        await events.aclose()

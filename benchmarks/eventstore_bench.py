"""Chronicle's event log against the ``eventsourcing`` library, same work, same run.

    python -m benchmarks.eventstore_bench [--backend sqlite|postgresql|all] [--quick] [--out FILE]

For each backend it measures, for Chronicle (``eventstore``) and for eventsourcing's
lowest-level public recorder (the ``ApplicationRecorder``, which like Chronicle keeps a
global log besides the per-stream sequences):

1. single-event appends, one transaction each, 20 streams round-robin, each with the
   exact expected version;
2. the same from 16 concurrent appenders on 16 deployments (Chronicle: 16 asyncio
   tasks on one store; eventsourcing, which is synchronous: 16 threads);
3. 100-event batch appends (events/s and batches/s);
4. reading back what was written, per stream and through the global log;

plus the raw drivers' commit rates on the same machine in the same run (sqlite3
single-row commits at synchronous=FULL; asyncpg single-row INSERTs from 1 and from
16 connections), which frame what is achievable. Every figure is the median of
3 repetitions (min and max alongside); the two libraries alternate within each
repetition so that a noisy neighbour hurts both alike. One JSON document goes to
stdout (and to ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
)

import eventstore
from eventstore import EventStore, NewEvent

from . import _common as common
from ._common import DEFAULT_PG_DSN as DEFAULT_PG_DSN
from ._common import (
    add_common_args,
    command_line,
    emit,
    evaluate_threshold_aims,
    machine_basics,
    pg_dsn,
    pg_schemas,
    redact,
    selected_backends,
    sized,
    sqlite_sync_name,
    summarize,
    with_params,
)

STREAMS = 20
CONCURRENCY = 16
BATCH = 100
READ_PAGE = 1000
PAYLOAD_POOL = 1024
EVENT_TYPE = "LedgerEntryRecorded"
TOPIC = "benchmarks.ledger:LedgerEntryRecorded"

# The same MessagePack encoding Chronicle uses (Decimal as exact strings), so both
# libraries store the same bytes; the peer pays for encoding inside the timed loop too.
_ENCODER = msgspec.msgpack.Encoder(decimal_format="string", uuid_format="canonical")


@dataclass(frozen=True)
class Settings:
    write_seconds: float
    """How long one repetition of an append measurement runs."""
    read_seconds: float
    """How long one repetition of a read measurement runs."""
    warmup_seconds: float
    repetitions: int = 3
    streams: int = STREAMS
    concurrency: int = CONCURRENCY
    batch: int = BATCH


FULL = Settings(write_seconds=3.0, read_seconds=1.5, warmup_seconds=0.5)
QUICK = Settings(write_seconds=0.4, read_seconds=0.25, warmup_seconds=0.1)
SMOKE = Settings(
    write_seconds=0.05, read_seconds=0.02, warmup_seconds=0.01, repetitions=1, concurrency=4
)


class Rate(NamedTuple):
    """One timed run: operations (appends or reads), events moved, wall seconds."""

    ops: int
    events: int
    seconds: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- payloads -----------------------------------------------------------------


def ledger_entry(i: int) -> dict[str, Any]:
    """A realistic ledger entry: Decimal amounts, a tx hash, a cycle id (~380 bytes packed)."""
    rnd = random.Random(i)
    quantity = Decimal(rnd.randrange(1, 10**9)).scaleb(-8)
    price = Decimal(rnd.randrange(10**6, 10**8)).scaleb(-2)
    amount = (quantity * price).quantize(Decimal("0.00000001"))
    side = "buy" if i % 2 else "sell"
    return {
        "entry_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
        "cycle_id": f"cycle-{i // 40:010d}",
        "account": "spot:BTC-USDT",
        "asset": "USDT",
        "side": side,
        "quantity": quantity,
        "price": price,
        "amount": -amount if side == "buy" else amount,
        "fee": (amount * Decimal("0.001")).quantize(Decimal("0.00000001")),
        "balance_after": Decimal(rnd.randrange(10**10, 10**13)).scaleb(-8),
        "tx_hash": "0x" + rnd.getrandbits(256).to_bytes(32, "big").hex(),
        "order_id": f"ord-{i:012d}",
        "venue": "binance",
        "booked_at": f"2024-05-01T12:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 10**6:06d}+00:00",
    }


def make_payloads(count: int = PAYLOAD_POOL) -> list[dict[str, Any]]:
    return [ledger_entry(i) for i in range(count)]


def payload_sizes(payloads: Sequence[dict[str, Any]]) -> dict[str, float]:
    sizes = [len(_ENCODER.encode(p)) for p in payloads]
    return {"min": min(sizes), "mean": round(statistics.fmean(sizes), 1), "max": max(sizes)}


# -- timing helpers -----------------------------------------------------------


def ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    return round(ours["median"] / theirs["median"], 2) if theirs["median"] else float("inf")


def run_threads(workers: Sequence[Callable[[float], int]], seconds: float) -> Rate:
    """Start ``workers`` together in threads; each runs until the shared deadline."""
    barrier = threading.Barrier(len(workers) + 1)
    deadline = [0.0]
    counts = [0] * len(workers)
    errors: list[BaseException] = []

    def run(index: int, worker: Callable[[float], int]) -> None:
        barrier.wait()
        try:
            counts[index] = worker(deadline[0])
        except BaseException as exc:  # reported after join
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(i, w), daemon=True) for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    total = sum(counts)
    return Rate(total, total, elapsed)


async def run_tasks(workers: Sequence[Callable[[float], Awaitable[int]]], seconds: float) -> Rate:
    start = time.perf_counter()
    counts = await asyncio.gather(*(w(start + seconds) for w in workers))
    total = sum(counts)
    return Rate(total, total, time.perf_counter() - start)


# -- Chronicle ----------------------------------------------------------------


async def chronicle_single(
    store: EventStore, deployment: str, payloads: Sequence[dict[str, Any]], seconds: float
) -> Rate:
    """Single-event appends, one transaction each, ``STREAMS`` streams round-robin, exact CAS."""
    streams = [f"stream-{k:02d}" for k in range(STREAMS)]
    versions = [0] * STREAMS
    npay = len(payloads)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        s = n % STREAMS
        await store.append(
            deployment,
            streams[s],
            [NewEvent(EVENT_TYPE, payloads[n % npay])],
            expected_version=versions[s],
        )
        versions[s] += 1
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Rate(n, n, time.perf_counter() - start)


async def chronicle_concurrent(
    store: EventStore,
    prefix: str,
    payloads: Sequence[dict[str, Any]],
    seconds: float,
    concurrency: int = CONCURRENCY,
) -> Rate:
    """``concurrency`` asyncio tasks, one deployment each, single-event appends with exact CAS."""
    npay = len(payloads)

    def worker(k: int) -> Callable[[float], Awaitable[int]]:
        async def run(deadline: float) -> int:
            deployment = f"{prefix}-{k:02d}"
            version = 0
            while True:
                await store.append(
                    deployment,
                    "ledger",
                    [NewEvent(EVENT_TYPE, payloads[(version * 31 + k) % npay])],
                    expected_version=version,
                )
                version += 1
                if time.perf_counter() >= deadline:
                    return version

        return run

    return await run_tasks([worker(k) for k in range(concurrency)], seconds)


async def chronicle_batches(
    store: EventStore,
    deployment: str,
    payloads: Sequence[dict[str, Any]],
    seconds: float,
    batch: int = BATCH,
) -> Rate:
    """``batch``-event appends, ``STREAMS`` streams round-robin, exact CAS."""
    streams = [f"stream-{k:02d}" for k in range(STREAMS)]
    versions = [0] * STREAMS
    npay = len(payloads)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        s = n % STREAMS
        base = n * batch
        events = [NewEvent(EVENT_TYPE, payloads[(base + j) % npay]) for j in range(batch)]
        await store.append(deployment, streams[s], events, expected_version=versions[s])
        versions[s] += batch
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Rate(n, n * batch, time.perf_counter() - start)


async def chronicle_read_streams(
    store: EventStore, streams: Sequence[tuple[str, str]], seconds: float
) -> Rate:
    """Read whole streams (pages of ``READ_PAGE``), cycling through them until the deadline."""
    reads = events = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for deployment, stream in streams:
            version = 1
            while True:
                page = await store.read_stream(deployment, stream, version, READ_PAGE)
                reads += 1
                events += len(page)
                if len(page) < READ_PAGE:
                    break
                version = page[-1].stream_version + 1
            if time.perf_counter() >= deadline:
                return Rate(reads, events, time.perf_counter() - start)


async def chronicle_read_all(store: EventStore, seconds: float) -> Rate:
    """Page through the global log from the start (wrapping around) until the deadline."""
    reads = events = 0
    position = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        page = await store.read_all(position, READ_PAGE)
        reads += 1
        events += len(page)
        position = page[-1].position if len(page) == READ_PAGE else 0
        if time.perf_counter() >= deadline:
            return Rate(reads, events, time.perf_counter() - start)


async def chronicle_count_all(store: EventStore) -> int:
    total = position = 0
    while page := await store.read_all(position, READ_PAGE):
        total += len(page)
        position = page[-1].position
    return total


# -- eventsourcing --------------------------------------------------------------


def _stored(originator_id: uuid.UUID, version: int, payload: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,
        originator_version=version,
        topic=TOPIC,
        state=_ENCODER.encode(payload),
    )


def es_single(
    recorder: ApplicationRecorder, payloads: Sequence[dict[str, Any]], seconds: float
) -> Rate:
    """``insert_events`` of one event per call (one transaction), 20 originators round-robin.

    The originator version is the CAS: the recorder's (originator_id, originator_version)
    primary key refuses an event whose version is taken.
    """
    ids = [uuid.uuid4() for _ in range(STREAMS)]
    versions = [0] * STREAMS
    npay = len(payloads)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        s = n % STREAMS
        versions[s] += 1
        recorder.insert_events([_stored(ids[s], versions[s], payloads[n % npay])])
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Rate(n, n, time.perf_counter() - start)


def es_concurrent(
    recorder: ApplicationRecorder,
    payloads: Sequence[dict[str, Any]],
    seconds: float,
    concurrency: int = CONCURRENCY,
) -> Rate:
    """``concurrency`` threads, one originator each, single-event ``insert_events``."""
    npay = len(payloads)

    def worker(k: int) -> Callable[[float], int]:
        def run(deadline: float) -> int:
            originator = uuid.uuid4()
            version = 0
            while True:
                version += 1
                payload = payloads[(version * 31 + k) % npay]
                recorder.insert_events([_stored(originator, version, payload)])
                if time.perf_counter() >= deadline:
                    return version

        return run

    return run_threads([worker(k) for k in range(concurrency)], seconds)


def es_batches(
    recorder: ApplicationRecorder,
    payloads: Sequence[dict[str, Any]],
    seconds: float,
    batch: int = BATCH,
) -> tuple[Rate, list[uuid.UUID]]:
    ids = [uuid.uuid4() for _ in range(STREAMS)]
    versions = [0] * STREAMS
    npay = len(payloads)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        s = n % STREAMS
        base = n * batch
        first = versions[s] + 1
        events = [_stored(ids[s], first + j, payloads[(base + j) % npay]) for j in range(batch)]
        recorder.insert_events(events)
        versions[s] += batch
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Rate(n, n * batch, time.perf_counter() - start), ids


def es_read_streams(
    recorder: ApplicationRecorder, originators: Sequence[uuid.UUID], seconds: float
) -> Rate:
    reads = events = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for originator in originators:
            after = 0
            while True:
                page = recorder.select_events(originator, gt=after, limit=READ_PAGE)
                reads += 1
                events += len(page)
                if len(page) < READ_PAGE:
                    break
                after = page[-1].originator_version
            if time.perf_counter() >= deadline:
                return Rate(reads, events, time.perf_counter() - start)


def es_read_all(recorder: ApplicationRecorder, seconds: float) -> Rate:
    reads = events = 0
    after = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        page = recorder.select_notifications(after, READ_PAGE, inclusive_of_start=False)
        reads += 1
        events += len(page)
        after = page[-1].id if len(page) == READ_PAGE else 0
        if time.perf_counter() >= deadline:
            return Rate(reads, events, time.perf_counter() - start)


def es_count_all(recorder: ApplicationRecorder) -> int:
    total = after = 0
    while page := recorder.select_notifications(after, READ_PAGE, inclusive_of_start=False):
        total += len(page)
        after = page[-1].id
    return total


class FullSyncSQLiteConnectionPool(SQLiteConnectionPool):
    """eventsourcing's SQLite pool, plus ``PRAGMA synchronous=FULL`` on each new connection.

    eventsourcing 9.5 sets WAL itself but has no setting for ``synchronous`` (its SQLite
    environment knobs are SQLITE_DBNAME, SQLITE_LOCK_TIMEOUT, SINGLE_ROW_TRACKING,
    ORIGINATOR_ID_TYPE and CREATE_TABLE), so connections would get the SQLite build's
    compile-time default. This makes the durability explicit and equal to Chronicle's.
    """

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=FULL")
        return conn


class FullSyncSQLiteDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, *, pool_size: int, pool_timeout: float) -> None:
        super().__init__(db_name, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout)
        self.pool.close()  # never issued a connection; replaced before first use
        self.pool = FullSyncSQLiteConnectionPool(
            db_name=db_name, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout
        )


def es_sqlite_pragmas(datastore: SQLiteDatastore) -> dict[str, Any]:
    """Read journal_mode and synchronous back from a connection eventsourcing issues."""
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    return {"journal_mode": journal, "synchronous": sqlite_sync_name(synchronous)}


# -- raw drivers ----------------------------------------------------------------


def sqlite_raw_commits(path: str, payload: bytes, seconds: float) -> Rate:
    """Plain sqlite3: one autocommitted single-row INSERT per commit, WAL + synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS raw_events (id INTEGER PRIMARY KEY, data BLOB)")
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            db.execute("INSERT INTO raw_events (data) VALUES (?)", (payload,))
            n += 1
            if time.perf_counter() >= deadline:
                break
        return Rate(n, n, time.perf_counter() - start)
    finally:
        db.close()


_RAW_INSERT = "INSERT INTO raw_events (data) VALUES ($1)"


async def asyncpg_raw_commits(
    conns: Sequence[asyncpg.Connection], payload: bytes, seconds: float
) -> Rate:
    """asyncpg: one autocommitted single-row INSERT per commit, one task per connection."""

    def worker(conn: asyncpg.Connection) -> Callable[[float], Awaitable[int]]:
        async def run(deadline: float) -> int:
            n = 0
            while True:
                await conn.execute(_RAW_INSERT, payload)
                n += 1
                if time.perf_counter() >= deadline:
                    return n

        return run

    return await run_tasks([worker(c) for c in conns], seconds)


# -- orchestration --------------------------------------------------------------


class Pair(NamedTuple):
    """One measured figure for both libraries: a coroutine factory for each side."""

    ours: Callable[[int], Awaitable[Rate]]
    theirs: Callable[[int], Awaitable[Rate]]


async def measure_pair(name: str, pair: Pair, settings: Settings) -> tuple[list[Rate], list[Rate]]:
    """Alternate the two sides within each repetition (and who goes first)."""
    ours: list[Rate] = []
    theirs: list[Rate] = []
    for rep in range(settings.repetitions):
        order = (pair.ours, pair.theirs) if rep % 2 == 0 else (pair.theirs, pair.ours)
        for fn in order:
            gc.collect()
            rate = await fn(rep)
            (ours if fn is pair.ours else theirs).append(rate)
        log(
            f"  {name} rep {rep + 1}: chronicle {ours[-1].events_per_s:,.0f} ev/s, "
            f"eventsourcing {theirs[-1].events_per_s:,.0f} ev/s"
        )
    return ours, theirs


async def measure_one(
    name: str, fn: Callable[[int], Awaitable[Rate]], settings: Settings
) -> list[Rate]:
    rates: list[Rate] = []
    for rep in range(settings.repetitions):
        gc.collect()
        rates.append(await fn(rep))
        log(f"  {name} rep {rep + 1}: {rates[-1].ops_per_s:,.0f} /s")
    return rates


def per_s(rates: Sequence[Rate], *, events: bool = True) -> dict[str, Any]:
    return summarize([r.events_per_s if events else r.ops_per_s for r in rates])


async def run_suite(
    store: EventStore,
    recorder: ApplicationRecorder,
    payloads: Sequence[dict[str, Any]],
    settings: Settings,
) -> dict[str, Any]:
    """The four measurements, both libraries, on one backend."""
    sec = settings.write_seconds
    tag = uuid.uuid4().hex[:6]
    thread = asyncio.to_thread

    # Warm both sides (connections, prepared statements, caches); not reported.
    log("  warming up")
    warm = settings.warmup_seconds
    await chronicle_single(store, f"warm-{tag}", payloads, warm)
    await thread(es_single, recorder, payloads, warm)
    await chronicle_concurrent(store, f"warmc-{tag}", payloads, warm, settings.concurrency)
    await thread(es_concurrent, recorder, payloads, warm, settings.concurrency)
    await chronicle_batches(store, f"warmb-{tag}", payloads, warm, settings.batch)
    await thread(es_batches, recorder, payloads, warm, settings.batch)

    written_ours = written_theirs = 0

    async def ours_single(rep: int) -> Rate:
        return await chronicle_single(store, f"single-{tag}-r{rep}", payloads, sec)

    async def theirs_single(rep: int) -> Rate:
        return await thread(es_single, recorder, payloads, sec)

    single = await measure_pair("single appends", Pair(ours_single, theirs_single), settings)

    async def ours_conc(rep: int) -> Rate:
        return await chronicle_concurrent(
            store, f"conc-{tag}-r{rep}", payloads, sec, settings.concurrency
        )

    async def theirs_conc(rep: int) -> Rate:
        return await thread(es_concurrent, recorder, payloads, sec, settings.concurrency)

    conc = await measure_pair(
        f"{settings.concurrency} concurrent appenders", Pair(ours_conc, theirs_conc), settings
    )

    our_streams: list[tuple[str, str]] = []
    their_streams: list[uuid.UUID] = []

    async def ours_batch(rep: int) -> Rate:
        deployment = f"batch-{tag}-r{rep}"
        our_streams.extend((deployment, f"stream-{k:02d}") for k in range(STREAMS))
        return await chronicle_batches(store, deployment, payloads, sec, settings.batch)

    async def theirs_batch(rep: int) -> Rate:
        rate, ids = await thread(es_batches, recorder, payloads, sec, settings.batch)
        their_streams.extend(ids)
        return rate

    batches = await measure_pair(
        f"{settings.batch}-event batches", Pair(ours_batch, theirs_batch), settings
    )

    # Read back what was written: first a full pass over each global log (counted and
    # checked against what the appends reported), then the timed reads.
    for rates in (single[0], conc[0], batches[0]):
        written_ours += sum(r.events for r in rates)
    for rates in (single[1], conc[1], batches[1]):
        written_theirs += sum(r.events for r in rates)
    log("  counting the logs")
    in_ours = await chronicle_count_all(store)
    in_theirs = await thread(es_count_all, recorder)
    log(f"  chronicle log holds {in_ours:,} events, eventsourcing's {in_theirs:,}")

    rsec = settings.read_seconds

    async def ours_rs(rep: int) -> Rate:
        return await chronicle_read_streams(store, our_streams, rsec)

    async def theirs_rs(rep: int) -> Rate:
        return await thread(es_read_streams, recorder, their_streams, rsec)

    read_streams = await measure_pair("read_stream", Pair(ours_rs, theirs_rs), settings)

    async def ours_ra(rep: int) -> Rate:
        return await chronicle_read_all(store, rsec)

    async def theirs_ra(rep: int) -> Rate:
        return await thread(es_read_all, recorder, rsec)

    read_all = await measure_pair("read_all", Pair(ours_ra, theirs_ra), settings)

    def side(index: int) -> dict[str, Any]:
        return {
            "single_append_per_s": per_s(single[index]),
            f"concurrent{settings.concurrency}_append_per_s": per_s(conc[index]),
            f"batch{settings.batch}_events_per_s": per_s(batches[index]),
            f"batch{settings.batch}_batches_per_s": per_s(batches[index], events=False),
            "read_stream_events_per_s": per_s(read_streams[index]),
            "read_all_events_per_s": per_s(read_all[index]),
        }

    chronicle, peer = side(0), side(1)
    conc_key = f"concurrent{settings.concurrency}_append_per_s"
    batch_key = f"batch{settings.batch}_events_per_s"
    return {
        "chronicle": chronicle,
        "eventsourcing": peer,
        "ratios": {
            "single_append_ratio": ratio(
                chronicle["single_append_per_s"], peer["single_append_per_s"]
            ),
            f"concurrent{settings.concurrency}_append_ratio": ratio(
                chronicle[conc_key], peer[conc_key]
            ),
            f"batch{settings.batch}_ratio": ratio(chronicle[batch_key], peer[batch_key]),
            "read_stream_ratio": ratio(
                chronicle["read_stream_events_per_s"], peer["read_stream_events_per_s"]
            ),
            "read_all_ratio": ratio(
                chronicle["read_all_events_per_s"], peer["read_all_events_per_s"]
            ),
        },
        "concurrency_scaling": {
            "chronicle": ratio(chronicle[conc_key], chronicle["single_append_per_s"]),
            "eventsourcing": ratio(peer[conc_key], peer["single_append_per_s"]),
        },
        "events_written": {"chronicle": written_ours, "eventsourcing": written_theirs},
        "events_read_back_via_global_log": {"chronicle": in_ours, "eventsourcing": in_theirs},
        "read_back_complete": in_ours >= written_ours and in_theirs >= written_theirs,
    }


async def bench_sqlite(settings: Settings, payloads: Sequence[dict[str, Any]]) -> dict[str, Any]:
    log("SQLite")
    with tempfile.TemporaryDirectory(prefix="chronicle-bench-") as tmp:
        raw_payload = _ENCODER.encode(payloads[0])
        raw_path = os.path.join(tmp, "raw.db")

        async def raw(rep: int) -> Rate:
            return await asyncio.to_thread(
                sqlite_raw_commits, raw_path, raw_payload, settings.write_seconds
            )

        await asyncio.to_thread(sqlite_raw_commits, raw_path, raw_payload, settings.warmup_seconds)
        baseline = await measure_one("sqlite3 single-row commits", raw, settings)

        url = f"sqlite:///{os.path.join(tmp, 'chronicle.db')}?synchronous=full"
        datastore = FullSyncSQLiteDatastore(
            os.path.join(tmp, "eventsourcing.db"),
            pool_size=settings.concurrency + 2,
            pool_timeout=120.0,
        )
        try:
            recorder = SQLiteApplicationRecorder(datastore)
            recorder.create_table()
            es_pragmas = es_sqlite_pragmas(datastore)
            async with eventstore.connect(url) as store:
                ours_pragmas = await _chronicle_sqlite_pragmas(store)
                suite = await run_suite(store, recorder, payloads, settings)
        finally:
            datastore.close()
    return {
        "baseline": {"sqlite3_single_row_commits_per_s": per_s(baseline)},
        **suite,
        "durability": {
            "chronicle": {
                "how": "URL ?synchronous=full (Chronicle's default): eventstore/backends/"
                "sqlite.py runs PRAGMA journal_mode=WAL and PRAGMA synchronous=FULL on its "
                "writer and reader connections",
                "observed": ours_pragmas,
            },
            "eventsourcing": {
                "how": "eventsourcing 9.5.6 sets journal_mode=WAL itself but has no option for "
                "synchronous (SQLite env keys: SQLITE_DBNAME, SQLITE_LOCK_TIMEOUT, "
                "SINGLE_ROW_TRACKING, ORIGINATOR_ID_TYPE, CREATE_TABLE). A subclass of "
                "eventsourcing.sqlite.SQLiteConnectionPool overrides _create_connection to run "
                "PRAGMA synchronous=FULL on every connection it opens, installed through a "
                "SQLiteDatastore subclass; read back from a connection the datastore issues",
                "observed": es_pragmas,
                "this_sqlite_build_default_synchronous": _sqlite_default_synchronous(),
            },
            "baseline": {
                "how": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
                "observed": {"journal_mode": "wal", "synchronous": "FULL"},
            },
        },
        "setup": {
            "chronicle": "eventstore.connect('sqlite:///<tmp>/chronicle.db?synchronous=full'); "
            "appends on its writer connection, reads on its reader (eventstore/backends/sqlite.py)",
            "eventsourcing": "eventsourcing.sqlite.SQLiteApplicationRecorder on a SQLiteDatastore "
            f"(pool_size={settings.concurrency + 2}, max_overflow=0, pool_timeout=120 s so 16 "
            "threads queueing for its single writer never time out), originator_id_type=uuid",
        },
    }


def _sqlite_default_synchronous() -> str:
    """What a WAL connection gets when nobody sets synchronous (a compile-time choice)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "probe.db"))
        try:
            db.execute("PRAGMA journal_mode=WAL")
            value = db.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            db.close()
    return str(sqlite_sync_name(value))


async def _chronicle_sqlite_pragmas(store: EventStore) -> dict[str, Any]:
    """Best effort: read the pragmas back from the connection Chronicle appends on.

    Private attributes, so this only observes; the layout has changed before (an
    aiosqlite ``_writer``, then a plain sqlite3 ``_db`` on the loop thread).
    """
    backend = getattr(store, "_backend", None)
    db: Any = getattr(backend, "_db", None)
    if isinstance(db, sqlite3.Connection):
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
        value = db.execute("PRAGMA synchronous").fetchone()[0]
    else:
        writer: Any = getattr(backend, "_writer", None)
        if writer is None:
            return {"journal_mode": "unobservable", "synchronous": "unobservable"}
        journal = (await (await writer.execute("PRAGMA journal_mode")).fetchone())[0]
        value = (await (await writer.execute("PRAGMA synchronous")).fetchone())[0]
    return {"journal_mode": journal, "synchronous": sqlite_sync_name(value)}


@contextlib.contextmanager
def es_postgres(dsn: str, schema: str, pool_size: int) -> Iterator[PostgresFactory]:
    parts = urlsplit(dsn)
    env = {
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
    }
    factory = PostgresFactory(env)
    try:
        yield factory
    finally:
        factory.close()


async def bench_postgres(
    settings: Settings, payloads: Sequence[dict[str, Any]], dsn: str
) -> dict[str, Any]:
    log("PostgreSQL")
    run = uuid.uuid4().hex[:10]
    ours_schema, theirs_schema, raw_schema = f"bench_{run}", f"bench_{run}_es", f"bench_{run}_raw"
    raw_payload = _ENCODER.encode(payloads[0])
    async with pg_schemas(dsn, ours_schema, theirs_schema, raw_schema):
        server = await _pg_server_settings(dsn)
        conns = [
            await asyncpg.connect(dsn, server_settings={"search_path": raw_schema})
            for _ in range(settings.concurrency)
        ]
        try:
            await conns[0].execute(
                "CREATE TABLE raw_events (id bigserial PRIMARY KEY, data bytea NOT NULL)"
            )
            await asyncpg_raw_commits(conns, raw_payload, settings.warmup_seconds)

            async def raw1(rep: int) -> Rate:
                return await asyncpg_raw_commits(conns[:1], raw_payload, settings.write_seconds)

            async def raw16(rep: int) -> Rate:
                return await asyncpg_raw_commits(conns, raw_payload, settings.write_seconds)

            base1 = await measure_one("asyncpg 1 connection", raw1, settings)
            base16 = await measure_one(
                f"asyncpg {settings.concurrency} connections", raw16, settings
            )
        finally:
            for conn in conns:
                await conn.close()

        url = with_params(
            dsn,
            schema=ours_schema,
            pool_min=str(settings.concurrency),
            pool_max=str(settings.concurrency + 4),
        )
        with es_postgres(dsn, theirs_schema, settings.concurrency + 2) as factory:
            recorder = factory.application_recorder()
            assert isinstance(recorder, PostgresApplicationRecorder)
            es_sync = await asyncio.to_thread(_es_pg_synchronous_commit, factory)
            async with eventstore.connect(url) as store:
                ours_sync = await _chronicle_pg_synchronous_commit(store)
                suite = await run_suite(store, recorder, payloads, settings)
    c = settings.concurrency
    return {
        "baseline": {
            "asyncpg_1conn_commits_per_s": per_s(base1),
            f"asyncpg_{c}conn_commits_per_s": per_s(base16),
        },
        **suite,
        "durability": {
            "server": server,
            "chronicle": {
                "how": "server default; Chronicle sets only search_path on its sessions",
                "observed_synchronous_commit": ours_sync,
            },
            "eventsourcing": {
                "how": "server default; eventsourcing sets only autocommit and "
                "idle_in_transaction_session_timeout on its sessions",
                "observed_synchronous_commit": es_sync,
            },
            "baseline": {
                "how": "server default",
                "observed_synchronous_commit": server["synchronous_commit"],
            },
        },
        "setup": {
            "chronicle": f"eventstore.connect('{redact(dsn)}?schema=bench_<run>&pool_min={c}"
            f"&pool_max={c + 4}'), asyncpg pool",
            "eventsourcing": "eventsourcing.postgres.PostgresApplicationRecorder from "
            "PostgresFactory(env: POSTGRES_SCHEMA=bench_<run>_es, "
            f"POSTGRES_POOL_SIZE={c + 2}, POSTGRES_MAX_OVERFLOW=0, other keys default: "
            "POSTGRES_ENABLE_DB_FUNCTIONS=no, so each insert_events is a pipelined "
            "transaction: LOCK TABLE ... IN EXCLUSIVE MODE, NOTIFY, INSERT ... RETURNING "
            "notification_id), psycopg 3 pool, originator_id_type=uuid",
            "schemas": "created for the run and dropped afterwards",
        },
    }


async def _pg_server_settings(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, source FROM pg_settings WHERE name = ANY($1::text[])",
            ["synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "commit_delay"],
        )
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    out: dict[str, Any] = {row["name"]: row["setting"] for row in rows}
    out["synchronous_commit_source"] = next(
        (row["source"] for row in rows if row["name"] == "synchronous_commit"), None
    )
    out["server_version"] = version
    return out


async def _chronicle_pg_synchronous_commit(store: EventStore) -> str:
    """Best effort: ask a connection of Chronicle's own pool."""
    pool: Any = getattr(getattr(store, "_backend", None), "_pool", None)
    if pool is None:
        return "unobservable"
    return str(await pool.fetchval("SHOW synchronous_commit"))


def _es_pg_synchronous_commit(factory: PostgresFactory) -> str:
    with factory.datastore.get_connection() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    return str(row["synchronous_commit"]) if row else "unknown"


# -- aims -----------------------------------------------------------------------


class Aim(NamedTuple):
    id: str
    backend: str
    requirement: str
    threshold: float
    value: Callable[[dict[str, Any]], float]


def _conc_key(settings: Settings) -> str:
    return f"concurrent{settings.concurrency}_append_per_s"


def aims(settings: Settings) -> list[Aim]:
    batch_ratio = f"batch{settings.batch}_ratio"
    return [
        Aim(
            "sqlite_single_append",
            "sqlite",
            "Chronicle single appends >= 1.25x eventsourcing",
            1.25,
            lambda r: float(r["ratios"]["single_append_ratio"]),
        ),
        Aim(
            "sqlite_batch_append",
            "sqlite",
            f"Chronicle {settings.batch}-event batches >= 1.2x eventsourcing (events/s)",
            1.2,
            lambda r: float(r["ratios"][batch_ratio]),
        ),
        Aim(
            "postgresql_single_append",
            "postgresql",
            "Chronicle single appends >= 1.8x eventsourcing",
            1.8,
            lambda r: float(r["ratios"]["single_append_ratio"]),
        ),
        Aim(
            "postgresql_batch_append",
            "postgresql",
            f"Chronicle {settings.batch}-event batches >= 4x eventsourcing (events/s)",
            4.0,
            lambda r: float(r["ratios"][batch_ratio]),
        ),
        Aim(
            "postgresql_concurrency_scaling",
            "postgresql",
            f"Chronicle with {settings.concurrency} concurrent appenders >= 3x Chronicle's own "
            "single-appender figure",
            3.0,
            lambda r: float(r["concurrency_scaling"]["chronicle"]),
        ),
    ]


def evaluate_aims(results: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    return evaluate_threshold_aims(
        aims(settings), results, lambda aim, value: value >= aim.threshold
    )


# -- entry point ----------------------------------------------------------------


def versions() -> dict[str, str]:
    out = common.versions(
        "chronicle-store", "asyncpg", "aiosqlite", "eventsourcing", "psycopg", "msgspec"
    )
    out["psycopg_implementation"] = _psycopg_impl()
    return out


def _psycopg_impl() -> str:
    """eventsourcing's PostgreSQL driver: "python" (pure) is several times slower on reads
    than "binary"/"c"; install psycopg[binary] for a fair peer."""
    try:
        import psycopg
    except ImportError:
        return "not installed"
    return str(psycopg.pq.__impl__)


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit, and whether eventstore/ differed from it."""
    return common.source_state("eventstore", key="eventstore_uncommitted_changes")


async def run(
    backends: Sequence[str], settings: Settings, dsn: str, mode: str, command: str = ""
) -> dict[str, Any]:
    payloads = make_payloads()
    source = source_state()  # the code imported for this run, before anyone edits it
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if "sqlite" in backends:
        results["sqlite"] = await bench_sqlite(settings, payloads)
    if "postgresql" in backends:
        results["postgresql"] = await bench_postgres(settings, payloads, dsn)
    evaluated = evaluate_aims(results, settings)
    durability = {name: result.pop("durability") for name, result in results.items()}
    setup = {name: result.pop("setup") for name, result in results.items()}
    return {
        "warnings": run_warnings(results, durability, source),
        "benchmark": "eventstore",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            **machine_basics(),
            "note": "shared and noisy; the two libraries alternate within each repetition",
        },
        "versions": versions(),
        "source": source,
        "settings": {
            **asdict(settings),
            "read_page": READ_PAGE,
            "statistic": f"median of {settings.repetitions} repetitions (min, max and runs kept)",
            "payload": "MessagePack ledger entry dict (Decimal amounts as strings, tx hash, "
            "cycle id), the same bytes for both libraries",
            "payload_bytes": payload_sizes(payloads),
        },
        "peer": {
            "library": f"eventsourcing {versions()['eventsourcing']}",
            "recorder": {
                "sqlite": "eventsourcing.sqlite.SQLiteApplicationRecorder",
                "postgresql": "eventsourcing.postgres.PostgresApplicationRecorder",
            },
            "why": "the lowest-level public recorder that, like Chronicle, also keeps a global "
            "log (notification ids); the AggregateRecorder keeps none",
            "cas": "eventsourcing's optimistic concurrency is the (originator_id, "
            "originator_version) primary key: insert_events with version v+1 fails if v+1 is "
            "taken. Chronicle checks the exact expected version and also numbers the "
            "deployment log, assigns a uuid7 event id and chains a SHA-256 hash per event",
            "encoding": "the peer's timed loop encodes each payload with the same msgspec "
            "MessagePack encoder Chronicle uses inside append()",
            "concurrency": "Chronicle: asyncio tasks on one store; eventsourcing: threads "
            "(it is synchronous)",
        },
        "durability": durability,
        "setup": setup,
        "results": results,
        "aims": evaluated,
        "aims_all_passed": all(a["passed"] for a in evaluated if a["passed"] is not None),
    }


def run_warnings(
    results: dict[str, Any], durability: dict[str, Any], source: dict[str, Any]
) -> list[str]:
    """What a reader of the figures must know before trusting a comparison."""
    out: list[str] = []
    if "postgresql" in results and _psycopg_impl() == "python":
        out.append(
            "psycopg runs its pure-Python implementation: eventsourcing's PostgreSQL figures "
            "are handicapped (reads ~7x slower); pip install 'psycopg[binary]'"
        )
    sqlite = durability.get("sqlite")
    if sqlite is not None:
        seen = {
            sqlite[side]["observed"].get("synchronous") for side in ("chronicle", "eventsourcing")
        }
        if seen != {"FULL"}:
            out.append(f"SQLite synchronous differs from FULL or between libraries: {seen}")
    pg = durability.get("postgresql")
    if pg is not None:
        seen = {pg[side]["observed_synchronous_commit"] for side in ("chronicle", "eventsourcing")}
        if seen != {"on"}:
            out.append(f"PostgreSQL synchronous_commit is not 'on' for both: {seen}")
    for name, result in results.items():
        if not result.get("read_back_complete", True):
            out.append(f"{name}: the global log held fewer events than the appends reported")
    if source.get("eventstore_uncommitted_changes"):
        out.append(
            "eventstore/ had uncommitted changes when this ran (see source); the figures are "
            "for the working tree, not for source.git_commit"
        )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.eventstore_bench",
        description="Chronicle's event log against the eventsourcing library; prints JSON.",
    )
    add_common_args(parser, quick_help="a ~30 s smoke run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = selected_backends(args.backend)
    settings, mode = sized(args, FULL, QUICK, SMOKE)
    command = command_line("benchmarks.eventstore_bench", argv)
    report = asyncio.run(run(backends, settings, pg_dsn(args.pg_dsn), mode, command))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

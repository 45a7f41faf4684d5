"""Chronicle's read models at scale: full rebuild, quant-stats reads, NAV-series reads.

    python -m benchmarks.projections_bench [--backend sqlite|postgresql|all]
        [--events 1000000] [--quick] [--out FILE]

For each backend, in one run:

1. **Full rebuild.** A runner-like log of ``--events`` domain events (50 deployments;
   per cycle a StateSaved, a LedgerEntryRecorded, a PositionEventRecorded, a
   PortfolioSnapshotRecorded, a PortfolioMetricsSaved, and a CLOB order: ClobOrderSaved
   then two ClobOrderStatusUpdated) is appended through ``ProjectionEngine(store, [])``
   (no read models, so generation is fast); then ``ProjectionEngine(store,
   ALL_PROJECTIONS).rebuild()`` rebuilds all nine read models from the log, in a fresh
   child process so its peak RSS (``VmHWM``) belongs to the rebuild alone. The engine
   rebuilds all nine in one pass over the log, so only the whole rebuild has a rate:
   reported are its events/s, each projection's event count (``RebuildReport.events``),
   peak memory, and the raw scan rate of the log as a rebuild reads it
   (``store.read_for_replay`` in pages of 5000), which a rebuild cannot beat.
2. **Quant stats** (``engine.live("ledger").quant_stats``) at 1k, 100k and 1M ledger
   entries in one deployment: p50/p99 over 200 reads at each size.
3. **NAV-series reads** at 200k snapshots in one deployment: ``latest``, ``recent``,
   ``since``, ``in_window`` (with a scan cap), ``nav_series`` (a page from a cursor, and
   the full default ``scan_cap``) and ``at``.
4. **Where a rebuild's time goes**: an instrumented rebuild of a 100k-event log of the
   same shape times the parts of its one pass (``read_for_replay``, ``decode_event``,
   ``replay_statements``, ``store.execute``; on PostgreSQL the commits overlap the reads
   and decoding, so the parts can sum to more than the wall time), counts rows,
   statements (before and after ``Projection.fold``) and driver calls, and a cProfile
   of another rebuild lists the hottest functions.

One JSON document goes to stdout (and to ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import json
import math
import os
import pstats
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

import eventstore

# every measured module is loaded at start (the PostgreSQL backend would otherwise be
# imported at its first connect), so one run measures one version of the code
import eventstore.backends.postgres
import eventstore.backends.sqlite
import projections.shadow as shadow_module
from eventstore import EventStore, Placement, ReplayedEvent, Statement
from eventstore.append import statement_runs
from projections.engine import ProjectionEngine, RebuildReport
from projections.events import (
    ClobFill,
    ClobOrderSaved,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
    LedgerEntry,
    LedgerEntryRecorded,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    PositionEventRecorded,
    StateSaved,
    ValueConfidence,
    decode_event,
)
from projections.models import ALL_PROJECTIONS
from projections.models import ledger as ledger_model
from projections.projection import Projection
from projections.replay import Item, replay_statements

from . import _common as common
from ._common import (
    ROOT,
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
    sqlite_pragmas,
    summarize,
    with_params,
)

SCAN_PAGE = 5000
"""``read_for_replay`` page size of the raw scan: the engine's own rebuild batch size."""
PARALLEL_JOBS = max(2, os.cpu_count() or 1)
"""``rebuild(jobs=...)`` of the parallel runs: one worker per core."""
REBUILD_BATCH = 5000
"""``ProjectionEngine.rebuild``'s default ``batch_size``, used unchanged."""
APPENDERS = 4
"""Deployments appending at once while the workload is generated."""
APPEND_BATCH = 500
"""Events per ``engine.append`` when filling one big deployment (quant, NAV)."""
REPLAY_CHUNK = 1000
"""Events per transaction when building the big deployments' read-model rows."""

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CYCLE = timedelta(minutes=5)
STREAMS = ("state", "ledger", "positions", "snapshots", "metrics", "orders")


@dataclass(frozen=True)
class Settings:
    events: int
    """Size of the rebuilt log (rounded up to whole cycles of every deployment)."""
    deployments: int
    chunk_cycles: int
    """Cycles of one deployment appended per ``engine.append`` (one call per stream)."""
    rebuild_repetitions: int
    """Full rebuilds on SQLite (each in a fresh child process)."""
    pg_rebuild_repetitions: int
    """Full rebuilds on PostgreSQL, where one of 1M events takes minutes."""
    scan_repetitions: int
    quant_sizes: tuple[int, ...]
    nav_snapshots: int
    reads: int
    """Reads per latency figure (``nav_series`` in full: ``heavy_reads``)."""
    heavy_reads: int
    breakdown_events: int


FULL = Settings(
    events=1_000_000,
    deployments=50,
    chunk_cycles=100,
    rebuild_repetitions=3,
    pg_rebuild_repetitions=1,
    scan_repetitions=3,
    quant_sizes=(1_000, 100_000, 1_000_000),
    nav_snapshots=200_000,
    reads=200,
    heavy_reads=6,
    breakdown_events=100_000,
)
QUICK = Settings(
    events=30_000,
    deployments=50,
    chunk_cycles=100,
    rebuild_repetitions=1,
    pg_rebuild_repetitions=1,
    scan_repetitions=1,
    quant_sizes=(1_000, 10_000, 50_000),
    nav_snapshots=10_000,
    reads=50,
    heavy_reads=3,
    breakdown_events=10_000,
)
SMOKE = Settings(
    events=800,
    deployments=4,
    chunk_cycles=25,
    rebuild_repetitions=1,
    pg_rebuild_repetitions=1,
    scan_repetitions=1,
    quant_sizes=(100, 200, 400),
    nav_snapshots=200,
    reads=3,
    heavy_reads=1,
    breakdown_events=800,
)


def log(message: str) -> None:
    print(f"[proj-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the workload -------------------------------------------------------------------

POOL = 509  # a prime, so the pools' cycles do not line up with deployments or cycles


class Pools:
    """Precomputed realistic field values, cycled by index: generation must be fast.

    What has to be unique (ids, timestamps, versions, cycle ids) is built per event;
    amounts, hashes and JSON documents come from these pools.
    """

    def __init__(self, seed: int = 20240101) -> None:
        rng = random.Random(seed)
        q18, q6 = Decimal("1e-18"), Decimal("1e-6")
        self.tx: list[str] = []
        self.checksum: list[str] = []
        self.ledger: list[dict[str, Any]] = []
        self.position: list[dict[str, Any]] = []
        self.snapshot: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.order: list[dict[str, Any]] = []
        self.state: list[dict[str, Any]] = []
        for k in range(POOL):
            self.tx.append("0x" + rng.getrandbits(256).to_bytes(32, "big").hex())
            self.checksum.append(rng.getrandbits(256).to_bytes(32, "big").hex())
            weth = Decimal(300_000 + rng.randrange(-20_000, 20_000)).scaleb(-2)
            wbtc = Decimal(6_500_000 + rng.randrange(-300_000, 300_000)).scaleb(-2)
            usdc_bal = Decimal(rng.randrange(10**9, 10**11)).scaleb(-6)
            weth_bal = Decimal(rng.randrange(10**17, 10**20)).scaleb(-18)
            amount_in = Decimal(rng.randrange(10**6, 10**9)).scaleb(-6)
            amount_out = (amount_in / weth).quantize(q18)
            gas = Decimal(rng.randrange(1_000, 90_000)).scaleb(-6)
            prices = {
                "USDC": {"price_usd": "1.0001", "source": "chainlink", "age_s": 12},
                "WETH": {"price_usd": str(weth), "source": "chainlink", "age_s": 9},
            }
            self.ledger.append(
                {
                    "amount_in": amount_in,
                    "amount_out": amount_out,
                    "effective_price": weth,
                    "slippage_bps": Decimal(rng.randrange(0, 500)).scaleb(-1),
                    "gas_used": 120_000 + rng.randrange(80_000),
                    "gas_usd": gas,
                    "extracted_data": {
                        "pool": "0x" + rng.getrandbits(160).to_bytes(20, "big").hex(),
                        "fee_tier": 500,
                        "sqrt_price_x96": str(rng.getrandbits(96)),
                        "log_index": rng.randrange(300),
                    },
                    "price_inputs": prices,
                    "pre_state": {
                        "wallet_balances": {"USDC": str(usdc_bal), "WETH": str(weth_bal)},
                        "open_positions": 2,
                    },
                    "post_state": {
                        "wallet_balances": {
                            "USDC": str(usdc_bal - amount_in),
                            "WETH": str(weth_bal + amount_out),
                        },
                        "open_positions": 2,
                    },
                }
            )
            liquidity = Decimal(rng.getrandbits(90))
            self.position.append(
                {
                    "amount0": Decimal(rng.randrange(10**15, 10**19)).scaleb(-18),
                    "amount1": Decimal(rng.randrange(10**6, 10**10)).scaleb(-6),
                    "value_usd": Decimal(rng.randrange(10**5, 10**9)).scaleb(-4),
                    "tick_lower": -200_000 + 10 * rng.randrange(1000),
                    "liquidity": liquidity,
                    "fees_token0": Decimal(rng.randrange(10**12, 10**16)).scaleb(-18),
                    "fees_token1": Decimal(rng.randrange(10**3, 10**7)).scaleb(-6),
                    "gas_usd": gas,
                    "attribution": {
                        "fees_usd": str(Decimal(rng.randrange(10**4, 10**7)).scaleb(-4)),
                        "il_usd": str(Decimal(rng.randrange(-(10**6), 10**6)).scaleb(-4)),
                        "method": "mark_to_market",
                    },
                }
            )
            total = Decimal(rng.randrange(9 * 10**9, 11 * 10**9)).scaleb(-6)
            cash = (total * Decimal("0.4")).quantize(q6)
            positions = [
                {
                    "position_id": f"lp-{j}",
                    "type": "LP" if j < 2 else "SPOT",
                    "protocol": "uniswap_v3" if j < 2 else "wallet",
                    "value_usd": str((total * Decimal("0.2")).quantize(q6)),
                    "tokens": ["WETH", "USDC"] if j < 2 else ["WBTC"],
                    "in_range": j != 1,
                }
                for j in range(3)
            ]
            self.snapshot.append(
                {
                    "total_value_usd": total,
                    "available_cash_usd": cash,
                    "deployed_capital_usd": total - cash,
                    "wallet_total_value_usd": total,
                    "positions": {
                        "schema_version": 2,
                        "positions": positions,
                        "metadata": {"valuation": "mark", "source": "runner"},
                        "reconciliation": {"status": "ok", "drift_usd": "0.01"},
                    },
                    "token_prices": {"WETH": str(weth), "WBTC": str(wbtc), "USDC": "1.0001"},
                    "wallet_balances": [
                        {"token": "USDC", "balance": str(usdc_bal), "value_usd": str(usdc_bal)},
                        {"token": "WETH", "balance": str(weth_bal), "value_usd": "0"},
                    ],
                }
            )
            self.metrics.append(
                {
                    "gas_spent_usd": gas * 100,
                    "total_value_usd": total,
                    "positions": positions[:2],
                }
            )
            price = Decimal(rng.randrange(1, 99)).scaleb(-2)
            size = Decimal(rng.randrange(10, 5_000))
            self.order.append(
                {
                    "market_id": "0x" + rng.getrandbits(256).to_bytes(32, "big").hex(),
                    "token_id": str(rng.getrandbits(250)),
                    "side": "BUY" if k % 2 else "SELL",
                    "price": price,
                    "size": size,
                    "half": (size / 2).quantize(Decimal("1")),
                    "fee": (price * size * Decimal("0.001")).quantize(q6),
                    "metadata": {"strategy": "mm", "quote_id": k, "neg_risk": False},
                }
            )
            self.state.append(
                {
                    "nav_usd": str(total),
                    "positions": {
                        "lp-0": {
                            "tick_lower": -200,
                            "tick_upper": 200,
                            "liquidity": str(liquidity),
                        },
                        "lp-1": {"tick_lower": -60, "tick_upper": 60, "liquidity": "48211"},
                    },
                    "last_prices": {"WETH": str(weth), "WBTC": str(wbtc)},
                    "cooldowns": {"rebalance": 3, "harvest": 0},
                    "mode": "live",
                }
            )


def dep_id(d: int) -> str:
    return f"bench-dep-{d:03d}"


def _uuid_text(kind: int, d: int, n: int) -> str:
    return f"{kind:x}{d:07x}-0000-4000-8000-{n:012x}"


def ledger_event(p: Pools, d: int, dep: str, c: int, at: datetime) -> LedgerEntryRecorded:
    x = p.ledger[c % POOL]
    return LedgerEntryRecorded(
        entry=LedgerEntry(
            entry_id=_uuid_text(0xA, d, c),
            deployment_id=dep,
            cycle_id=f"{dep}:c{c:08d}",
            execution_mode="live",
            timestamp=at,
            intent_type="SWAP",
            token_in="USDC",
            amount_in=x["amount_in"],
            token_out="WETH",
            amount_out=x["amount_out"],
            effective_price=x["effective_price"],
            slippage_bps=x["slippage_bps"],
            gas_used=x["gas_used"],
            gas_usd=x["gas_usd"],
            tx_hash=p.tx[(c + d) % POOL],
            chain="arbitrum",
            protocol="uniswap_v3",
            success=True,
            error="",
            extracted_data=x["extracted_data"],
            price_inputs=x["price_inputs"],
            pre_state=x["pre_state"],
            post_state=x["post_state"],
        )
    )


def snapshot_event(p: Pools, dep: str, c: int, at: datetime) -> PortfolioSnapshotRecorded:
    x = p.snapshot[c % POOL]
    return PortfolioSnapshotRecorded(
        deployment_id=dep,
        snapshot_id=None,  # a live writer leaves it to the projection (deployment_seq)
        cycle_id=f"{dep}:c{c:08d}",
        execution_mode="live",
        timestamp=at,
        iteration_number=c,
        total_value_usd=x["total_value_usd"],
        available_cash_usd=x["available_cash_usd"],
        deployed_capital_usd=x["deployed_capital_usd"],
        wallet_total_value_usd=x["wallet_total_value_usd"],
        value_confidence=ValueConfidence.HIGH,
        positions=x["positions"],
        token_prices=x["token_prices"],
        wallet_balances=x["wallet_balances"],
        chain="arbitrum",
        created_at=at,
    )


def cycle_events(p: Pools, d: int, dep: str, c: int) -> dict[str, list[DomainEvent]]:
    """One runner cycle of deployment ``d``: 8 events, keyed by the stream they go to."""
    at = T0 + c * CYCLE + timedelta(seconds=d)
    k = (c + 7 * d) % POOL
    cycle_id = f"{dep}:c{c:08d}"
    state = StateSaved(
        deployment_id=dep,
        version=c + 1,
        expected_version=c or None,
        state={"cycle": c, **p.state[k]},
        checksum=p.checksum[k],
        created_at=at,
    )
    pos = p.position[k]
    phase = c % 48
    position = PositionEventRecorded(
        position_event_id=_uuid_text(0xB, d, c),
        deployment_id=dep,
        cycle_id=cycle_id,
        execution_mode="live",
        position_id=f"{dep}:lp-{c // 48}",
        position_type="LP",
        position_event_type="OPEN" if phase == 0 else "CLOSE" if phase == 47 else "COLLECT_FEES",
        timestamp=at,
        protocol="uniswap_v3",
        chain="arbitrum",
        token0="WETH",
        token1="USDC",
        amount0=pos["amount0"],
        amount1=pos["amount1"],
        value_usd=pos["value_usd"],
        tick_lower=pos["tick_lower"],
        tick_upper=pos["tick_lower"] + 600,
        liquidity=pos["liquidity"],
        in_range=True,
        fees_token0=pos["fees_token0"],
        fees_token1=pos["fees_token1"],
        tx_hash=p.tx[(k + 1) % POOL],
        gas_usd=pos["gas_usd"],
        ledger_entry_id=_uuid_text(0xA, d, c),
        attribution=pos["attribution"],
        attribution_version=1,
    )
    met = p.metrics[k]
    metrics = PortfolioMetricsSaved(
        deployment_id=dep,
        initial_value_usd=Decimal("10000"),
        initial_timestamp=at,
        deposits_usd=Decimal("10000"),
        withdrawals_usd=Decimal("0"),
        gas_spent_usd=met["gas_spent_usd"],
        total_value_usd=met["total_value_usd"],
        positions=met["positions"],
        cycle_id=cycle_id,
        execution_mode="live",
        is_complete=True,
        updated_at=at,
    )
    o = p.order[k]
    order_id = "0x" + _uuid_text(0xC, d, c).replace("-", "")
    fill1 = ClobFill(
        fill_id=f"{order_id}:1", price=o["price"], size=o["half"], fee=o["fee"], timestamp=at
    )
    fill2 = ClobFill(
        fill_id=f"{order_id}:2",
        price=o["price"],
        size=o["size"] - o["half"],
        fee=o["fee"],
        timestamp=at + timedelta(seconds=2),
    )
    orders: list[DomainEvent] = [
        ClobOrderSaved(
            deployment_id=dep,
            order_id=order_id,
            market_id=o["market_id"],
            token_id=o["token_id"],
            side=o["side"],
            status=ClobOrderStatus.LIVE,
            price=o["price"],
            size=o["size"],
            intent_id=f"{cycle_id}:quote",
            metadata=o["metadata"],
            submitted_at=at,
            updated_at=at,
        ),
        ClobOrderStatusUpdated(
            deployment_id=dep,
            order_id=order_id,
            status=ClobOrderStatus.PARTIALLY_FILLED,
            fills=(fill1,),
            filled_size=o["half"],
            average_fill_price=o["price"],
            updated_at=at + timedelta(seconds=1),
        ),
        ClobOrderStatusUpdated(
            deployment_id=dep,
            order_id=order_id,
            status=ClobOrderStatus.MATCHED,
            fills=(fill1, fill2),
            filled_size=o["size"],
            average_fill_price=o["price"],
            updated_at=at + timedelta(seconds=2),
        ),
    ]
    return {
        "state": [state],
        "ledger": [ledger_event(p, d, dep, c, at)],
        "positions": [position],
        "snapshots": [snapshot_event(p, dep, c, at)],
        "metrics": [metrics],
        "orders": orders,
    }


EVENTS_PER_CYCLE = 8


class Workload(NamedTuple):
    events: int
    deployments: int
    cycles_per_deployment: int
    events_per_type: dict[str, int]
    append_calls: int
    seconds: float


async def generate(
    writer: ProjectionEngine, settings_events: int, deployments: int, chunk_cycles: int
) -> Workload:
    """Append the runner workload: chunks of cycles per deployment, deployments rotating.

    Each ``engine.append`` carries ``chunk_cycles`` cycles of one deployment's stream
    (the orders stream three events per cycle), so a rebuild batch of 5000 events of one
    type spans every deployment about as often as a finely interleaved log would.
    """
    pools = Pools()
    cycles = math.ceil(settings_events / EVENTS_PER_CYCLE / deployments)
    total = cycles * deployments * EVENTS_PER_CYCLE
    counts: Counter[str] = Counter()
    calls = 0
    started = time.perf_counter()
    next_report = 0.1

    async def append_streams(dep: str, streams: dict[str, list[DomainEvent]]) -> None:
        for stream, events in streams.items():
            await writer.append(dep, stream, events)

    for start in range(0, cycles, chunk_cycles):
        pending: list[tuple[str, dict[str, list[DomainEvent]]]] = []
        for d in range(deployments):
            dep = dep_id(d)
            streams: dict[str, list[DomainEvent]] = {s: [] for s in STREAMS}
            for c in range(start, min(start + chunk_cycles, cycles)):
                for stream, events in cycle_events(pools, d, dep, c).items():
                    streams[stream].extend(events)
            for events in streams.values():
                calls += 1
                for event in events:
                    counts[type(event).event_type] += 1
            pending.append((dep, streams))
            if len(pending) == APPENDERS or d == deployments - 1:
                # a few runners at once: PostgreSQL overlaps their commits (SQLite
                # serializes them on its writer, as it would serve real runners)
                await asyncio.gather(*(append_streams(dep, st) for dep, st in pending))
                pending = []
        done = sum(counts.values()) / total
        if done >= next_report:
            log(f"    generated {sum(counts.values()):,} / {total:,} events")
            next_report += 0.1
    return Workload(
        total,
        deployments,
        cycles,
        dict(sorted(counts.items())),
        calls,
        time.perf_counter() - started,
    )


# -- measuring helpers ----------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def latency(
    call: Callable[[int], Awaitable[Any]], reads: int, warmup: int = 3
) -> dict[str, Any]:
    """Time ``reads`` sequential calls (``call(i)``, so parameters can vary), in µs."""
    for i in range(warmup):
        await call(i)
    samples: list[float] = []
    for i in range(reads):
        started = time.perf_counter_ns()
        await call(i)
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    return {
        "reads": reads,
        "p50_us": round(percentile(samples, 50), 1),
        "p99_us": round(percentile(samples, 99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "min_us": round(samples[0], 1),
        "max_us": round(samples[-1], 1),
    }


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def peak_rss_kib() -> int:
    """``VmHWM``: the peak RSS of this process image, which starts afresh at exec.

    ``ru_maxrss`` does not: Linux carries the pre-exec image's high-water mark (here
    the forked copy of the benchmark's own, much larger, process) into the child.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return max_rss_kib()


async def scan_log(store: EventStore, decode: bool = False) -> tuple[int, float]:
    """Page through the whole global log as a rebuild reads it (``read_for_replay``, pages
    of 5000, one at a time); optionally decode each event as a rebuild does."""
    position = total = 0
    started = time.perf_counter()
    while page := await store.read_for_replay(position, SCAN_PAGE):
        if decode:
            for record in page:
                decode_event(record.type, record.schema_version, record.raw_data, trusted=True)
        total += len(page)
        position = page[-1].position
    return total, time.perf_counter() - started


async def log_bytes(store: EventStore) -> dict[str, Any]:
    length = "length" if store.backend == "sqlite" else "octet_length"
    rows = await store.query(
        f"SELECT count(*), sum({length}(data)), min({length}(data)), max({length}(data)) "
        "FROM chronicle_events"
    )
    count, total, low, high = rows[0]
    return {
        "events": int(count),
        "payload_bytes_total": int(total or 0),
        "payload_bytes_mean": round(int(total or 0) / max(int(count), 1), 1),
        "payload_bytes_min": int(low or 0),
        "payload_bytes_max": int(high or 0),
    }


# -- building one big deployment's rows: the projection's own statements, grouped ------------


class StatementGroups:
    """A batch's statements grouped by SQL text, each group one ``executemany``.

    Groups run in the order of the event types in the projection's ``handles``
    (ClobOrderSaved's upserts before ClobOrderStatusUpdated's updates), then in the
    order first seen (a ledger entry's retract, upsert, stats add). First-seen order
    alone is wrong: a page that starts with the status updates of orders saved later in
    the same page would run those updates before the saves, on no row. Equivalent to the
    engine's order for this workload only: every key is new or only updated after its
    creation, and timestamps increase per deployment.
    """

    def __init__(self) -> None:
        self._groups: dict[str, tuple[int, int, list[tuple[Any, ...]]]] = {}

    def add(self, rank: int, statements: Iterable[Statement]) -> None:
        groups = self._groups
        for sql, params in statements:
            group = groups.get(sql)
            if group is None:
                groups[sql] = group = (rank, len(groups), [])
            group[2].append(params)

    def __len__(self) -> int:
        return len(self._groups)

    def statements(self) -> list[Statement]:
        ordered = sorted(self._groups.items(), key=lambda item: item[1][:2])
        return [Statement(sql, params) for sql, (_, _, group) in ordered for params in group]


def type_ranks(projection: Projection) -> dict[str, int]:
    return {event_type: rank for rank, event_type in enumerate(projection.event_types())}


async def replay_grouped(
    store: EventStore, projection: Projection, deployment_id: str, from_seq: int
) -> tuple[int, float]:
    """Apply a deployment's events from ``from_seq`` to ``projection``'s live tables.

    The statements are exactly the ones ``projection.apply`` returns for each event (as
    the engine runs them), but within a transaction of ``REPLAY_CHUNK`` events they run
    as :class:`StatementGroups`, one ``executemany`` per SQL text. Used only to fill the
    NAV deployment (every snapshot a new timestamp); the rebuild figures come from the
    engine.
    """
    ranks = type_ranks(projection)
    applied = 0
    started = time.perf_counter()
    seq = from_seq
    while page := await store.read_deployment(deployment_id, seq, SCAN_PAGE):
        seq = page[-1].deployment_seq + 1
        for i in range(0, len(page), REPLAY_CHUNK):
            groups = StatementGroups()
            for record in page[i : i + REPLAY_CHUNK]:
                rank = ranks.get(record.type)
                if rank is None:
                    continue
                event = decode_event(record.type, record.schema_version, record.raw_data)
                groups.add(rank, projection.apply(event, record))
                applied += 1
            await store.execute(groups.statements())
        if len(page) < SCAN_PAGE:
            break
    return applied, time.perf_counter() - started


async def append_in_batches(
    writer: ProjectionEngine, deployment_id: str, stream: str, events: Iterator[DomainEvent]
) -> int:
    batch: list[DomainEvent] = []
    n = 0
    for event in events:
        batch.append(event)
        if len(batch) == APPEND_BATCH:
            await writer.append(deployment_id, stream, batch)
            n += len(batch)
            batch = []
    if batch:
        await writer.append(deployment_id, stream, batch)
        n += len(batch)
    return n


# -- 1. the full rebuild, in a child process -----------------------------------------------


async def rebuild_child(url: str, jobs: int = 1) -> dict[str, Any]:
    """What ``--rebuild-child URL`` runs: ``engine.rebuild(jobs=...)`` of everything, and
    memory (the workers' too, when there are any)."""
    async with eventstore.connect(url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        durability = await observe_durability(store)
        gc.collect()
        rss_before = rss_kib()
        hwm_before = peak_rss_kib()
        maxrss_before = max_rss_kib()
        load_before = os.getloadavg()[0]
        samples: list[tuple[int, int]] = []
        highest = [rss_before]
        applied: dict[str, int] = {}
        next_sample = [1]

        def progress(name: str, replayed: int) -> None:
            # called for every projection after each batch's commit (one pass for all)
            now = rss_kib()
            highest[0] = max(highest[0], now)
            applied[name] = replayed
            total = sum(applied.values())
            if total >= next_sample[0]:
                samples.append((total, now))
                next_sample[0] = (total // 50_000 + 1) * 50_000

        started = time.perf_counter()
        reports = await engine.rebuild(progress=progress, jobs=jobs)
        seconds = time.perf_counter() - started
        hwm_after = peak_rss_kib()
        maxrss_after = max_rss_kib()
        workers_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "code_fingerprint": code_fingerprint(),
        "jobs": jobs,
        "seconds": seconds,
        # RebuildReport.seconds is the time from the rebuild's start to the projection's
        # swap, about the same for all: one pass rebuilds them together
        "reports": [{"projection": r.projection, "events": r.events} for r in reports],
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "memory": {
            "rss_kib_before": rss_before,
            "vmhwm_kib_before": hwm_before,
            "vmhwm_kib_after": hwm_after,
            "ru_maxrss_kib_before": maxrss_before,
            "ru_maxrss_kib_after": maxrss_after,
            "workers_ru_maxrss_kib": workers_maxrss if jobs > 1 else None,
            "rss_kib_highest_sampled": highest[0],
            "rss_samples": [
                {"events_applied": n, "rss_mib": round(kib / 1024, 1)} for n, kib in samples
            ],
        },
        "durability": durability,
    }


async def observe_durability(store: EventStore) -> dict[str, Any]:
    """Read the durability settings back from the store's own connection (best effort)."""
    backend: Any = getattr(store, "_backend", None)
    if store.backend == "sqlite":
        db = getattr(backend, "_db", None)
        if isinstance(db, sqlite3.Connection):
            return sqlite_pragmas(db)
        return {"journal_mode": "unobservable", "synchronous": "unobservable"}
    rows = await store.query("SHOW synchronous_commit")
    return {"synchronous_commit": rows[0][0]}


async def run_rebuild_child(url: str, jobs: int = 1) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "benchmarks.projections_bench",
            "--rebuild-child",
            url,
            "--rebuild-jobs",
            str(jobs),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the rebuild child failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rebuild_summary(children: Sequence[dict[str, Any]], log_events: int) -> dict[str, Any]:
    rates = [log_events / c["seconds"] for c in children]
    per_projection: dict[str, Any] = {}
    for name in sorted({r["projection"] for c in children for r in c["reports"]}):
        events = [
            next(r["events"] for r in c["reports"] if r["projection"] == name) for c in children
        ]
        per_projection[name] = {"events": events[0]}
        if len(set(events)) > 1:  # the same log every run: should not happen
            per_projection[name]["events_runs"] = events
    growth = [
        max(0, c["memory"]["vmhwm_kib_after"] - c["memory"]["vmhwm_kib_before"]) for c in children
    ]
    return {
        "how": "ProjectionEngine(store, ALL_PROJECTIONS).rebuild() in a fresh child process; "
        "events_per_s = the log's events / the rebuild's wall time. The engine rebuilds all "
        "nine read models in one pass over the log (each batch read, decoded and committed "
        "once for all of them; a batch's commit overlaps the next batch's read and decode), "
        "so only the rebuild as a whole has a time and a rate. per_projection gives each "
        "projection's events (RebuildReport.events); its RebuildReport.seconds is the time "
        "from the rebuild's start to its swap, about equal for all nine, so per-projection "
        "seconds, rates and shares are not reported (they no longer exist). breakdown "
        "splits a rebuild's time into its parts",
        "events": log_events,
        "events_applied": sum(r["events"] for r in children[0]["reports"]),
        "seconds": summarize([c["seconds"] for c in children], 2),
        "events_per_s": summarize(rates),
        "per_projection": per_projection,
        "memory": {
            "how": "peak RSS (VmHWM from /proc/self/status) of a fresh child process that only "
            "connects and runs engine.rebuild(); growth = VmHWM after the rebuild minus VmHWM "
            "just before it (after imports and connect). Not ru_maxrss: Linux carries the "
            "pre-exec high-water mark of the forked parent into a child's ru_maxrss (both are "
            "kept per run under children_memory). RSS is also sampled from /proc/self/statm "
            "in the rebuild's progress callback (called after each batch's commit; a sample "
            "every ~50k events applied, summed over the projections)",
            "peak_growth_mib": summarize([g / 1024 for g in growth], 1),
            "peak_rss_mib": summarize([c["memory"]["vmhwm_kib_after"] / 1024 for c in children], 1),
            "rss_before_mib": round(children[-1]["memory"]["rss_kib_before"] / 1024, 1),
            "rss_samples_last_run": children[-1]["memory"]["rss_samples"],
            "children_memory": [
                {k: v for k, v in c["memory"].items() if k != "rss_samples"} for c in children
            ],
        },
        "loadavg_1min_before_after": [c["loadavg_1min"] for c in children],
    }


async def verify_rebuilt(store: EventStore, workload: Workload) -> dict[str, Any]:
    """Row counts of the rebuilt read models against what the workload wrote."""
    per = workload.events_per_type

    async def count(sql: str) -> int:
        return int((await store.query(sql))[0][0] or 0)

    found = {
        "rm_state": await count("SELECT count(*) FROM rm_state"),
        "rm_portfolio_metrics": await count("SELECT count(*) FROM rm_portfolio_metrics"),
        "rm_ledger": await count("SELECT count(*) FROM rm_ledger"),
        "rm_ledger_stats.total": await count("SELECT sum(total) FROM rm_ledger_stats"),
        "rm_position_events": await count("SELECT count(*) FROM rm_position_events"),
        "rm_portfolio_snapshots": await count("SELECT count(*) FROM rm_portfolio_snapshots"),
        "rm_clob_orders": await count("SELECT count(*) FROM rm_clob_orders"),
        "rm_clob_orders.matched": await count(
            "SELECT count(*) FROM rm_clob_orders WHERE status = 'matched'"
        ),
    }
    expected = {
        "rm_state": workload.deployments,
        "rm_portfolio_metrics": workload.deployments,
        "rm_ledger": per["LedgerEntryRecorded"],
        "rm_ledger_stats.total": per["LedgerEntryRecorded"],
        "rm_position_events": per["PositionEventRecorded"],
        "rm_portfolio_snapshots": per["PortfolioSnapshotRecorded"],
        "rm_clob_orders": per["ClobOrderSaved"],
        "rm_clob_orders.matched": per["ClobOrderSaved"],
    }
    return {"rows": found, "ok": found == expected}


# -- 2. quant stats at three ledger sizes ---------------------------------------------------


async def interleaved_latency(
    calls: dict[str, Callable[[int], Awaitable[Any]]], reads: int, warmup: int = 20
) -> dict[str, dict[str, Any]]:
    """Like :func:`latency` for several calls at once, taking turns read by read.

    Read ``i`` of every call runs before read ``i + 1`` of any (the order rotating), so
    a noisy neighbour or a background vacuum hits every call alike.
    """
    names = list(calls)
    for i in range(warmup):
        for name in names:
            await calls[name](i)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(reads):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter_ns()
            await calls[name](i)
            samples[name].append((time.perf_counter_ns() - started) / 1000)
    out: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {
            "reads": reads,
            "p50_us": round(percentile(values, 50), 1),
            "p99_us": round(percentile(values, 99), 1),
            "mean_us": round(statistics.fmean(values), 1),
            "min_us": round(values[0], 1),
            "max_us": round(values[-1], 1),
        }
    return out


async def analyze_read_models(store: EventStore) -> str:
    """PostgreSQL: ANALYZE the read-model tables, as autovacuum soon would after a bulk load."""
    if store.backend != "postgresql":
        return "not run: Chronicle never runs ANALYZE on SQLite, so neither does the benchmark"
    tables = [t.physical() for cls in ALL_PROJECTIONS for t in cls.tables]
    await store.execute([Statement(f"ANALYZE {table}") for table in tables])
    return "ANALYZE of every rm_ table before the reads (what autovacuum does after a bulk load)"


class BulkLoader(NamedTuple):
    """Writes many rows into a read-model table at once (setup only, never measured)."""

    backend: str
    dsn: str | None  # PostgreSQL: COPY through a connection of its own
    schema: str | None

    async def insert(
        self,
        store: EventStore,
        table: str,
        columns: str,
        upsert_sql: str,
        rows: list[tuple[Any, ...]],
    ) -> None:
        if self.backend == "postgresql" and self.dsn is not None:
            conn = await asyncpg.connect(
                self.dsn, server_settings={"search_path": str(self.schema)}
            )
            try:
                await conn.copy_records_to_table(
                    table, records=rows, columns=[c.strip() for c in columns.split(",")]
                )
            finally:
                await conn.close()
        else:  # SQLite: the projection's own upsert, one executemany per transaction
            await store.execute([Statement(upsert_sql, row) for row in rows])


def ledger_row(entry: LedgerEntry) -> tuple[Any, ...]:
    """The ``rm_ledger`` row the projection's upsert writes for a new entry (its own helpers)."""
    return (
        *ledger_model._entry_row(entry),
        *ledger_model._contribution(entry),
        ledger_model._anchor_value(entry),
    )


class LedgerFold:
    """The ``rm_ledger_stats`` row of a deployment, folded in Python from the entries."""

    def __init__(self) -> None:
        self.counts = [0] * 6  # total, tx_hash, cycle_id, price_inputs, pre_post, gas > 0
        self.gas = Decimal("0")
        self.anchor: str | None = None
        self.first: tuple[int, str] | None = None

    def add(self, entry: LedgerEntry, row: tuple[Any, ...]) -> None:
        c_tx, c_cycle, c_prices, c_pre_post, c_gas_positive, c_gas = row[23:29]
        counts = self.counts
        counts[0] += 1
        counts[1] += c_tx
        counts[2] += c_cycle
        counts[3] += c_prices
        counts[4] += c_pre_post
        counts[5] += c_gas_positive
        self.gas += Decimal(c_gas)
        anchor = row[29]
        key = (row[4], row[1])  # (ts, entry_id): the projection's anchor order
        anchors = entry.pre_state is not None and entry.price_inputs is not None
        if anchor is not None and anchors and (self.first is None or key < self.first):
            self.first, self.anchor = key, anchor

    def row(self, deployment_id: str) -> tuple[Any, ...]:
        return (deployment_id, *self.counts, format(self.gas, "f"), self.anchor)


_LEDGER_COLUMNS = (
    f"{ledger_model._ENTRY_COLUMNS}, {ledger_model._CONTRIBUTION_COLUMNS}, anchor_value"
)
_STATS_INSERT_COLUMNS = f"deployment_id, {ledger_model._STATS_COLUMNS}"


async def bulk_fill_ledger(
    store: EventStore,
    bulk: BulkLoader,
    ledger: Any,
    dep: str,
    d: int,
    size: int,
    pools: Pools,
) -> LedgerFold:
    """``size`` generated entries of ``dep``, written as the ledger projection would.

    Entry ``c`` is ``ledger_event(pools, d, dep, c, ...)``, which takes everything but its
    entry id, cycle id and timestamp from pool slot ``c % POOL``; so the projection's row
    helpers run once per slot and each row swaps those three columns in (no other column
    depends on them). ``twin_check`` compares this fill with ``engine.append``.
    """
    templates: list[tuple[Any, ...]] = []
    folds: list[LedgerFold] = []
    for k in range(min(size, POOL)):
        entry = ledger_event(pools, d, dep, k, T0 + k * CYCLE).entry
        templates.append(ledger_row(entry))
        one = LedgerFold()
        one.add(entry, templates[-1])
        folds.append(one)
    fold = LedgerFold()
    fold.anchor, fold.first = folds[0].anchor, folds[0].first  # entry 0: the earliest
    step = int(CYCLE.total_seconds() * 1_000_000)
    t0 = templates[0][4]
    batch: list[tuple[Any, ...]] = []
    for c in range(size):
        k = c % POOL
        row = templates[k]
        batch.append(
            (dep, _uuid_text(0xA, d, c), f"{dep}:c{c:08d}", row[3], t0 + c * step, *row[5:])
        )
        slot = folds[k]
        fold.counts = [a + b for a, b in zip(fold.counts, slot.counts, strict=True)]
        fold.gas += slot.gas
        if len(batch) == 50_000:
            await bulk.insert(store, ledger.t["ledger"], _LEDGER_COLUMNS, ledger._upsert, batch)
            batch = []
    if batch:
        await bulk.insert(store, ledger.t["ledger"], _LEDGER_COLUMNS, ledger._upsert, batch)
    marks = ", ".join(f"${i}" for i in range(1, 10))
    stats = ledger.t["ledger_stats"]
    insert = f"INSERT INTO {stats} ({_STATS_INSERT_COLUMNS}) VALUES ({marks})"
    await store.execute([Statement(insert, fold.row(dep))])
    return fold


async def twin_check(
    store: EventStore, reader: ProjectionEngine, bulk: BulkLoader, ledger: Any, size: int
) -> dict[str, Any]:
    """The same entries through ``engine.append`` (inline ledger projection) and the bulk fill.

    Two deployments get identical entries; every ledger column but ``deployment_id`` (and
    ``cycle_id`` after the deployment's name) and the whole stats row must match.
    """
    engine_dep, bulk_dep = "bench-quant-twin-engine", "bench-quant-twin-bulk"
    d = 990
    pools = Pools(seed=99)
    events = [ledger_event(pools, d, engine_dep, c, T0 + c * CYCLE) for c in range(size)]
    await append_in_batches(reader, engine_dep, "ledger", iter(events))  # the real engine path
    await bulk_fill_ledger(store, bulk, ledger, bulk_dep, d, size, Pools(seed=99))
    kept = [c.strip() for c in _LEDGER_COLUMNS.split(",")]
    kept = [c for c in kept if c not in ("deployment_id", "cycle_id")]
    # the cycle id embeds the deployment's name: compare what follows it
    columns = ", ".join([*kept, "substr(cycle_id, length(deployment_id) + 1)"])
    table, stats = ledger.t["ledger"], ledger.t["ledger_stats"]
    stat_columns = ledger_model._STATS_COLUMNS
    row = (
        await store.query(
            f"SELECT (SELECT count(*) FROM (SELECT {columns} FROM {table} WHERE deployment_id = $1 "
            f"EXCEPT SELECT {columns} FROM {table} WHERE deployment_id = $2) a), "
            f"(SELECT count(*) FROM (SELECT {columns} FROM {table} WHERE deployment_id = $2 "
            f"EXCEPT SELECT {columns} FROM {table} WHERE deployment_id = $1) b), "
            f"(SELECT count(*) FROM (SELECT {stat_columns} FROM {stats} WHERE deployment_id = $1 "
            f"EXCEPT SELECT {stat_columns} FROM {stats} WHERE deployment_id = $2) c)",
            (engine_dep, bulk_dep),
        )
    )[0]
    ok = all(int(v) == 0 for v in row)
    return {
        "entries": size,
        "compared": "every rm_ledger column but deployment_id (cycle_id after the deployment "
        "name it starts with), and the whole rm_ledger_stats row",
        "rows_only_in_engine_path": int(row[0]),
        "rows_only_in_bulk_fill": int(row[1]),
        "stats_rows_differing": int(row[2]),
        "ok": ok,
    }


async def quant_stats_reads(
    store: EventStore, reader: ProjectionEngine, bulk: BulkLoader, settings: Settings
) -> dict[str, Any]:
    """One deployment per size, its ledger rows bulk-filled, then reads taking turns."""
    ledger: Any = reader.live("ledger")
    twin = await twin_check(store, reader, bulk, ledger, 1000)
    log(f"  quant stats: bulk fill vs engine path on 1000 entries identical: {twin['ok']}")
    steps: list[dict[str, Any]] = []
    deployments: dict[str, int] = {}
    for number, size in enumerate(settings.quant_sizes):
        dep = f"bench-quant-{size}"
        deployments[dep] = size
        log(f"  quant stats: {size:,} ledger entries in {dep}")
        started = time.perf_counter()
        fold = await bulk_fill_ledger(
            store, bulk, ledger, dep, 900 + number, size, Pools(7 + number)
        )
        fill_s = time.perf_counter() - started
        stats = await ledger.quant_stats(store, dep)
        counted_at = time.perf_counter()
        found = await store.query("SELECT count(*) FROM rm_ledger WHERE deployment_id = $1", (dep,))
        count_ms = (time.perf_counter() - counted_at) * 1000
        steps.append(
            {
                "deployment": dep,
                "ledger_entries": size,
                "ledger_rows_in_table": int(found[0][0]),
                "stats_total": stats.total,
                "stats_ok": stats.total == size == int(found[0][0])
                and stats.with_pre_post_state == size
                and stats.gas_usd_sum == fold.gas
                and stats.first_action_wallet_value_usd is not None,
                "context_count_star_ms": round(count_ms, 1),
                "fill_s": round(fill_s, 2),
            }
        )
    analyzed = await analyze_read_models(store)

    def reader_for(dep: str) -> Callable[[int], Awaitable[Any]]:
        async def read(i: int) -> Any:
            return await ledger.quant_stats(store, dep)

        return read

    figures = await interleaved_latency(
        {dep: reader_for(dep) for dep in deployments}, settings.reads
    )
    for step in steps:
        step["quant_stats"] = figures[step["deployment"]]
        log(
            f"    quant_stats at {step['ledger_entries']:,}: p50 "
            f"{step['quant_stats']['p50_us']} µs, p99 {step['quant_stats']['p99_us']} µs"
        )
    first, last = steps[0]["quant_stats"], steps[-1]["quant_stats"]
    return {
        "call": 'engine.live("ledger").quant_stats(store, deployment_id)',
        "how": "one deployment per size; then the sizes take turns read by read (20 warm-up "
        "reads each), so noise hits every size alike",
        "fill": "read-model rows only (the read never touches the log): each entry's rm_ledger "
        "row is built by the ledger projection's own helpers (_entry_row, _contribution, "
        "_anchor_value) and bulk-written (SQLite: the projection's upsert SQL as one "
        "executemany per 50k rows; PostgreSQL: COPY), the rm_ledger_stats row folded in "
        "Python and inserted once. twin_check shows this fill writes exactly what "
        "engine.append with the inline ledger projection writes",
        "twin_check": twin,
        "steps": steps,
        "ratio_p50_largest_to_smallest": round(last["p50_us"] / first["p50_us"], 2),
        "ratio_p99_largest_to_smallest": round(last["p99_us"] / first["p99_us"], 2),
        "statistics": analyzed,
        "context": "context_count_star_ms is one SELECT count(*) over the deployment's "
        "ledger rows: what any read that scanned the ledger would pay at least",
    }


# -- 3. NAV-series reads ------------------------------------------------------------------


async def nav_reads(
    store: EventStore, reader: ProjectionEngine, writer: ProjectionEngine, settings: Settings
) -> dict[str, Any]:
    dep = "bench-nav"
    pools = Pools(seed=11)
    n = settings.nav_snapshots
    nav: Any = reader.live("nav")
    log(f"  NAV: {n:,} snapshots in {dep}")
    started = time.perf_counter()
    events = (snapshot_event(pools, dep, c, T0 + c * CYCLE) for c in range(n))
    await append_in_batches(writer, dep, "snapshots", events)
    appended_s = time.perf_counter() - started
    applied, replay_s = await replay_grouped(store, nav, dep, 1)
    count = await nav.count(store, dep)
    analyzed = await analyze_read_models(store)
    rng = random.Random(5)
    # positions (snapshot indices) for the varying reads, fixed per run
    spots = [rng.randrange(n // 10, n - n // 10) for _ in range(settings.reads + 8)]

    def at(i: int) -> datetime:
        return T0 + i * CYCLE

    window = 30 * 24 * 12  # snapshots in 30 days at one per 5 minutes
    week = 7 * 24 * 12

    async def latest(i: int) -> Any:
        return await nav.latest(store, dep)

    async def recent(i: int) -> Any:
        return await nav.recent(store, dep, 168)

    async def since(i: int) -> Any:
        return await nav.since(store, dep, at(spots[i]), 168)

    async def in_window_capped(i: int) -> Any:
        start = spots[i] - window
        return await nav.in_window(store, dep, at(start), at(spots[i]), scan_cap=1000)

    async def in_window_week(i: int) -> Any:
        start = spots[i] - week
        return await nav.in_window(store, dep, at(start), at(spots[i]))

    async def series_page(i: int) -> Any:
        cursor = (at(spots[i]), spots[i] + 1)  # snapshot_id = deployment_seq = index + 1
        return await nav.nav_series(store, dep, since=cursor, scan_cap=1000)

    async def series_full(i: int) -> Any:
        return await nav.nav_series(store, dep)

    async def point(i: int) -> Any:
        return await nav.at(store, dep, at(spots[i]) + timedelta(seconds=90))

    # shape checks, once, before timing
    checks = {
        "latest_is_last": (await latest(0)).snapshot_id == n,
        "recent_rows": len(await recent(0)),
        "since_rows": len(await since(0)),
        "in_window_capped": [len((r := await in_window_capped(0))[0]), r[1]],
        "in_window_week_rows": len((await in_window_week(0))[0]),
        "series_page": [len((p := await series_page(0))[0]), p[1]],
        "series_full": [len((f := await series_full(0))[0]), f[1]],
        "at_is_floor": (await point(0)).snapshot_id == spots[0] + 1,
    }
    reads = {
        "latest": ("latest(dep)", latest, settings.reads),
        "recent_168": ("recent(dep, 168)", recent, settings.reads),
        "since_168": ("since(dep, t, 168), t random in the middle 80%", since, settings.reads),
        "in_window_30d_cap1000": (
            "in_window(dep, t - 30 days, t, scan_cap=1000): 8640 rows in the window, the "
            "newest 1000 returned, truncated=True",
            in_window_capped,
            settings.reads,
        ),
        "in_window_7d": (
            "in_window(dep, t - 7 days, t), default scan_cap: 2017 rows",
            in_window_week,
            settings.reads,
        ),
        "nav_series_page_1000": (
            "nav_series(dep, since=(ts, id) cursor, scan_cap=1000): the next 1000 rows",
            series_page,
            settings.reads,
        ),
        "nav_series_full": (
            f"nav_series(dep), default scan_cap=200000: all {n:,} rows",
            series_full,
            settings.heavy_reads,
        ),
        "at": ("at(dep, t): the snapshot at or before t", point, settings.reads),
    }
    figures: dict[str, Any] = {}
    for key, (what, fn, count_reads) in reads.items():
        figures[key] = {"call": what, **await latency(fn, count_reads, warmup=1)}
        log(f"    {key}: p50 {figures[key]['p50_us']} µs, p99 {figures[key]['p99_us']} µs")
    return {
        "deployment": dep,
        "snapshots": n,
        "snapshots_counted": count,
        "snapshot_spacing": "5 minutes",
        "statistics": analyzed,
        "checks": checks,
        "reads": figures,
        "fill": {
            "append_s": round(appended_s, 2),
            "replayed_events": applied,
            "replay_s": round(replay_s, 2),
            "replay_events_per_s": round(applied / replay_s) if replay_s else None,
        },
    }


# -- 4. where a rebuild's time goes -------------------------------------------------------


PARTS = ("read", "decode", "replay_statements", "execute", "shadow_ddl")
"""The parts of a rebuild :class:`_Instrument` times, in the order a batch meets them."""


class _Instrument:
    """Times the parts of ``engine.rebuild()`` by wrapping what its one pass calls.

    ``store.read_for_replay`` (read: the query and building ``ReplayedEvent``s), the
    the one pass's per-event decode (``projections.shadow._decode``: each type's msgspec
    decoder, trusted, looked up once per batch; ``decode_event`` only as its fallback),
    ``replay_statements`` as the engine calls it, once per projection and batch (each
    projection's ``apply``, grouping by replay key, ``Projection.fold``), and
    ``store.execute`` (SQL: the driver calls and the database's work), split into the
    batches' commits (execute) and the shadow tables' DDL before the pass (shadow_ddl).
    Every call's interval is kept, so overlapping parts can be told apart.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.spans: dict[str, list[tuple[float, float]]] = {part: [] for part in PARTS}
        self.counts: Counter[str] = Counter()
        self.per_projection: dict[str, Counter[str]] = defaultdict(Counter)
        self.replay_seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        store, spans, counts = self.store, self.spans, self.counts
        per_projection, replay_seconds = self.per_projection, self.replay_seconds
        read, execute = store.read_for_replay, store.execute
        decode, replay = shadow_module._decode, replay_statements
        decode_spans, replay_spans = spans["decode"], spans["replay_statements"]
        clock = time.perf_counter

        async def timed_read(
            after: int = 0,
            limit: int = 5000,
            *,
            types: Sequence[str] | None = None,
            deployment_id: str | None = None,
        ) -> list[ReplayedEvent]:
            started = clock()
            batch = await read(after, limit, types=types, deployment_id=deployment_id)
            spans["read"].append((started, clock()))
            counts["read_calls"] += 1
            counts["rows_read"] += len(batch)
            return batch

        async def timed_execute(statements: Sequence[Statement]) -> None:
            # rebuild() creates every shadow table before its pass reads anything
            part = "execute" if counts["read_calls"] else "shadow_ddl"
            started = clock()
            await execute(statements)
            spans[part].append((started, clock()))
            if part == "execute":
                runs = statement_runs(statements)
                counts["execute_calls"] += 1
                counts["statements_executed"] += len(statements)
                counts["driver_calls"] += len(runs)
                counts["driver_calls_single_statement"] += sum(1 for _, ps in runs if len(ps) == 1)

        def timed_decode(record: Placement, decoders: Any) -> DomainEvent:
            started = clock()
            event = decode(record, decoders)
            decode_spans.append((started, clock()))
            return event

        def counted_decode_event(
            event_type: str, schema_version: int, data: bytes, *, trusted: bool = False
        ) -> DomainEvent:
            # the fallback for older schema versions and bad bytes
            counts["decode_event_calls"] += 1
            if not trusted:
                counts["decode_calls_untrusted"] += 1
            return decode_event(event_type, schema_version, data, trusted=trusted)

        def timed_replay(projection: Projection, items: Sequence[Item]) -> list[Statement]:
            started = clock()
            out = replay(projection, items)
            ended = clock()
            replay_spans.append((started, ended))
            replay_seconds[projection.name] += ended - started
            mine = per_projection[projection.name]
            mine["events"] += len(items)
            mine["statements_after_fold"] += len(out)
            return out

        for name, original in (
            ("_decode", decode),
            ("decode_event", decode_event),
            ("replay_statements", replay),
        ):
            if vars(shadow_module).get(name) is not original:
                raise RuntimeError(f"projections.shadow no longer calls {name}: fix _Instrument")
        self._undo += [
            _patch(store, "read_for_replay", timed_read),
            _patch(store, "execute", timed_execute),
            # the one pass's own globals (projections.shadow)
            _patch(shadow_module, "_decode", timed_decode),
            _patch(shadow_module, "decode_event", counted_decode_event),
            _patch(shadow_module, "replay_statements", timed_replay),
        ]
        for cls in ALL_PROJECTIONS:
            if cls.fold is Projection.fold:  # folds nothing
                continue

            def counting_fold(
                projection: Projection,
                earlier: Statement,
                later: Statement,
                _fold: Callable[[Projection, Statement, Statement], Statement | None] = cls.fold,
            ) -> Statement | None:
                folded = _fold(projection, earlier, later)
                if folded is not None:  # two statements became one
                    per_projection[projection.name]["folded"] += 1
                return folded

            self._undo.append(_patch(cls, "fold", counting_fold))

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def report(
        self, wall: float, reports: Sequence[RebuildReport], log_events: int
    ) -> dict[str, Any]:
        spans, counts = self.spans, self.counts
        parts = {part: sum(end - start for start, end in spans[part]) for part in PARTS}
        summed = sum(parts.values())
        covered = _covered_seconds([span for part in PARTS for span in spans[part]])
        per_projection: dict[str, Any] = {}
        for r in sorted(reports, key=lambda r: r.projection):
            mine = self.per_projection[r.projection]
            seconds = self.replay_seconds[r.projection]
            per_projection[r.projection] = {
                "events": r.events,
                "replay_statements_s": round(seconds, 3),
                "replay_statements_us_per_event": round(seconds / r.events * 1e6, 2)
                if r.events
                else None,
                "statements_from_apply": mine["statements_after_fold"] + mine["folded"],
                "statements_after_fold": mine["statements_after_fold"],
            }
        after_fold = sum(p["statements_after_fold"] for p in per_projection.values())
        from_apply = sum(p["statements_from_apply"] for p in per_projection.values())
        per_event = max(log_events, 1)
        return {
            "seconds": round(wall, 3),
            "events_per_s": round(log_events / wall),
            "total": {
                **{f"{part}_s": round(parts[part], 3) for part in PARTS},
                "sum_of_parts_s": round(summed, 3),
                "covered_s": round(covered, 3),
                "overlap_s": round(summed - covered, 3),
                "outside_parts_s": round(wall - covered, 3),
            },
            "us_per_event": {
                **{part: round(parts[part] / per_event * 1e6, 2) for part in PARTS},
                "wall": round(wall / per_event * 1e6, 2),
            },
            "counts": {
                "read_calls": counts["read_calls"],
                "rows_read": counts["rows_read"],
                "decode_calls": len(spans["decode"]),
                "decode_calls_untrusted": counts["decode_calls_untrusted"],
                "replay_statements_calls": len(spans["replay_statements"]),
                "events_applied": sum(r.events for r in reports),
                "statements_from_apply": from_apply,
                "statements_after_fold": after_fold,
                "statements_folded_away": from_apply - after_fold,
                "execute_calls": counts["execute_calls"],
                "statements_executed": counts["statements_executed"],
                "driver_calls": counts["driver_calls"],
                "driver_calls_single_statement": counts["driver_calls_single_statement"],
                "shadow_ddl_calls": len(spans["shadow_ddl"]),
                "statements_executed_per_event": round(
                    counts["statements_executed"] / per_event, 3
                ),
                "driver_calls_per_event": round(counts["driver_calls"] / per_event, 4),
            },
            "replay_statements_per_projection": per_projection,
        }


def _patch(owner: Any, name: str, value: object) -> Callable[[], None]:
    """Set ``owner.name`` to ``value``; return what puts the attribute back as it was."""
    own = vars(owner)
    if name in own:
        old = own[name]
        setattr(owner, name, value)
        return lambda: setattr(owner, name, old)
    setattr(owner, name, value)
    return lambda: delattr(owner, name)


def _covered_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals."""
    covered, reached = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reached:
            covered += end - max(start, reached)
            reached = end
    return covered


def profile_top(profile: cProfile.Profile, limit: int = 20) -> dict[str, Any]:
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )[:limit]:
        where = name if filename == "~" else f"{_short(filename)}:{line}({name})"
        rows.append(
            {
                "function": where,
                "calls": ncalls,
                "tottime_s": round(tottime, 3),
                "share": round(tottime / total, 3) if total else 0.0,
                "cumtime_s": round(cumtime, 3),
            }
        )
    return {"total_s": round(total, 3), "top_by_tottime": rows}


def _short(filename: str) -> str:
    path = Path(filename)
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return "/".join(parts[-2:])


_BREAKDOWN_HOW = (
    "engine.rebuild() of all nine read models with what its one pass over the log calls "
    "wrapped and timed (every call's interval kept): read = store.read_for_replay (the "
    "query and building ReplayedEvents); decode = the one pass's per-event decode (each "
    "type's msgspec decoder, trusted, looked up once per batch); "
    "replay_statements = projections.replay.replay_statements as the engine calls it, once "
    "per projection and batch (apply, grouping by replay key, Projection.fold); execute = "
    "store.execute of each batch (every projection's statements and shadow checkpoint in "
    "one transaction: the driver and the database); shadow_ddl = store.execute of the "
    "shadow tables' DROP/CREATE before the pass. Catalog reads, the engine's own loop and "
    "the swaps (their own transactions) are in no part: outside_parts_s = seconds (wall) "
    "minus covered_s, the time covered by at least one part. us_per_event divides each "
    "part by the log's events. The wrappers cost about 0.3 us per event, included in "
    "seconds"
)
_BREAKDOWN_OVERLAP = (
    "The engine reads batch k+1 and decodes it while batch k commits (the commit runs as a "
    "task). On PostgreSQL these overlap in time: the read and the commit are the server's "
    "work on two connections while this process decodes and applies, so read_s and "
    "execute_s are latencies that include time the event loop spent on other parts, the "
    "parts sum to more than the wall time (overlap_s = sum_of_parts_s - covered_s), and a "
    "part's us_per_event is not what it adds to the wall time. On SQLite the read and the "
    "commit run on the event loop's thread in turn, overlap_s is about 0 and seconds = "
    "sum_of_parts_s + outside_parts_s"
)
_BREAKDOWN_COUNTS = (
    "rows_read: rows read_for_replay returned; decode_calls: events decoded (once per "
    "event, however many projections handle it); statements_from_apply: what the "
    "projections' apply() returned; statements_after_fold: what replay_statements returned "
    "(statements_folded_away = the difference: each Projection.fold that merged two "
    "statements into one, counted by wrapping the fold of the projections that define "
    "one); statements_executed: statements_after_fold plus one checkpoint UPDATE per "
    "projection and batch; driver_calls: eventstore.append.statement_runs of each batch "
    "(consecutive statements with the same SQL share one executemany), "
    "driver_calls_single_statement those with one parameter set"
)
_PER_PROJECTION_HOW = (
    "replay_statements alone, per projection: the one part of a rebuild that still belongs "
    "to a single projection (the read, the decoding and each batch's commit are shared by "
    "all nine)"
)


async def breakdown(url: str, settings: Settings) -> dict[str, Any]:
    """Generate a smaller log of the same shape, rebuild it instrumented, then profiled."""
    async with eventstore.connect(url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        await engine.start()
        workload = await generate(
            ProjectionEngine(store, []),
            settings.breakdown_events,
            FULL.deployments,
            settings.chunk_cycles,
        )
        log(f"  breakdown: instrumented rebuild of {workload.events:,} events")
        instrument = _Instrument(store)
        instrument.install()
        try:
            gc.collect()
            started = time.perf_counter()
            reports = await engine.rebuild()
            seconds = time.perf_counter() - started
        finally:
            instrument.remove()
        split = instrument.report(seconds, reports, workload.events)
        # the profiled rebuild below, and any caller after this, must run the engine's own code
        split["engine_restored_after"] = vars(shadow_module)[
            "decode_event"
        ] is decode_event and all(
            "fold" not in vars(cls) or cls.fold.__name__ == "fold" for cls in ALL_PROJECTIONS
        )
        total = split["total"]
        log(
            f"    {split['events_per_s']:,} ev/s; read {total['read_s']} s, decode "
            f"{total['decode_s']} s, replay_statements {total['replay_statements_s']} s, "
            f"execute {total['execute_s']} s (overlap {total['overlap_s']} s)"
        )
        log(f"  breakdown: cProfile of a second rebuild of {workload.events:,} events")
        profile = cProfile.Profile()
        gc.collect()
        profiled_started = time.perf_counter()
        profile.enable()
        await engine.rebuild()
        profile.disable()
        profiled_s = time.perf_counter() - profiled_started
    split["replay_statements_per_projection"] = {
        "how": _PER_PROJECTION_HOW,
        **split["replay_statements_per_projection"],
    }
    return {
        "events": workload.events,
        "instrumented_rebuild": {
            "how": _BREAKDOWN_HOW,
            "overlap": _BREAKDOWN_OVERLAP,
            "counts_how": _BREAKDOWN_COUNTS,
            **split,
        },
        "profile": {
            "how": "cProfile of the whole second rebuild, main thread only. On SQLite the "
            "read, the decoding, apply and the SQL all run on the event loop's thread, so "
            "all of it is here; on PostgreSQL the server's time (the reads and commits) shows "
            "up as the event loop's select/poll, or not at all where it overlapped this "
            "process's own work",
            "wall_s": round(profiled_s, 2),
            **profile_top(profile),
        },
    }


# -- per backend -------------------------------------------------------------------------


async def bench_backend(
    gen_url: str, rebuild_url: str, breakdown_url: str, settings: Settings, bulk: BulkLoader
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    phases: dict[str, float] = {}
    mark = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - mark[0], 1)
        mark[0] = now

    async with eventstore.connect(gen_url) as store:
        reader = ProjectionEngine(store, ALL_PROJECTIONS)
        await reader.start()  # catalog and empty tables; the log is empty, nothing to build
        writer = ProjectionEngine(store, [])
        log(f"  generating ~{settings.events:,} events ({settings.deployments} deployments)")
        workload = await generate(
            writer, settings.events, settings.deployments, settings.chunk_cycles
        )
        log(
            f"  generated {workload.events:,} events in {workload.seconds:.1f} s "
            f"({workload.events / workload.seconds:,.0f} ev/s)"
        )
        sizes = await log_bytes(store)
        phase("generate")

        scans, decoded = [], []
        for rep in range(settings.scan_repetitions):
            gc.collect()
            n, s = await scan_log(store)
            scans.append(n / s)
            log(f"  raw scan rep {rep + 1}: {n:,} events, {n / s:,.0f} ev/s")
        gc.collect()
        n, s = await scan_log(store, decode=True)
        decoded.append(n / s)
        log(f"  scan + decode: {n / s:,.0f} ev/s")
        phase("scan")

        children: list[dict[str, Any]] = []
        repetitions = (
            settings.pg_rebuild_repetitions
            if store.backend == "postgresql"
            else settings.rebuild_repetitions
        )
        parallel_children: list[dict[str, Any]] = []
        parallel_verified = []
        for rep in range(repetitions):
            # one-pass and parallel runs alternate, so drift in the machine's load hits both
            for jobs, runs in ((1, children), (PARALLEL_JOBS, parallel_children)):
                log(f"  rebuild rep {rep + 1}, jobs={jobs} (child process)")
                child = await run_rebuild_child(rebuild_url, jobs)
                runs.append(child)
                log(
                    f"    {workload.events:,} events in {child['seconds']:.1f} s: "
                    f"{workload.events / child['seconds']:,.0f} ev/s; peak RSS "
                    f"{child['memory']['vmhwm_kib_after'] / 1024:,.0f} MiB (before: "
                    f"{child['memory']['vmhwm_kib_before'] / 1024:,.0f} MiB)"
                )
                if jobs > 1:
                    parallel_verified.append(await verify_rebuilt(store, workload))
        phase("rebuild")
        verified = await verify_rebuilt(store, workload)
        rebuild = rebuild_summary(children, workload.events)
        rebuild["verified"] = verified
        rebuild["children_code_fingerprints"] = [
            c["code_fingerprint"] for c in [*children, *parallel_children]
        ]
        parallel = rebuild_summary(parallel_children, workload.events)
        parallel["jobs"] = PARALLEL_JOBS
        parallel["how"] = (
            f"ProjectionEngine(store, ALL_PROJECTIONS).rebuild(jobs={PARALLEL_JOBS}) in a fresh "
            "child process, which starts the worker processes (spawned: each imports Python, "
            "the projections and the driver, inside the measured time); the workers split the "
            "deployments and replay them below the log's bound into the shared shadow tables, "
            "then the child applies the tail and swaps. events_per_s = the log's events / the "
            "rebuild's wall time. Runs alternate with the one-pass runs (results.rebuild). "
            "memory: as for the one-pass rebuild for the child itself; workers_peak_rss_mib is "
            "ru_maxrss of the child's waited-for children (the largest worker; on Linux it "
            "includes the child's own high-water mark at the fork, so it is an upper bound)"
        )
        parallel["memory"]["workers_peak_rss_mib"] = summarize(
            [c["memory"]["workers_ru_maxrss_kib"] / 1024 for c in parallel_children], 1
        )
        parallel["verified_after_each_run"] = parallel_verified
        result["workload"] = {
            "events": workload.events,
            "deployments": workload.deployments,
            "cycles_per_deployment": workload.cycles_per_deployment,
            "events_per_cycle": EVENTS_PER_CYCLE,
            "events_per_type": workload.events_per_type,
            "append_calls": workload.append_calls,
            "events_per_append": f"{settings.chunk_cycles} (orders stream: "
            f"{3 * settings.chunk_cycles})",
            "generation_seconds": round(workload.seconds, 1),
            "generation_events_per_s": round(workload.events / workload.seconds),
            **sizes,
        }
        result["log_scan"] = {
            "read_for_replay_events_per_s": summarize(scans),
            "read_for_replay_and_decode_events_per_s": summarize(decoded),
            "how": f"store.read_for_replay(after, {SCAN_PAGE}) (the rebuild's own read: lean "
            "ReplayedEvents) from position 0 to the end, no type filter, one page at a time; "
            "'and_decode' also runs projections.events.decode_event(..., trusted=True) on "
            "every event, as a rebuild does once per event. No rebuild reads faster than the "
            "first; as the engine reads the next batch while it decodes this one, on "
            "PostgreSQL a rebuild may pass the second",
        }
        result["rebuild"] = rebuild
        result["rebuild_parallel"] = parallel
        result["rebuild_vs_scan"] = round(
            rebuild["events_per_s"]["median"]
            / result["log_scan"]["read_for_replay_events_per_s"]["median"],
            3,
        )
        result["durability"] = {
            "parent_generation_fills_reads": await observe_durability(store),
            "rebuild": children[-1]["durability"],
        }
        result["quant_stats"] = await quant_stats_reads(store, reader, bulk, settings)
        phase("quant_stats")
        result["nav_series"] = await nav_reads(store, reader, writer, settings)
        phase("nav_series")
    result["breakdown"] = await breakdown(breakdown_url, settings)
    phase("breakdown")
    result["phase_seconds"] = phases
    return result


async def bench_sqlite(settings: Settings) -> dict[str, Any]:
    log("SQLite")
    with tempfile.TemporaryDirectory(prefix="chronicle-proj-bench-") as tmp:
        path = os.path.join(tmp, "chronicle.db")
        result = await bench_backend(
            # generation is not what is measured: skip its per-append fsync
            f"sqlite:///{path}?synchronous=normal",
            f"sqlite:///{path}",  # the default: synchronous=FULL
            f"sqlite:///{os.path.join(tmp, 'breakdown.db')}",
            settings,
            BulkLoader("sqlite", None, None),
        )
        result["database_bytes"] = _files_bytes(tmp, "chronicle")
    result["setup"] = {
        "store": "eventstore.connect('sqlite:///<tmp>/chronicle.db'), WAL. The rebuild child "
        "uses the default synchronous=FULL (a commit per 5000-event batch). The parent's "
        "connection (generation, the quant/NAV fills, every read) uses ?synchronous=normal: "
        "generation and fills are not measured, and synchronous does not affect reads",
        "breakdown_store": "a second file in the same temporary directory",
    }
    return result


def _files_bytes(directory: str, prefix: str) -> int:
    return sum(
        os.path.getsize(os.path.join(directory, f))
        for f in os.listdir(directory)
        if f.startswith(prefix)
    )


async def bench_postgres(settings: Settings, dsn: str) -> dict[str, Any]:
    log("PostgreSQL")
    run = uuid.uuid4().hex[:10]
    schema, breakdown_schema = f"bench_proj_{run}", f"bench_proj_{run}_bd"
    async with pg_schemas(dsn, schema, breakdown_schema):
        server = await pg_server_settings(dsn)
        url = with_params(dsn, schema=schema)
        result = await bench_backend(
            url,
            url,
            with_params(dsn, schema=breakdown_schema),
            settings,
            BulkLoader("postgresql", dsn, schema),
        )
        conn = await asyncpg.connect(dsn)
        try:
            result["database_bytes"] = int(
                await conn.fetchval(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relkind = 'r'",
                    schema,
                )
            )
        finally:
            await conn.close()
    result["durability"]["server"] = server
    result["setup"] = {
        "store": f"eventstore.connect('{redact(dsn)}?schema=bench_proj_<run>'), default pool "
        "(1..20); the same URL for generation, the rebuild child and the reads",
        "breakdown_store": "schema bench_proj_<run>_bd",
        "schemas": "created for the run and dropped afterwards, even on failure",
    }
    return result


async def pg_server_settings(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            [
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "shared_buffers",
                "work_mem",
                "max_wal_size",
                "jit",
            ],
        )
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    out: dict[str, Any] = {row["name"]: row["setting"] for row in rows}
    out["server_version"] = version
    return out


# -- aims ----------------------------------------------------------------------------------


class Aim(NamedTuple):
    id: str
    backend: str
    requirement: str
    threshold: float
    comparison: str  # ">=" or "<="
    value: Callable[[dict[str, Any]], float]


MEMORY_BOUND_MIB = 256.0


def aims() -> list[Aim]:
    def rate(r: dict[str, Any]) -> float:
        return float(r["rebuild"]["events_per_s"]["median"])

    def parallel_rate(r: dict[str, Any]) -> float:
        return float(r["rebuild_parallel"]["events_per_s"]["median"])

    def memory(r: dict[str, Any]) -> float:
        return float(r["rebuild"]["memory"]["peak_growth_mib"]["max"])

    def parallel_memory(r: dict[str, Any]) -> float:
        mem = r["rebuild_parallel"]["memory"]
        return float(max(mem["peak_growth_mib"]["max"], mem["workers_peak_rss_mib"]["max"]))

    def flat(r: dict[str, Any]) -> float:
        return float(r["quant_stats"]["ratio_p50_largest_to_smallest"])

    out = []
    for backend, floor in (("sqlite", 100_000), ("postgresql", 60_000)):
        out.append(
            Aim(
                f"{backend}_rebuild_rate",
                backend,
                f"full rebuild of all nine read models >= {floor // 1000}k log events/s "
                "(median), one process",
                floor,
                ">=",
                rate,
            )
        )
        out.append(
            Aim(
                f"{backend}_parallel_rebuild_rate",
                backend,
                f"full rebuild of all nine read models >= {floor // 1000}k log events/s "
                f"(median), rebuild(jobs={PARALLEL_JOBS}): one worker process per core",
                floor,
                ">=",
                parallel_rate,
            )
        )
        out.append(
            Aim(
                f"{backend}_parallel_rebuild_memory_bounded",
                backend,
                f"parallel rebuild: the rebuilding process's peak RSS growth and each "
                f"worker's peak RSS <= {MEMORY_BOUND_MIB:.0f} MiB (worst repetition)",
                MEMORY_BOUND_MIB,
                "<=",
                parallel_memory,
            )
        )
    for backend in ("sqlite", "postgresql"):
        out.append(
            Aim(
                f"{backend}_rebuild_memory_bounded",
                backend,
                f"peak RSS growth of the rebuilding process <= {MEMORY_BOUND_MIB:.0f} MiB "
                "(worst repetition), whatever the log's size: batches, never the whole log",
                MEMORY_BOUND_MIB,
                "<=",
                memory,
            )
        )
        out.append(
            Aim(
                f"{backend}_quant_stats_flat",
                backend,
                "quant_stats p50 at the largest ledger (1M entries) <= 2x its p50 at 1k",
                2.0,
                "<=",
                flat,
            )
        )
    return out


def evaluate_aims(results: dict[str, Any]) -> list[dict[str, Any]]:
    def passes(aim: Aim, value: float) -> bool:
        return value >= aim.threshold if aim.comparison == ">=" else value <= aim.threshold

    return evaluate_threshold_aims(aims(), results, passes)


# -- entry point --------------------------------------------------------------------------


def versions() -> dict[str, str]:
    return common.versions("chronicle-store", "asyncpg", "aiosqlite", "msgspec")


def code_fingerprint() -> str:
    """SHA-256 over eventstore/ and projections/ sources: the code a process imports."""
    digest = hashlib.sha256()
    for package in ("eventstore", "projections"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit, and whether eventstore/ or projections/ differed."""
    return common.source_state("eventstore", "projections")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        **machine_basics(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as f:
            total = next(line for line in f if line.startswith("MemTotal"))
        info["memory_total_mib"] = int(total.split()[1]) // 1024
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            model = next(line for line in f if line.startswith("model name"))
        info["cpu_model"] = model.split(":", 1)[1].strip()
    info["note"] = "shared and noisy: compare figures measured in one run, not across runs"
    return info


async def run(
    backends: Sequence[str], settings: Settings, dsn: str, mode: str, command: str = ""
) -> dict[str, Any]:
    source = source_state()
    source["code_fingerprint_at_start"] = code_fingerprint()
    info = machine()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if "sqlite" in backends:
        results["sqlite"] = await bench_sqlite(settings)
    if "postgresql" in backends:
        results["postgresql"] = await bench_postgres(settings, dsn)
    evaluated = evaluate_aims(results)
    source["code_fingerprint_at_end"] = code_fingerprint()
    source["code_fingerprint_rebuild_children"] = sorted(
        {fp for r in results.values() for fp in r["rebuild"].pop("children_code_fingerprints")}
    )
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    durability = {name: result.pop("durability") for name, result in results.items()}
    setup = {name: result.pop("setup") for name, result in results.items()}
    return {
        "warnings": run_warnings(results, source),
        "benchmark": "projections",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": info,
        "versions": versions(),
        "source": source,
        "settings": {
            **asdict(settings),
            "rebuild_batch_size": REBUILD_BATCH,
            "scan_page": SCAN_PAGE,
            "statistic": f"rates: median of {settings.rebuild_repetitions} rebuilds on SQLite "
            f"and {settings.pg_rebuild_repetitions} on PostgreSQL, {settings.scan_repetitions} "
            "log scans (min, max and runs kept); latencies: "
            "nearest-rank p50/p99 of sequential reads after 1-3 warm-up reads",
            "workload": "per cycle of each deployment: StateSaved, LedgerEntryRecorded (tx "
            "hash, cycle id, price inputs, pre/post state with wallet balances, Decimal "
            "amounts and gas_usd), PositionEventRecorded (LP lifecycle, Decimal amounts), "
            "PortfolioSnapshotRecorded (positions envelope with 3 position dicts, token "
            "prices, wallet balances), PortfolioMetricsSaved, ClobOrderSaved and two "
            "ClobOrderStatusUpdated (partial fill, then matched with 2 fills); 5 minutes "
            "between cycles; generated through ProjectionEngine(store, []).append",
            "big_deployments": "filled after the rebuild, never part of it. NAV: snapshots "
            "appended through ProjectionEngine(store, []).append, their rows the nav "
            "projection's own apply() statements run grouped by SQL text per 1000 events "
            "(replay_grouped), count checked. Quant: read-model rows only, bulk-written from "
            "the ledger projection's own row helpers, checked against engine.append on a 1k "
            "twin (results.<backend>.quant_stats.twin_check)",
        },
        "durability": durability,
        "setup": setup,
        "results": results,
        "aims": evaluated,
        "aims_all_passed": all(a["passed"] for a in evaluated if a["passed"] is not None),
    }


def run_warnings(results: dict[str, Any], source: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, result in results.items():
        if not result["rebuild"]["verified"]["ok"]:
            out.append(f"{name}: rebuilt row counts differ from the workload (see verified)")
        if not all(v["ok"] for v in result["rebuild_parallel"]["verified_after_each_run"]):
            out.append(f"{name}: rows after a parallel rebuild differ from the workload")
        if not all(step["stats_ok"] for step in result["quant_stats"]["steps"]):
            out.append(f"{name}: quant stats totals differ from the entries written")
        nav = result["nav_series"]
        if nav["snapshots_counted"] != nav["snapshots"]:
            out.append(f"{name}: NAV snapshot count differs from the snapshots written")
    seen = {
        source["code_fingerprint_at_start"],
        source["code_fingerprint_at_end"],
        *source["code_fingerprint_rebuild_children"],
    }
    if len(seen) > 1:
        out.append(
            "eventstore/ or projections/ changed on disk during the run: the rebuild children "
            "may have measured other code than the parent (see source.code_fingerprint_*)"
        )
    if source.get("uncommitted_changes"):
        out.append(
            "eventstore/ or projections/ had uncommitted changes when this ran (see source); "
            "the figures are for the working tree, not for source.git_commit"
        )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.projections_bench",
        description="Chronicle's read models: full rebuild, quant-stats and NAV reads; "
        "prints JSON.",
    )
    add_common_args(parser, quick_help="a ~1 min smoke run")
    parser.add_argument(
        "--events", type=int, help="events in the rebuilt log (default 1000000; --quick 30000)"
    )
    parser.add_argument("--rebuild-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--rebuild-jobs", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rebuild_child:
        print(json.dumps(asyncio.run(rebuild_child(args.rebuild_child, args.rebuild_jobs))))
        return 0
    backends = selected_backends(args.backend)
    settings, mode = sized(args, FULL, QUICK, SMOKE)
    if args.events is not None:
        if args.events < EVENTS_PER_CYCLE * settings.deployments:
            raise SystemExit(f"--events must be >= {EVENTS_PER_CYCLE * settings.deployments}")
        settings = Settings(**{**asdict(settings), "events": args.events})
    command = command_line("benchmarks.projections_bench", argv)
    report = asyncio.run(run(backends, settings, pg_dsn(args.pg_dsn), mode, command))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Chronicle's ``StateManager`` against the reference's (almanak 2.29.2), same work, same run.

    python -m benchmarks.statemanager_bench [--backend sqlite|postgresql|all] [--quick]
        [--out FILE] [--pg-dsn DSN] [--peer-python PATH] [--no-peer] [--no-profile]

For each backend it measures, through each library's public ``StateManager`` API:

1. ``save_state`` with CAS per second: a load-modify-save loop (``load_state`` from HOT,
   a new state body, ``save_state(state, expected_version=state.version)``);
2. ``save_portfolio_snapshot`` and ``save_ledger_entry`` per second (realistic records:
   an LP position, token prices, wallet balances; a swap with price inputs and pre/post
   state, as ``statemanager/demo.py`` writes them);
3. ``load_state`` latency (p50, p99) from HOT (repeated loads of a cached state) and from
   WARM (``invalidate_hot_cache(dep)`` before each load, outside the timed call);
4. ``get_ledger_quant_stats`` latency at 1k and 20k ledger entries in one deployment, and
   ``get_nav_series`` latency at 20k snapshots in one deployment (filled in batches, not
   timed: Chronicle through ``warm_backend.engine.append``, the reference with one
   multi-row INSERT transaction whose rows are encoded exactly as its writer encodes them);

plus the raw drivers' single-commit rates in the same run (``sqlite3`` single-row
autocommitted INSERTs at WAL + synchronous=FULL; ``asyncpg`` from one connection), which
bound what any durable one-commit-per-write API can reach on this machine.

The peer, almanak 2.29.2 (which needs Python >= 3.12), runs in its own virtualenv
(default ``/tmp/almanak-venv``; created with ``pip install almanak==2.29.2`` when missing)
as a child process that this module writes to a temporary directory and drives over
stdin/stdout with one JSON line per measurement; it times itself, so the pipe is never
inside a timed region. The two libraries alternate within each repetition (and who goes
first) so that a noisy neighbour hurts both alike. Every figure is the median of the
repetitions, with min, max and every run kept. Aims are judged against the peer measured
in this run, or, when it cannot run, against the figures the project quotes (labelled as
such). For every aim Chronicle misses, the path is profiled (cProfile) and the hottest
functions go into the report. One JSON document goes to stdout (and to ``--out``);
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import inspect
import json
import logging
import math
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from eventstore import ExpectedVersion
from projections.events import (
    LedgerEntry,
    LedgerEntryRecorded,
    PortfolioSnapshotRecorded,
    ValueConfidence,
)
from statemanager import StateData, StateManager, StateManagerConfig
from statemanager.records import PortfolioSnapshot
from statemanager.warm import LEDGER_STREAM, SNAPSHOT_STREAM

from . import _common as common
from ._common import (
    add_common_args,
    aim_entry,
    command_line,
    emit,
    judge,
    machine_basics,
    pg_dsn,
    selected_backends,
    sized,
    sqlite_pragmas,
    summarize,
    with_params,
)

PEER_VERSION = "2.29.2"
PEER_PACKAGE = f"almanak=={PEER_VERSION}"
DEFAULT_PEER_VENV = "/tmp/almanak-venv"
PEER_PYTHON_ENV = "CHRONICLE_BENCH_ALMANAK_PYTHON"
FILL_BATCH = 500

# What the project quotes for the reference (almanak 2.29.2 measured earlier on this
# machine). Used for the aims only when the peer cannot run here, and always shown beside
# the peer measured in this run (their ratio tells how this run's machine compares).
QUOTED_REFERENCE: dict[str, Any] = {
    "source": "quoted by the project (almanak 2.29.2 measured earlier on this machine, SQLite "
    "WAL synchronous=FULL); NOT measured in this run",
    "sqlite": {
        "save_state_cas_per_s": 2600.0,
        "save_portfolio_snapshot_per_s": 2600.0,
        "save_ledger_entry_per_s": 2600.0,
        "load_state_hot_p50_us": 27.0,
        "load_state_warm_p50_us": 172.0,
        "ledger_quant_stats_p50_ms": 28.0,
        "nav_series_p50_ms": 73.0,
    },
    "postgresql": {
        "save_state_cas_per_s": 930.0,
        "load_state_warm_p50_us": 412.0,
        "ledger_quant_stats_p50_ms": 18.0,
        "nav_series_p50_ms": 99.0,
    },
}


@dataclass(frozen=True)
class Settings:
    write_seconds: float
    """How long one repetition of a write-rate loop runs."""
    hot_loads: int
    """Timed HOT loads per repetition."""
    warm_loads: int
    """Timed WARM loads per repetition."""
    quant_reads: int
    nav_reads: int
    warmup_seconds: float
    repetitions: int = 5
    """Repetitions of each read measurement (the libraries alternate within each)."""
    write_repetitions: int = 7
    """Repetitions of each write-rate loop: more and shorter, because a busy neighbour's disk
    traffic comes in bursts of seconds that one long run cannot average out."""
    diagnostic_repetitions: int = 3
    write_slices: int = 6
    """Turns per side within one write repetition (write_seconds / write_slices each)."""
    read_slices: int = 4
    """Turns per side within one quant-stats or NAV repetition."""
    ledger_rows: int = 20_000
    small_ledger_rows: int = 1_000
    snapshot_rows: int = 20_000
    profile_seconds: float = 1.5


FULL = Settings(
    write_seconds=1.5,
    hot_loads=20_000,
    warm_loads=2_000,
    quant_reads=40,
    nav_reads=12,
    warmup_seconds=0.5,
    profile_seconds=1.0,
)
QUICK = Settings(
    write_seconds=0.4,
    hot_loads=2_000,
    warm_loads=200,
    quant_reads=10,
    nav_reads=4,
    warmup_seconds=0.1,
    repetitions=3,
    write_repetitions=3,
    write_slices=2,
    read_slices=2,
    ledger_rows=5_000,
    small_ledger_rows=500,
    snapshot_rows=5_000,
    profile_seconds=0.4,
)
SMOKE = Settings(
    write_seconds=0.05,
    hot_loads=50,
    warm_loads=20,
    quant_reads=2,
    nav_reads=2,
    warmup_seconds=0.01,
    repetitions=1,
    write_repetitions=1,
    diagnostic_repetitions=1,
    write_slices=1,
    read_slices=1,
    ledger_rows=200,
    small_ledger_rows=50,
    snapshot_rows=200,
    profile_seconds=0.05,
)
"""A smoke run: shorter loops and 5,000-row reads (the aims' 20,000 rows need the full run)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the workload: shared, verbatim, with the peer's child process ---------------------------
#
# These functions use the standard library only. Their source is copied into the peer's
# script (``inspect.getsource``), so both libraries are given the very same values.

CHAIN = "arbitrum"
POOL = "0xc6962004f452be9203591991d15f6b388e09e8d0"
WALLET = "0x4b1a99467a284cc690e3237bc69105956816f762"
USDC = "0xaf88d065e77c8cc2239327c5edb3a432268e5831"
WETH = "0x82af49447d8a07e3bd95bd0d56f35241523fbab1"
T0_ISO = "2026-11-01T00:00:00+00:00"


def _price(i: int) -> Decimal:
    return Decimal("3012.50") + Decimal((i * 7919) % 41 - 20) / Decimal(4)


def state_body(cycle: int) -> dict[str, Any]:
    """A runner's strategy state (JSON-native, ~400 bytes), as the demo's LP runner keeps it."""
    return {
        "cycle": cycle,
        "phase": "MONITORING",
        "open_position": "lp-5642001",
        "cash_usd": str(Decimal("7500.00") - Decimal(cycle % 400) / Decimal(8)),
        "last_price": str(_price(cycle)),
        "position": {
            "token_id": 5642001,
            "pool": POOL,
            "tick_lower": -200340,
            "tick_upper": -199740,
            "liquidity": "1843920384019",
            "opened_cycle": 1,
        },
        "last_rebalance_cycle": cycle - cycle % 25,
        "pending_tx": None,
        "consecutive_errors": 0,
    }


def ledger_fields(deployment_id: str, i: int) -> dict[str, Any]:
    """A swap ledger entry with price inputs and pre/post state (the demo's shape)."""
    t0 = datetime.fromisoformat(T0_ISO)
    price = _price(i)
    gas = Decimal("0.0131") + Decimal(i % 5) / Decimal(1000)
    cash = Decimal("10000.00") - Decimal(i % 400) * Decimal("3.125")
    amount_out = (Decimal("25.00") / price).quantize(Decimal("1E-18"))
    digest = hashlib.sha256(f"{deployment_id}:{i}".encode()).hexdigest()
    return {
        "entry_id": "-".join(
            (digest[:8], digest[8:12], "4" + digest[13:16], "a" + digest[17:20], digest[20:32])
        ),
        "deployment_id": deployment_id,
        "cycle_id": f"cycle-{i:07d}",
        "execution_mode": "paper",
        "timestamp": t0 + timedelta(minutes=5 * i),
        "intent_type": "SWAP",
        "token_in": "USDC",
        "amount_in": Decimal("25.00"),
        "token_out": "WETH",
        "amount_out": amount_out,
        "effective_price": price,
        "slippage_bps": Decimal("3.2"),
        "gas_used": 142_311,
        "gas_usd": gas,
        "tx_hash": "0x" + hashlib.sha256(f"tx:{deployment_id}:{i}".encode()).hexdigest(),
        "chain": CHAIN,
        "protocol": "uniswap_v3",
        "price_inputs": {"WETH": {"price_usd": str(price)}, "USDC": {"price_usd": "1"}},
        "pre_state": {"wallet_balances": {"USDC": str(cash), "WETH": "0.5"}},
        "post_state": {
            "wallet_balances": {"USDC": str(cash - 25), "WETH": str(Decimal("0.5") + amount_out)}
        },
    }


def snapshot_fields(deployment_id: str, i: int) -> dict[str, Any]:
    """A NAV point: one LP position, two token prices, two wallet balances."""
    t0 = datetime.fromisoformat(T0_ISO)
    price = _price(i)
    cash = Decimal("7500.00") + Decimal(i % 97) / Decimal(4)
    lp_value = Decimal("2500.00") + Decimal((i * 31) % 200 + 1) / Decimal(8)
    weth_value = (Decimal("0.5") * price).quantize(Decimal("0.01"))
    position = {
        "position_type": "LP",
        "protocol": "uniswap_v3",
        "chain": CHAIN,
        "value_usd": str(lp_value),
        "label": "WETH/USDC LP",
        "tokens": ["WETH", "USDC"],
        "details": {
            "token_id": "5642001",
            "pool_address": POOL,
            "tick_lower": -200340,
            "tick_upper": -199740,
            "liquidity": "1843920384019",
        },
        "cost_basis_usd": "2500.00",
        "unrealized_pnl_usd": str(lp_value - Decimal("2500.00")),
        "entry_timestamp": T0_ISO,
    }
    return {
        "deployment_id": deployment_id,
        "timestamp": t0 + timedelta(minutes=5 * i),
        "iteration_number": i,
        "cycle_id": f"cycle-{i:07d}",
        "execution_mode": "paper",
        "chain": CHAIN,
        "total_value_usd": cash + lp_value + weth_value,
        "available_cash_usd": cash,
        "deployed_capital_usd": Decimal("2500.00"),
        "wallet_total_value_usd": cash + weth_value,
        "value_confidence": "HIGH",
        "positions": [position],
        "token_prices": {
            f"{CHAIN}:WETH": {"price_usd": str(price), "symbol": "WETH", "decimals": 18},
            f"{CHAIN}:USDC": {"price_usd": "1", "symbol": "USDC", "decimals": 6},
        },
        "wallet_balances": [
            {
                "symbol": "USDC",
                "balance": str(cash),
                "value_usd": str(cash),
                "address": USDC,
                "chain": CHAIN,
                "wallet_address": WALLET,
                "price_usd": "1",
            },
            {
                "symbol": "WETH",
                "balance": "0.5",
                "value_usd": str(weth_value),
                "address": WETH,
                "chain": CHAIN,
                "wallet_address": WALLET,
                "price_usd": str(price),
            },
        ],
    }


def percentiles(samples: list[int]) -> dict[str, float]:
    """Nearest-rank p50 and p99 (and the mean) of per-call timings in nanoseconds."""
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return float(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))])

    return {"n": n, "p50": rank(0.50), "p99": rank(0.99), "mean": sum(ordered) / n}


_SHARED = (_price, state_body, ledger_fields, snapshot_fields, percentiles)
_SHARED_CONSTANTS = ("CHAIN", "POOL", "WALLET", "USDC", "WETH", "T0_ISO")


# -- Chronicle's side ----------------------------------------------------------------------


def chronicle_ledger_entry(deployment_id: str, i: int) -> LedgerEntry:
    return LedgerEntry(**ledger_fields(deployment_id, i))


def chronicle_snapshot(deployment_id: str, i: int) -> PortfolioSnapshot:
    f = snapshot_fields(deployment_id, i)
    return PortfolioSnapshot(
        deployment_id=deployment_id,
        timestamp=f["timestamp"],
        total_value_usd=f["total_value_usd"],
        available_cash_usd=f["available_cash_usd"],
        deployed_capital_usd=f["deployed_capital_usd"],
        wallet_total_value_usd=f["wallet_total_value_usd"],
        value_confidence=ValueConfidence.HIGH,
        # the reference's envelope, exactly as its to_positions_payload() writes it
        positions={
            "schema_version": 1,
            "positions": f["positions"],
            "metadata": {},
            "reconciliation": {},
        },
        token_prices=f["token_prices"],
        wallet_balances=f["wallet_balances"],
        chain=f["chain"],
        iteration_number=f["iteration_number"],
        cycle_id=f["cycle_id"],
        execution_mode=f["execution_mode"],
    )


def _snapshot_event(snapshot: PortfolioSnapshot, snapshot_id: int) -> PortfolioSnapshotRecorded:
    return PortfolioSnapshotRecorded(
        deployment_id=snapshot.deployment_id,
        snapshot_id=snapshot_id,
        cycle_id=snapshot.cycle_id,
        execution_mode=snapshot.execution_mode,
        timestamp=snapshot.timestamp,
        iteration_number=snapshot.iteration_number,
        total_value_usd=snapshot.total_value_usd,
        available_cash_usd=snapshot.available_cash_usd,
        deployed_capital_usd=snapshot.deployed_capital_usd,
        wallet_total_value_usd=snapshot.wallet_total_value_usd,
        value_confidence=snapshot.value_confidence,
        positions=snapshot.positions,
        token_prices=snapshot.token_prices,
        wallet_balances=snapshot.wallet_balances,
        chain=snapshot.chain,
        created_at=datetime.now(UTC),
    )


class Side(Protocol):
    """One library's ``StateManager`` behind the operations the benchmark times."""

    name: str

    async def save_state(self, dep: str, seconds: float) -> dict[str, Any]: ...
    async def save_snapshots(self, dep: str, start: int, seconds: float) -> dict[str, Any]: ...
    async def save_ledger(self, dep: str, start: int, seconds: float) -> dict[str, Any]: ...
    async def hot_load(self, dep: str, n: int) -> dict[str, Any]: ...
    async def warm_load(self, dep: str, n: int) -> dict[str, Any]: ...
    async def fill_ledger(self, dep: str, start: int, count: int) -> dict[str, Any]: ...
    async def fill_snapshots(self, dep: str, start: int, count: int) -> dict[str, Any]: ...
    async def quant_stats(self, dep: str, n: int) -> dict[str, Any]: ...
    async def nav_series(self, dep: str, n: int) -> dict[str, Any]: ...


class ChronicleSide:
    """Chronicle's ``StateManager`` in this process (default config, HOT on)."""

    name = "chronicle"

    def __init__(self, url: str) -> None:
        self.url = url
        self.manager = StateManager(
            StateManagerConfig(database_url=url, load_state_on_startup=False)
        )

    async def open(self) -> None:
        await self.manager.initialize()
        if self.manager.warm_backend is None:
            raise RuntimeError(f"Chronicle's WARM tier did not open on {self.url}")

    async def close(self) -> None:
        await self.manager.close()

    async def save_state(self, dep: str, seconds: float) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        try:
            state = await m.load_state(dep)
        except Exception:
            state = await m.save_state(StateData(deployment_id=dep, version=1, state=state_body(0)))
        cycle = state.version
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            state = await m.load_state(dep)
            cycle += 1
            state.state = state_body(cycle)
            await m.save_state(state, expected_version=state.version)
            n += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
        return {"ops": n, "seconds": elapsed, "version": (await m.load_state(dep)).version}

    async def save_snapshots(self, dep: str, start: int, seconds: float) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        records = [chronicle_snapshot(dep, start + k) for k in range(512)]
        n = 0
        building = 0.0  # records built inside the loop: taken out of the timing
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            if n == len(records):
                b = time.perf_counter()
                records.extend(chronicle_snapshot(dep, start + n + k) for k in range(512))
                b = time.perf_counter() - b
                building += b
                deadline += b
            await m.save_portfolio_snapshot(records[n])
            n += 1
            if time.perf_counter() >= deadline:
                break
        return {"ops": n, "seconds": time.perf_counter() - t0 - building, "next": start + n}

    async def save_ledger(self, dep: str, start: int, seconds: float) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        records = [chronicle_ledger_entry(dep, start + k) for k in range(512)]
        n = 0
        building = 0.0  # records built inside the loop: taken out of the timing
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            if n == len(records):
                b = time.perf_counter()
                records.extend(chronicle_ledger_entry(dep, start + n + k) for k in range(512))
                b = time.perf_counter() - b
                building += b
                deadline += b
            await m.save_ledger_entry(records[n])
            n += 1
            if time.perf_counter() >= deadline:
                break
        return {"ops": n, "seconds": time.perf_counter() - t0 - building, "next": start + n}

    async def hot_load(self, dep: str, n: int) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        await m.load_state(dep)  # cached now
        samples = [0] * n
        clock = time.perf_counter_ns
        for k in range(n):
            t = clock()
            await m.load_state(dep)
            samples[k] = clock() - t
        return percentiles(samples)

    async def warm_load(self, dep: str, n: int) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        samples = [0] * n
        clock = time.perf_counter_ns
        for k in range(n):
            m.invalidate_hot_cache(dep)
            t = clock()
            loaded = await m.load_state(dep)
            samples[k] = clock() - t
        assert loaded.loaded_from is not None and loaded.loaded_from.name == "WARM"
        return percentiles(samples)

    async def fill_ledger(self, dep: str, start: int, count: int) -> dict[str, Any]:
        engine = self._engine()
        t0 = time.perf_counter()
        for base in range(start, start + count, FILL_BATCH):
            events = [
                LedgerEntryRecorded(entry=chronicle_ledger_entry(dep, i))
                for i in range(base, min(base + FILL_BATCH, start + count))
            ]
            await engine.append(dep, LEDGER_STREAM, events, expected_version=ExpectedVersion.ANY)
        return {"rows": count, "seconds": time.perf_counter() - t0}

    async def fill_snapshots(self, dep: str, start: int, count: int) -> dict[str, Any]:
        engine = self._engine()
        t0 = time.perf_counter()
        for base in range(start, start + count, FILL_BATCH):
            events = [
                _snapshot_event(chronicle_snapshot(dep, i), i + 1)
                for i in range(base, min(base + FILL_BATCH, start + count))
            ]
            await engine.append(dep, SNAPSHOT_STREAM, events, expected_version=ExpectedVersion.ANY)
        return {"rows": count, "seconds": time.perf_counter() - t0}

    async def quant_stats(self, dep: str, n: int) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        stats = await m.get_ledger_quant_stats(dep)
        samples = [0] * n
        clock = time.perf_counter_ns
        for k in range(n):
            t = clock()
            stats = await m.get_ledger_quant_stats(dep)
            samples[k] = clock() - t
        out: dict[str, Any] = {**percentiles(samples), "samples": samples}
        out["check"] = {"total": stats.total, "gas_usd_sum": str(stats.gas_usd_sum)}
        return out

    async def nav_series(self, dep: str, n: int) -> dict[str, Any]:
        m = self.manager
        m.clear_metrics()
        rows, truncated = await m.get_nav_series(dep)
        samples = [0] * n
        clock = time.perf_counter_ns
        for k in range(n):
            t = clock()
            rows, truncated = await m.get_nav_series(dep)
            samples[k] = clock() - t
        out: dict[str, Any] = {**percentiles(samples), "samples": samples}
        out["check"] = {
            "rows": len(rows),
            "truncated": truncated,
            "first_total_value_usd": str(rows[0][1]) if rows else None,
            "last_total_value_usd": str(rows[-1][1]) if rows else None,
        }
        return out

    def _engine(self) -> Any:
        warm = self.manager.warm_backend
        assert warm is not None
        return warm.engine


# -- the reference's side: a child process in its own virtualenv --------------------------

PEER_MAIN = r'''
# The reference logs a warning for every HOT operation over 1 ms and WARM one over 10 ms;
# on a noisy machine printing those would tax it, so only errors are shown (Chronicle's
# side runs with the same logging level).
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

from almanak.framework.observability.ledger import LedgerEntry
from almanak.framework.portfolio.models import (
    PortfolioSnapshot,
    PositionValue,
    TokenBalance,
    ValueConfidence,
)
from almanak.framework.state import StateManager, StateManagerConfig
from almanak.framework.state.state_manager import (
    SQLiteConfigLight,
    StateData,
    StateNotFoundError,
    WarmBackendType,
)
from almanak.framework.teardown.models import PositionType

# Columns the reference's PostgresStore reads but the SDK's reference copy of the legacy
# DDL (almanak.gateway.database.POSTGRES_SCHEMA) lacks; types as in its SQLite schema
# (the PostgreSQL schema proper lives in a separate migrations repository).
PG_EXTRA_DDL = """
ALTER TABLE transaction_ledger ADD COLUMN IF NOT EXISTS extracted_data_json TEXT DEFAULT '';
ALTER TABLE transaction_ledger ADD COLUMN IF NOT EXISTS price_inputs_json TEXT DEFAULT '';
ALTER TABLE transaction_ledger ADD COLUMN IF NOT EXISTS pre_state_json TEXT DEFAULT '';
ALTER TABLE transaction_ledger ADD COLUMN IF NOT EXISTS post_state_json TEXT DEFAULT '';
ALTER TABLE portfolio_snapshots ADD COLUMN IF NOT EXISTS deployed_capital_usd TEXT DEFAULT '0';
ALTER TABLE portfolio_snapshots ADD COLUMN IF NOT EXISTS wallet_total_value_usd TEXT DEFAULT '0';
ALTER TABLE portfolio_snapshots ADD COLUMN IF NOT EXISTS token_prices_json JSONB DEFAULT '{}';
ALTER TABLE portfolio_snapshots ADD COLUMN IF NOT EXISTS wallet_balances_json JSONB DEFAULT '[]';
"""

LEDGER_COLUMNS = (
    "id, cycle_id, deployment_id, execution_mode, timestamp, intent_type, token_in, "
    "amount_in, token_out, amount_out, effective_price, slippage_bps, gas_used, gas_usd, "
    "tx_hash, chain, protocol, success, error, extracted_data_json, price_inputs_json, "
    "pre_state_json, post_state_json"
)
SNAPSHOT_COLUMNS = (
    "deployment_id, timestamp, iteration_number, total_value_usd, available_cash_usd, "
    "deployed_capital_usd, wallet_total_value_usd, value_confidence, positions_json, "
    "token_prices_json, wallet_balances_json, chain, created_at, cycle_id, execution_mode"
)


def peer_ledger_entry(deployment_id, i):
    f = ledger_fields(deployment_id, i)
    return LedgerEntry(
        id=f["entry_id"],
        cycle_id=f["cycle_id"],
        deployment_id=deployment_id,
        execution_mode=f["execution_mode"],
        timestamp=f["timestamp"],
        intent_type=f["intent_type"],
        token_in=f["token_in"],
        amount_in=str(f["amount_in"]),
        token_out=f["token_out"],
        amount_out=str(f["amount_out"]),
        effective_price=str(f["effective_price"]),
        slippage_bps=float(f["slippage_bps"]),
        gas_used=f["gas_used"],
        gas_usd=str(f["gas_usd"]),
        tx_hash=f["tx_hash"],
        chain=f["chain"],
        protocol=f["protocol"],
        price_inputs_json=json.dumps(f["price_inputs"]),
        pre_state_json=json.dumps(f["pre_state"]),
        post_state_json=json.dumps(f["post_state"]),
    )


def peer_snapshot(deployment_id, i):
    f = snapshot_fields(deployment_id, i)
    positions = [
        PositionValue(
            position_type=PositionType(p["position_type"]),
            protocol=p["protocol"],
            chain=p["chain"],
            value_usd=Decimal(p["value_usd"]),
            label=p["label"],
            tokens=list(p["tokens"]),
            details=dict(p["details"]),
            cost_basis_usd=Decimal(p["cost_basis_usd"]),
            unrealized_pnl_usd=Decimal(p["unrealized_pnl_usd"]),
            entry_timestamp=p["entry_timestamp"],
        )
        for p in f["positions"]
    ]
    balances = [
        TokenBalance(
            symbol=b["symbol"],
            balance=Decimal(b["balance"]),
            value_usd=Decimal(b["value_usd"]),
            address=b["address"],
            price_usd=Decimal(b["price_usd"]),
            chain=b["chain"],
            wallet_address=b["wallet_address"],
        )
        for b in f["wallet_balances"]
    ]
    return PortfolioSnapshot(
        timestamp=f["timestamp"],
        deployment_id=deployment_id,
        total_value_usd=f["total_value_usd"],
        available_cash_usd=f["available_cash_usd"],
        value_confidence=ValueConfidence.HIGH,
        positions=positions,
        wallet_balances=balances,
        token_prices=f["token_prices"],
        deployed_capital_usd=f["deployed_capital_usd"],
        wallet_total_value_usd=f["wallet_total_value_usd"],
        chain=f["chain"],
        iteration_number=f["iteration_number"],
        cycle_id=f["cycle_id"],
        execution_mode=f["execution_mode"],
    )


def ledger_row(e):
    # exactly the tuple SQLiteStore.save_ledger_entry binds (timestamp as isoformat)
    return (
        e.id, e.cycle_id, e.deployment_id, str(e.execution_mode or ""), e.timestamp,
        e.intent_type, e.token_in, e.amount_in, e.token_out, e.amount_out, e.effective_price,
        e.slippage_bps, e.gas_used, e.gas_usd, e.tx_hash, e.chain, e.protocol, e.success,
        e.error, e.extracted_data_json, e.price_inputs_json, e.pre_state_json,
        e.post_state_json,
    )


def snapshot_row(s, now):
    # exactly what SQLiteStore.save_portfolio_snapshot binds
    balances = [
        {
            "symbol": b.symbol,
            "balance": str(b.balance),
            "value_usd": str(b.value_usd),
            "address": b.address,
            "chain": b.chain,
            "wallet_address": b.wallet_address,
            "price_usd": str(b.price_usd) if b.price_usd is not None else None,
        }
        for b in s.wallet_balances
    ]
    return (
        s.deployment_id, s.timestamp, s.iteration_number, str(s.total_value_usd),
        str(s.available_cash_usd), str(s.deployed_capital_usd), str(s.wallet_total_value_usd),
        s.value_confidence.value, json.dumps(s.to_positions_payload()),
        json.dumps(s.token_prices) if s.token_prices else "{}",
        json.dumps(balances) if balances else "[]", s.chain, now, s.cycle_id or "",
        str(s.execution_mode or ""),
    )


class Peer:
    def __init__(self):
        self.m = None
        self.backend = None

    async def op_hello(self):
        import almanak
        from importlib import metadata

        versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
        for dist in ("almanak", "asyncpg"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "not installed"
        return {"versions": versions, "almanak_file": almanak.__file__}

    async def op_open(self, backend, path=None, dsn=None):
        self.backend = backend
        if backend == "sqlite":
            config = StateManagerConfig(
                warm_backend=WarmBackendType.SQLITE,
                sqlite_config=SQLiteConfigLight(db_path=path, wal_mode=True),
                load_state_on_startup=False,
            )
        else:
            import asyncpg
            from almanak.gateway.database import POSTGRES_SCHEMA

            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(POSTGRES_SCHEMA)
                await conn.execute(PG_EXTRA_DDL)
            finally:
                await conn.close()
            config = StateManagerConfig(
                warm_backend=WarmBackendType.POSTGRESQL,
                database_url=dsn,
                load_state_on_startup=False,
            )
        self.m = StateManager(config)
        await self.m.initialize()
        warm = self.m.warm_backend
        if warm is None:
            raise RuntimeError("the reference's WARM tier did not open")
        observed = {"warm_backend": type(warm).__module__ + "." + type(warm).__qualname__}
        if backend == "sqlite":
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            conn = warm._conn
            observed["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            value = conn.execute("PRAGMA synchronous").fetchone()[0]
            observed["synchronous"] = names.get(value, value)
            observed["wal_autocheckpoint"] = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        else:
            async with warm._pool.acquire() as conn:
                observed["synchronous_commit"] = await conn.fetchval("SHOW synchronous_commit")
                observed["search_path"] = await conn.fetchval("SHOW search_path")
            observed["pool"] = {"min": warm._pool_min, "max": warm._pool_max}
        return observed

    async def op_close(self):
        for m in [self.m, *getattr(self, "others", [])]:
            if m is not None:
                await m.close()
        return True

    async def op_open_nosync(self, path):
        """A second store, its connection switched to synchronous=NORMAL (diagnostic only)."""
        self.others = [*getattr(self, "others", []), self.m]
        config = StateManagerConfig(
            warm_backend=WarmBackendType.SQLITE,
            sqlite_config=SQLiteConfigLight(db_path=path, wal_mode=True),
            load_state_on_startup=False,
        )
        self.m = StateManager(config)
        await self.m.initialize()
        conn = self.m.warm_backend._conn
        with self.m.warm_backend._db_lock:
            conn.execute("PRAGMA synchronous = NORMAL")
        return {"synchronous": conn.execute("PRAGMA synchronous").fetchone()[0]}

    async def op_save_state(self, dep, seconds):
        m = self.m
        m.clear_metrics()
        try:
            state = await m.load_state(dep)
        except StateNotFoundError:
            state = await m.save_state(StateData(deployment_id=dep, version=1, state=state_body(0)))
        cycle = state.version
        gc.collect()
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            state = await m.load_state(dep)
            cycle += 1
            state.state = state_body(cycle)
            await m.save_state(state, expected_version=state.version)
            n += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
        return {"ops": n, "seconds": elapsed, "version": (await m.load_state(dep)).version}

    async def op_save_snapshots(self, dep, start, seconds):
        m = self.m
        m.clear_metrics()
        records = [peer_snapshot(dep, start + k) for k in range(512)]
        gc.collect()
        n = 0
        building = 0.0  # records built inside the loop: taken out of the timing
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            if n == len(records):
                b = time.perf_counter()
                records.extend(peer_snapshot(dep, start + n + k) for k in range(512))
                b = time.perf_counter() - b
                building += b
                deadline += b
            await m.save_portfolio_snapshot(records[n])
            n += 1
            if time.perf_counter() >= deadline:
                break
        return {"ops": n, "seconds": time.perf_counter() - t0 - building, "next": start + n}

    async def op_save_ledger(self, dep, start, seconds):
        m = self.m
        m.clear_metrics()
        records = [peer_ledger_entry(dep, start + k) for k in range(512)]
        gc.collect()
        n = 0
        building = 0.0  # records built inside the loop: taken out of the timing
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            if n == len(records):
                b = time.perf_counter()
                records.extend(peer_ledger_entry(dep, start + n + k) for k in range(512))
                b = time.perf_counter() - b
                building += b
                deadline += b
            await m.save_ledger_entry(records[n])
            n += 1
            if time.perf_counter() >= deadline:
                break
        return {"ops": n, "seconds": time.perf_counter() - t0 - building, "next": start + n}

    async def op_probe_writes(self, dep):
        """Whether this backend takes snapshot and ledger writes at all."""
        m = self.m
        out = {}
        for name, call in (
            ("save_portfolio_snapshot", lambda: m.save_portfolio_snapshot(peer_snapshot(dep, 0))),
            ("save_ledger_entry", lambda: m.save_ledger_entry(peer_ledger_entry(dep, 0))),
        ):
            try:
                await call()
                out[name] = {"supported": True}
            except Exception as exc:
                out[name] = {"supported": False, "error": f"{type(exc).__name__}: {exc}"}
        return out

    async def op_hot_load(self, dep, n):
        m = self.m
        m.clear_metrics()
        await m.load_state(dep)
        samples = [0] * n
        clock = time.perf_counter_ns
        gc.collect()
        for k in range(n):
            t = clock()
            await m.load_state(dep)
            samples[k] = clock() - t
        return percentiles(samples)

    async def op_warm_load(self, dep, n):
        m = self.m
        m.clear_metrics()
        samples = [0] * n
        clock = time.perf_counter_ns
        gc.collect()
        for k in range(n):
            m.invalidate_hot_cache(dep)
            t = clock()
            loaded = await m.load_state(dep)
            samples[k] = clock() - t
        assert loaded.loaded_from.name == "WARM", loaded.loaded_from
        return percentiles(samples)

    async def op_fill_ledger(self, dep, start, count):
        rows = [ledger_row(peer_ledger_entry(dep, i)) for i in range(start, start + count)]
        t0 = time.perf_counter()
        warm = self.m.warm_backend
        if self.backend == "sqlite":
            rows = [(r[0], r[1], r[2], r[3], r[4].isoformat(), *r[5:]) for r in rows]
            marks = ", ".join("?" * 23)
            with warm._db_lock:
                warm._conn.execute("BEGIN IMMEDIATE")
                warm._conn.executemany(
                    f"INSERT INTO transaction_ledger ({LEDGER_COLUMNS}) VALUES ({marks})", rows
                )
                warm._conn.execute("COMMIT")
        else:
            marks = ", ".join(f"${k}" for k in range(1, 24))
            async with warm._pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    f"INSERT INTO transaction_ledger ({LEDGER_COLUMNS}) VALUES ({marks})", rows
                )
        return {"rows": count, "seconds": time.perf_counter() - t0}

    async def op_fill_snapshots(self, dep, start, count):
        now = datetime.now(UTC)
        rows = [snapshot_row(peer_snapshot(dep, i), now) for i in range(start, start + count)]
        t0 = time.perf_counter()
        warm = self.m.warm_backend
        if self.backend == "sqlite":
            rows = [(r[0], r[1].isoformat(), *r[2:12], r[12].isoformat(), *r[13:]) for r in rows]
            marks = ", ".join("?" * 15)
            with warm._db_lock:
                warm._conn.execute("BEGIN IMMEDIATE")
                warm._conn.executemany(
                    f"INSERT INTO portfolio_snapshots ({SNAPSHOT_COLUMNS}) VALUES ({marks})", rows
                )
                warm._conn.execute("COMMIT")
        else:
            marks = ", ".join(
                f"${k}::jsonb" if k in (9, 10, 11) else f"${k}" for k in range(1, 16)
            )
            async with warm._pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    f"INSERT INTO portfolio_snapshots ({SNAPSHOT_COLUMNS}) VALUES ({marks})", rows
                )
        return {"rows": count, "seconds": time.perf_counter() - t0}

    async def op_quant_stats(self, dep, n):
        m = self.m
        m.clear_metrics()
        stats = await m.get_ledger_quant_stats(dep)
        samples = [0] * n
        clock = time.perf_counter_ns
        gc.collect()
        for k in range(n):
            t = clock()
            stats = await m.get_ledger_quant_stats(dep)
            samples[k] = clock() - t
        out = {**percentiles(samples), "samples": samples}
        out["check"] = {"total": stats.total, "gas_usd_sum": str(stats.gas_usd_sum)}
        return out

    async def op_nav_series(self, dep, n):
        m = self.m
        m.clear_metrics()
        rows, truncated = await m.get_nav_series(dep)
        samples = [0] * n
        clock = time.perf_counter_ns
        gc.collect()
        for k in range(n):
            t = clock()
            rows, truncated = await m.get_nav_series(dep)
            samples[k] = clock() - t
        out = {**percentiles(samples), "samples": samples}
        out["check"] = {
            "rows": len(rows),
            "truncated": truncated,
            "first_total_value_usd": str(rows[0][1]) if rows else None,
            "last_total_value_usd": str(rows[-1][1]) if rows else None,
        }
        return out


def main():
    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # nothing the library prints may corrupt the reply stream
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    peer = Peer()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            method = getattr(peer, "op_" + request["op"])
            result = loop.run_until_complete(method(**request.get("args", {})))
            reply = {"ok": True, "result": result}
        except BaseException as exc:
            reply = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        out.write(json.dumps(reply, default=str) + "\n")
        out.flush()
        if request["op"] == "close":
            break
    loop.close()


main()
'''

PEER_PRELUDE = '''"""The reference's side of benchmarks/statemanager_bench.py (generated)."""
import asyncio
import gc
import hashlib
import json
import logging
import math
import os
import platform
import sqlite3
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
'''


def peer_script() -> str:
    constants = "\n".join(f"{name} = {globals()[name]!r}" for name in _SHARED_CONSTANTS)
    shared = "\n\n".join(inspect.getsource(fn) for fn in _SHARED)
    return f"{PEER_PRELUDE}\n{constants}\n\n\n{shared}\n\n{PEER_MAIN}"


class PeerError(RuntimeError):
    pass


class PeerSide:
    """The reference's ``StateManager`` in a child process, one JSON line per operation."""

    name = "almanak"

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: str) -> None:
        self._proc = proc
        self._stderr_path = stderr_path

    @classmethod
    async def start(cls, python: str, workdir: str, label: str) -> PeerSide:
        script = os.path.join(workdir, "almanak_peer.py")
        stderr_path = os.path.join(workdir, f"almanak_peer_{label}.stderr")
        Path(script).write_text(peer_script())  # noqa: ASYNC240 (a few KB, once)
        with open(stderr_path, "wb") as err:  # noqa: ASYNC230
            proc = await asyncio.create_subprocess_exec(
                python,
                script,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=workdir,
                limit=1 << 24,
            )
        return cls(proc, stderr_path)

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self._stderr_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def call(self, op: str, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((json.dumps({"op": op, "args": args}) + "\n").encode())
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            code = await self._proc.wait()
            raise PeerError(f"the peer exited (code {code}) during {op!r}: {self.stderr_tail()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise PeerError(f"the peer failed {op!r}: {reply['error']}\n{reply.get('traceback')}")
        return reply["result"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._proc.returncode is None:
                await asyncio.wait_for(self.call("close"), 30)
        with contextlib.suppress(Exception):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def save_state(self, dep: str, seconds: float) -> dict[str, Any]:
        return dict(await self.call("save_state", dep=dep, seconds=seconds))

    async def save_snapshots(self, dep: str, start: int, seconds: float) -> dict[str, Any]:
        return dict(await self.call("save_snapshots", dep=dep, start=start, seconds=seconds))

    async def save_ledger(self, dep: str, start: int, seconds: float) -> dict[str, Any]:
        return dict(await self.call("save_ledger", dep=dep, start=start, seconds=seconds))

    async def hot_load(self, dep: str, n: int) -> dict[str, Any]:
        return dict(await self.call("hot_load", dep=dep, n=n))

    async def warm_load(self, dep: str, n: int) -> dict[str, Any]:
        return dict(await self.call("warm_load", dep=dep, n=n))

    async def fill_ledger(self, dep: str, start: int, count: int) -> dict[str, Any]:
        return dict(await self.call("fill_ledger", dep=dep, start=start, count=count))

    async def fill_snapshots(self, dep: str, start: int, count: int) -> dict[str, Any]:
        return dict(await self.call("fill_snapshots", dep=dep, start=start, count=count))

    async def quant_stats(self, dep: str, n: int) -> dict[str, Any]:
        return dict(await self.call("quant_stats", dep=dep, n=n))

    async def nav_series(self, dep: str, n: int) -> dict[str, Any]:
        return dict(await self.call("nav_series", dep=dep, n=n))


class PeerInstall(NamedTuple):
    python: str | None
    reason: str | None
    log: list[str]


def _find_python_312() -> str | None:
    """A Python >= 3.12 interpreter (almanak 2.x requires it); this one when it qualifies."""
    if sys.version_info >= (3, 12):
        return sys.executable
    candidates = [shutil.which(n) for n in ("python3.12", "python3.13", "python3.14")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv_root.is_dir():
        for version in sorted(pyenv_root.iterdir(), reverse=True):
            candidates.append(str(version / "bin" / "python"))
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.stdout.strip() == "True":
            return candidate
    return None


def ensure_peer(explicit: str | None) -> PeerInstall:
    """The peer's interpreter: given, or the venv's, or a new venv with almanak installed."""
    steps: list[str] = []
    python = explicit or os.environ.get(PEER_PYTHON_ENV)
    if python is None:
        python = os.path.join(DEFAULT_PEER_VENV, "bin", "python")
    if _peer_importable(python, steps):
        return PeerInstall(python, None, steps)
    if explicit or os.environ.get(PEER_PYTHON_ENV):
        return PeerInstall(None, f"{python} cannot import almanak {PEER_VERSION}", steps)
    base = _find_python_312()
    if base is None:
        return PeerInstall(
            None,
            f"almanak {PEER_VERSION} requires Python >= 3.12 (its PyPI metadata says so) and no "
            "such interpreter was found (python3.12/3.13 on PATH or under pyenv)",
            steps,
        )
    log(f"creating {DEFAULT_PEER_VENV} with {base} and installing {PEER_PACKAGE} (once)")
    for command in (
        [base, "-m", "venv", DEFAULT_PEER_VENV],
        [os.path.join(DEFAULT_PEER_VENV, "bin", "pip"), "install", "-q", PEER_PACKAGE],
    ):
        steps.append(" ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return PeerInstall(None, f"{' '.join(command)}: {exc}", steps)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
            return PeerInstall(None, f"{' '.join(command)} failed: {tail}", steps)
    if _peer_importable(python, steps):
        return PeerInstall(python, None, steps)
    return PeerInstall(None, f"installed {PEER_PACKAGE} but {python} cannot import it", steps)


def _peer_importable(python: str, steps: list[str]) -> bool:
    if not os.path.exists(python):
        steps.append(f"{python}: not found")
        return False
    try:
        done = subprocess.run(
            [
                python,
                "-c",
                "from importlib.metadata import version; import almanak.framework.state; "
                "print(version('almanak'))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        steps.append(f"{python}: {exc}")
        return False
    found = done.stdout.strip()
    steps.append(f"{python}: almanak {found or 'not importable'}")
    return done.returncode == 0 and found == PEER_VERSION


# -- raw drivers ---------------------------------------------------------------------------


def sqlite_raw_commits(
    path: str, payload: bytes, seconds: float, min_ops: int = 0
) -> dict[str, Any]:
    """Plain sqlite3: one autocommitted single-row INSERT per commit, WAL + synchronous=FULL.

    ``min_ops`` (the warm-up's) runs on until the WAL has wrapped once (1,000 pages by
    default): while a WAL file is still growing every fsync also commits file metadata,
    which the libraries' stores, warmed up as well, no longer pay.
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, data BLOB)")
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            db.execute("INSERT INTO raw (data) VALUES (?)", (payload,))
            n += 1
            if time.perf_counter() >= deadline and n >= min_ops:
                break
        return {"ops": n, "seconds": time.perf_counter() - start}
    finally:
        db.close()


async def asyncpg_raw_commits(
    conn: asyncpg.Connection, payload: bytes, seconds: float
) -> dict[str, Any]:
    """asyncpg, one connection: one autocommitted single-row INSERT per commit."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await conn.execute("INSERT INTO raw (data) VALUES ($1)", payload)
        n += 1
        if time.perf_counter() >= deadline:
            break
    return {"ops": n, "seconds": time.perf_counter() - start}


# -- statistics ------------------------------------------------------------------------------


def rate_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return summarize([r["ops"] / r["seconds"] for r in runs])


def latency_summary(runs: Sequence[dict[str, Any]], unit: str) -> dict[str, Any]:
    """p50 and p99 of each repetition (ns in, ``unit`` out), then their medians."""
    scale, digits = {"us": (1e3, 2), "ms": (1e6, 4)}[unit]
    return {
        "p50": summarize([r["p50"] / scale for r in runs], digits),
        "p99": summarize([r["p99"] / scale for r in runs], digits),
        "samples_per_run": runs[0]["n"],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


# -- orchestration -------------------------------------------------------------------------


async def alternate(
    name: str,
    ours: Callable[[int], Awaitable[dict[str, Any]]],
    theirs: Callable[[int], Awaitable[dict[str, Any]]] | None,
    settings: Settings,
    describe: Callable[[dict[str, Any]], str],
    repetitions: int | None = None,
    slices: int = 1,
    combine: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run both sides once per repetition, alternating who goes first.

    With ``slices`` > 1 a repetition is that many short turns per side, alternating
    turn by turn (ours, theirs, theirs, ours, ...), combined by ``combine``: a burst of
    a neighbour's load then lands on both sides nearly equally instead of on one.
    """
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    for rep in range(repetitions or settings.repetitions):
        parts: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
        for turn in range(slices):
            order: list[tuple[str, Callable[[int], Awaitable[dict[str, Any]]]]] = [("ours", ours)]
            if theirs is not None:
                order.append(("theirs", theirs))
                if (rep + turn) % 2:
                    order.reverse()
            for who, fn in order:
                gc.collect()
                parts[who].append(await fn(rep))
        for who, runs in (("ours", a), ("theirs", b)):
            if parts[who]:
                runs.append(combine(parts[who]) if combine else parts[who][0])
        line = f"  {name} rep {rep + 1}: chronicle {describe(a[-1])}"
        if b:
            line += f", almanak {describe(b[-1])}"
        log(line)
    return a, b


def combine_rates(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(parts[-1])
    out["ops"] = sum(p["ops"] for p in parts)
    out["seconds"] = sum(p["seconds"] for p in parts)
    return out


def combine_samples(parts: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [x for p in parts for x in p["samples"]]
    return {**percentiles(samples), "check": parts[-1]["check"]}


def _per_s(r: dict[str, Any]) -> str:
    return f"{r['ops'] / r['seconds']:,.0f}/s"


def _us(r: dict[str, Any]) -> str:
    return f"p50 {r['p50'] / 1e3:,.1f} us p99 {r['p99'] / 1e3:,.1f} us"


def _ms(r: dict[str, Any]) -> str:
    return f"p50 {r['p50'] / 1e6:,.2f} ms p99 {r['p99'] / 1e6:,.2f} ms"


async def run_suite(
    backend: str,
    ours: ChronicleSide,
    peer: PeerSide | None,
    settings: Settings,
    peer_writes: dict[str, Any],
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    dep_state, dep_snap, dep_ledger = f"sm-state-{tag}", f"sm-snap-{tag}", f"sm-ledger-{tag}"
    dep_quant, dep_nav = f"sm-quant-{tag}", f"sm-nav-{tag}"
    peer_snap_ok = peer is not None and peer_writes["save_portfolio_snapshot"]["supported"]
    peer_ledger_ok = peer is not None and peer_writes["save_ledger_entry"]["supported"]
    warm = settings.warmup_seconds

    log("  warming up")
    nxt = {"ours_snap": 1_000_000, "peer_snap": 1_000_000, "ours_led": 0, "peer_led": 0}
    participants: list[Side] = [ours] if peer is None else [ours, peer]
    for each in participants:
        key = "ours" if each is ours else "peer"
        await each.save_state(dep_state, warm)
        await each.hot_load(dep_state, 200)
        await each.warm_load(dep_state, 50)
        if each is ours or peer_snap_ok:
            r = await each.save_snapshots(dep_snap, nxt[f"{key}_snap"], warm)
            nxt[f"{key}_snap"] = r["next"]
        if each is ours or peer_ledger_ok:
            r = await each.save_ledger(dep_ledger, nxt[f"{key}_led"], warm)
            nxt[f"{key}_led"] = r["next"]

    sec = settings.write_seconds / settings.write_slices
    results: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    sliced: dict[str, Any] = {"slices": settings.write_slices, "combine": combine_rates}

    results["save_state"] = await alternate(
        "save_state (CAS)",
        lambda rep: ours.save_state(dep_state, sec),
        (lambda rep: peer.save_state(dep_state, sec)) if peer else None,
        settings,
        _per_s,
        settings.write_repetitions,
        **sliced,
    )

    def writer(kind: str, dep: str, key: str) -> Callable[[Side], Callable[[int], Awaitable[Any]]]:
        def make(side: Side) -> Callable[[int], Awaitable[dict[str, Any]]]:
            who = "ours" if side is ours else "peer"

            async def run(rep: int) -> dict[str, Any]:
                call = side.save_snapshots if kind == "snap" else side.save_ledger
                r = await call(dep, nxt[f"{who}_{key}"], sec)
                nxt[f"{who}_{key}"] = r["next"]
                return r

            return run

        return make

    snap = writer("snap", dep_snap, "snap")
    results["save_portfolio_snapshot"] = await alternate(
        "save_portfolio_snapshot",
        snap(ours),
        snap(peer) if peer_snap_ok and peer else None,
        settings,
        _per_s,
        settings.write_repetitions,
        **sliced,
    )
    led = writer("ledger", dep_ledger, "led")
    results["save_ledger_entry"] = await alternate(
        "save_ledger_entry",
        led(ours),
        led(peer) if peer_ledger_ok and peer else None,
        settings,
        _per_s,
        settings.write_repetitions,
        **sliced,
    )
    results["hot"] = await alternate(
        "load_state HOT",
        lambda rep: ours.hot_load(dep_state, settings.hot_loads),
        (lambda rep: peer.hot_load(dep_state, settings.hot_loads)) if peer else None,
        settings,
        _us,
    )
    results["warm"] = await alternate(
        "load_state WARM",
        lambda rep: ours.warm_load(dep_state, settings.warm_loads),
        (lambda rep: peer.warm_load(dep_state, settings.warm_loads)) if peer else None,
        settings,
        _us,
    )

    fills: dict[str, Any] = {"ours": {}, "peer": {}}
    quant: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    filled = 0
    per_turn = max(1, settings.quant_reads // settings.read_slices)
    for size in (settings.small_ledger_rows, settings.ledger_rows):
        log(f"  filling the ledger to {size:,} entries")
        fills["ours"][f"ledger_to_{size}"] = await ours.fill_ledger(
            dep_quant, filled, size - filled
        )
        if peer:
            fills["peer"][f"ledger_to_{size}"] = await peer.fill_ledger(
                dep_quant, filled, size - filled
            )
        filled = size
        quant[size] = await alternate(
            f"get_ledger_quant_stats @{size:,}",
            lambda rep: ours.quant_stats(dep_quant, per_turn),
            (lambda rep: peer.quant_stats(dep_quant, per_turn)) if peer else None,
            settings,
            _ms,
            slices=settings.read_slices,
            combine=combine_samples,
        )
    log(f"  filling the NAV series to {settings.snapshot_rows:,} snapshots")
    fills["ours"]["snapshots"] = await ours.fill_snapshots(dep_nav, 0, settings.snapshot_rows)
    if peer:
        fills["peer"]["snapshots"] = await peer.fill_snapshots(dep_nav, 0, settings.snapshot_rows)
    per_nav_turn = max(1, settings.nav_reads // settings.read_slices)
    nav = await alternate(
        f"get_nav_series @{settings.snapshot_rows:,}",
        lambda rep: ours.nav_series(dep_nav, per_nav_turn),
        (lambda rep: peer.nav_series(dep_nav, per_nav_turn)) if peer else None,
        settings,
        _ms,
        slices=settings.read_slices,
        combine=combine_samples,
    )

    def side(index: int) -> dict[str, Any]:
        def pick(pair: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> list[Any]:
            return pair[index]

        out: dict[str, Any] = {}
        for key, name in (
            ("save_state", "save_state_cas_per_s"),
            ("save_portfolio_snapshot", "save_portfolio_snapshot_per_s"),
            ("save_ledger_entry", "save_ledger_entry_per_s"),
        ):
            runs = pick(results[key])
            out[name] = rate_summary(runs) if runs else None
        out["load_state_hot_us"] = latency_summary(pick(results["hot"]), "us")
        out["load_state_warm_us"] = latency_summary(pick(results["warm"]), "us")
        out["ledger_quant_stats_ms"] = {
            f"{size}_rows": latency_summary(pick(q), "ms") for size, q in quant.items()
        }
        out["nav_series_ms"] = {f"{settings.snapshot_rows}_rows": latency_summary(pick(nav), "ms")}
        out["read_checks"] = {
            "ledger_quant_stats": {
                f"{size}_rows": pick(q)[-1]["check"] for size, q in quant.items()
            },
            "nav_series": pick(nav)[-1]["check"],
        }
        return out

    chronicle = side(0)
    report: dict[str, Any] = {"chronicle": chronicle}
    if peer is not None:
        almanak = side(1)
        if not peer_snap_ok:
            almanak["save_portfolio_snapshot_per_s"] = {
                "not_supported": peer_writes["save_portfolio_snapshot"]["error"]
            }
        if not peer_ledger_ok:
            almanak["save_ledger_entry_per_s"] = {
                "not_supported": peer_writes["save_ledger_entry"]["error"]
            }
        report["almanak"] = almanak
        report["ratios"] = ratios(chronicle, almanak, settings)
        report["read_checks_agree"] = chronicle["read_checks"] == almanak["read_checks"]
    report["fill"] = {
        k: {name: {"rows": v["rows"], "seconds": round(v["seconds"], 2)} for name, v in d.items()}
        for k, d in fills.items()
        if d
    }
    report["deployments"] = {
        "state": dep_state,
        "snapshots": dep_snap,
        "ledger": dep_ledger,
        "quant": dep_quant,
        "nav": dep_nav,
    }
    return report


def _median(figure: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = figure
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, dict) and "median" in node:
        return float(node["median"])
    return None


def ratios(ours: dict[str, Any], theirs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Writes: Chronicle / almanak (higher is better). Reads: almanak / Chronicle (speedup)."""
    out: dict[str, Any] = {}
    for key in ("save_state_cas_per_s", "save_portfolio_snapshot_per_s", "save_ledger_entry_per_s"):
        out[key.replace("_per_s", "_rate_ratio")] = ratio(_median(ours, key), _median(theirs, key))
    for key in ("load_state_hot_us", "load_state_warm_us"):
        for p in ("p50", "p99"):
            out[f"{key[:-3]}_{p}_speedup"] = ratio(_median(theirs, key, p), _median(ours, key, p))
    for size in (settings.small_ledger_rows, settings.ledger_rows):
        for p in ("p50", "p99"):
            path = ("ledger_quant_stats_ms", f"{size}_rows", p)
            out[f"ledger_quant_stats_{size}_rows_{p}_speedup"] = ratio(
                _median(theirs, *path), _median(ours, *path)
            )
    for p in ("p50", "p99"):
        path = ("nav_series_ms", f"{settings.snapshot_rows}_rows", p)
        out[f"nav_series_{settings.snapshot_rows}_rows_{p}_speedup"] = ratio(
            _median(theirs, *path), _median(ours, *path)
        )
    return out


# -- aims ----------------------------------------------------------------------------------


class Aim(NamedTuple):
    id: str
    backend: str
    requirement: str
    kind: str
    """"ratio": ours against the reference, pass when >= threshold; "at_most": absolute,
    pass when <= threshold; "under": absolute, pass when < threshold."""
    threshold: float
    ours: Callable[[dict[str, Any]], float | None]
    reference: Callable[[dict[str, Any]], float | None] | None
    quoted_key: str | None
    higher_is_better: bool
    profile: str
    """Which of Chronicle's paths to profile when the aim is missed."""


def aims_for(backend: str, settings: Settings) -> list[Aim]:
    big = f"{settings.ledger_rows}_rows"
    nav = f"{settings.snapshot_rows}_rows"
    out = []
    for op, key, quoted in (
        ("save_state_cas", "save_state_cas_per_s", "save_state_cas_per_s"),
        (
            "save_portfolio_snapshot",
            "save_portfolio_snapshot_per_s",
            "save_portfolio_snapshot_per_s",
        ),
        ("save_ledger_entry", "save_ledger_entry_per_s", "save_ledger_entry_per_s"),
    ):
        out.append(
            Aim(
                f"{backend}_{op}_rate",
                backend,
                f"Chronicle {op.replace('_cas', ' with CAS')} per second >= 2x the reference",
                "ratio",
                2.0,
                _figure("chronicle", key),
                _figure("almanak", key),
                quoted,
                True,
                op,
            )
        )
    out += [
        Aim(
            f"{backend}_load_state_hot_p50",
            backend,
            "Chronicle load_state from HOT, p50 <= 5 us",
            "at_most",
            5.0,
            lambda r: _median(r.get("chronicle"), "load_state_hot_us", "p50"),
            lambda r: _median(r.get("almanak"), "load_state_hot_us", "p50"),
            "load_state_hot_p50_us",
            False,
            "hot_load",
        ),
        Aim(
            f"{backend}_load_state_warm_p50",
            backend,
            "Chronicle load_state from WARM, p50 <= half the reference's (speedup >= 2)",
            "ratio",
            2.0,
            lambda r: _median(r.get("chronicle"), "load_state_warm_us", "p50"),
            lambda r: _median(r.get("almanak"), "load_state_warm_us", "p50"),
            "load_state_warm_p50_us",
            False,
            "warm_load",
        ),
        Aim(
            f"{backend}_ledger_quant_stats",
            backend,
            "Chronicle get_ledger_quant_stats p50 under 1 ms at any ledger size (judged on the "
            f"slower of {settings.small_ledger_rows:,} and {settings.ledger_rows:,} entries)",
            "under",
            1.0,
            lambda r: _max_p50(r.get("chronicle"), "ledger_quant_stats_ms"),
            lambda r: _median(r.get("almanak"), "ledger_quant_stats_ms", big, "p50"),
            "ledger_quant_stats_p50_ms",
            False,
            "quant_stats",
        ),
        Aim(
            f"{backend}_nav_series",
            backend,
            f"Chronicle get_nav_series at {settings.snapshot_rows:,} snapshots >= 1.5x faster "
            "than the reference (p50)",
            "ratio",
            1.5,
            lambda r: _median(r.get("chronicle"), "nav_series_ms", nav, "p50"),
            lambda r: _median(r.get("almanak"), "nav_series_ms", nav, "p50"),
            "nav_series_p50_ms",
            False,
            "nav_series",
        ),
    ]
    return out


def _figure(side: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        return _median(result.get(side), key)

    return read


def _max_p50(figure: dict[str, Any] | None, key: str) -> float | None:
    if not figure or key not in figure:
        return None
    values = [float(v["p50"]["median"]) for v in figure[key].values()]
    return max(values) if values else None


def evaluate(aim: Aim, result: dict[str, Any] | None) -> dict[str, Any]:
    entry = aim_entry(aim)
    if result is None:
        entry.update(status="not run", passed=None)
        return entry
    ours = aim.ours(result)
    measured = aim.reference(result) if aim.reference else None
    quoted = QUOTED_REFERENCE.get(aim.backend, {}).get(aim.quoted_key) if aim.quoted_key else None
    peer_ran = "almanak" in result
    entry["chronicle"] = ours
    if aim.kind in ("at_most", "under"):
        entry["reference_for_context"] = measured if peer_ran else quoted
        entry["reference_source"] = (
            "almanak 2.29.2 measured in this run" if peer_ran else QUOTED_REFERENCE["source"]
        )
        if ours is None:
            entry.update(status="not run", passed=None)
            return entry
        passed = ours <= aim.threshold if aim.kind == "at_most" else ours < aim.threshold
        return judge(entry, ours, passed)
    if peer_ran:
        reference, source = measured, "almanak 2.29.2 measured in this run"
        if reference is None:
            note = result["almanak"].get(aim.quoted_key or "")
            why = "the reference has no figure"
            if isinstance(note, dict) and "not_supported" in note:
                why = f"the reference cannot do this on {aim.backend}: {note['not_supported']}"
            entry.update(
                reference=None,
                reference_source=source,
                status="not applicable",
                passed=None,
                why=why,
            )
            return entry
    else:
        reference, source = quoted, QUOTED_REFERENCE["source"]
        if reference is None:
            entry.update(
                reference=None,
                reference_source=source,
                status="not applicable",
                passed=None,
                why="the project quotes no reference figure for this backend",
            )
            return entry
    entry.update(reference=reference, reference_source=source)
    if ours is None:
        entry.update(status="not run", passed=None)
        return entry
    value = ratio(ours, reference) if aim.higher_is_better else ratio(reference, ours)
    assert value is not None
    return judge(entry, value, value >= aim.threshold)


# -- profiling the missed aims -------------------------------------------------------------


async def profile_path(
    path: str, ours: ChronicleSide, deployments: dict[str, str], settings: Settings
) -> dict[str, Any]:
    """cProfile Chronicle's side of one measurement; the hottest functions by own time."""
    m = ours.manager
    seconds = settings.profile_seconds
    counter = {"n": 0}
    start_index = 5_000_000

    async def body() -> None:
        if path == "save_state_cas":
            counter["n"] = (await ours.save_state(deployments["state"], seconds))["ops"]
        elif path == "save_portfolio_snapshot":
            r = await ours.save_snapshots(deployments["snapshots"], start_index, seconds)
            counter["n"] = r["ops"]
        elif path == "save_ledger_entry":
            r = await ours.save_ledger(deployments["ledger"], start_index, seconds)
            counter["n"] = r["ops"]
        elif path == "hot_load":
            counter["n"] = settings.hot_loads
            await ours.hot_load(deployments["state"], counter["n"])
        elif path == "warm_load":
            counter["n"] = settings.warm_loads
            await ours.warm_load(deployments["state"], counter["n"])
        elif path == "quant_stats":
            counter["n"] = settings.quant_reads * 5
            await ours.quant_stats(deployments["quant"], counter["n"])
        elif path == "nav_series":
            counter["n"] = max(3, settings.nav_reads)
            await ours.nav_series(deployments["nav"], counter["n"])
        else:
            raise ValueError(path)

    profiler = cProfile.Profile()
    wall = time.perf_counter()
    profiler.enable()
    try:
        await body()
    finally:
        profiler.disable()
    wall = time.perf_counter() - wall
    m.clear_metrics()
    stats: Any = pstats.Stats(profiler)
    table: dict[Any, Any] = stats.stats
    total = sum(row[2] for row in table.values())
    ops = max(1, counter["n"])

    def entry(key: Any, row: Any) -> dict[str, Any]:
        (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) = key, row
        return {
            "function": f"{_short(filename)}:{line}({func})",
            "calls_per_op": round(ncalls / ops, 2),
            "own_us_per_op": round(tottime / ops * 1e6, 2),
            "own_pct": round(100 * tottime / total, 1) if total else None,
            "cum_us_per_op": round(cumtime / ops * 1e6, 2),
            "cum_pct": round(100 * cumtime / total, 1) if total else None,
        }

    by_own = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)
    ours_only = [
        kv
        for kv in table.items()
        if any(f"/{pkg}/" in kv[0][0] for pkg in ("statemanager", "eventstore", "projections"))
    ]
    by_cum = sorted(ours_only, key=lambda kv: kv[1][3], reverse=True)
    return {
        "ops": counter["n"],
        "wall_seconds_under_profiler": round(wall, 3),
        "profiled_us_per_op": round(total / ops * 1e6, 2),
        "note": "cProfile inflates Python-heavy paths several-fold; read the shares, not the "
        "absolute figures. Time blocked in C (an fsync inside sqlite3's execute, epoll waiting "
        "for PostgreSQL) is counted in that C function's own time.",
        "top_by_own_time": [entry(k, v) for k, v in by_own[:15]],
        "chronicle_functions_by_cumulative_time": [entry(k, v) for k, v in by_cum[:15]],
    }


def _short(filename: str) -> str:
    root = str(Path(__file__).resolve().parent.parent) + "/"
    if filename.startswith(root):
        return filename[len(root) :]
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    if "/lib/python3" in filename:
        return "stdlib/" + filename.split("/lib/python3", 1)[1].split("/", 1)[1]
    return filename


# -- backends ------------------------------------------------------------------------------


async def bench_sqlite(
    settings: Settings, peer_python: str | None, profile: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    log("SQLite")
    with tempfile.TemporaryDirectory(prefix="chronicle-smbench-") as tmp:
        payload = os.urandom(400)
        raw_path = os.path.join(tmp, "raw.db")
        await asyncio.to_thread(
            sqlite_raw_commits, raw_path, payload, settings.warmup_seconds, 1_200
        )
        raw_runs = []
        for rep in range(settings.write_repetitions):
            raw_runs.append(
                await asyncio.to_thread(
                    sqlite_raw_commits, raw_path, payload, settings.write_seconds
                )
            )
            log(f"  sqlite3 single-row commits rep {rep + 1}: {_per_s(raw_runs[-1])}")
        ours = ChronicleSide(f"sqlite:///{os.path.join(tmp, 'chronicle.db')}?synchronous=full")
        await ours.open()
        peer: PeerSide | None = None
        peer_info: dict[str, Any] = {}
        try:
            ours_pragmas = _chronicle_sqlite_pragmas(ours)
            peer_writes: dict[str, Any] = {}
            peer_error = None
            if peer_python:
                try:
                    peer = await PeerSide.start(peer_python, tmp, "sqlite")
                    peer_info = await peer.call(
                        "open", backend="sqlite", path=os.path.join(tmp, "almanak.db")
                    )
                    peer_writes = await peer.call("probe_writes", dep="sm-probe")
                except (PeerError, OSError) as exc:
                    peer_error = f"the reference could not open its SQLite store: {exc}"
                    log(peer_error)
                    if peer is not None:
                        await peer.close()
                    peer = None
            result = await run_suite("sqlite", ours, peer, settings, peer_writes)
            if peer_error:
                result["peer_error"] = peer_error
            result["baseline"] = {"sqlite3_single_row_commits_per_s": rate_summary(raw_runs)}
            result["chronicle_vs_baseline"] = _vs_baseline(
                result, "sqlite3_single_row_commits_per_s"
            )
            aims = [evaluate(a, result) for a in aims_for("sqlite", settings)]
            if profile:
                result["profiles"] = await _profile_misses(aims, ours, result, settings)
                missed_writes = [
                    a["id"] for a in aims if a["id"].endswith("_rate") and a["status"] == "fail"
                ]
                if missed_writes:
                    result["diagnostics"] = {
                        "write_cost_without_fsync": await fsync_diagnostic(
                            settings, tmp, result, peer
                        )
                    }
        finally:
            if peer is not None:
                await peer.close()
            await ours.close()
    durability = {
        "chronicle": {
            "how": "URL ?synchronous=full (Chronicle's default): journal_mode=WAL and "
            "synchronous=FULL on its connections",
            "observed": ours_pragmas,
        },
        "almanak": {
            "how": "StateManagerConfig(warm_backend=SQLITE, sqlite_config=SQLiteConfigLight("
            "db_path=..., wal_mode=True)): its SQLiteStore._connect runs PRAGMA journal_mode=WAL, "
            "synchronous=FULL and wal_autocheckpoint=100 by itself (no setting needed); read back "
            "from its connection",
            "observed": peer_info or "peer not run",
        },
        "baseline": {"how": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL"},
    }
    return result, {"durability": durability, "aims": aims}


async def bench_postgres(
    settings: Settings, dsn: str, peer_python: str | None, profile: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    log("PostgreSQL")
    run = uuid.uuid4().hex[:10]
    schema, raw_schema, peer_db = f"bench_sm_{run}", f"bench_sm_{run}_raw", f"bench_sm_{run}_ref"
    admin = await asyncpg.connect(dsn)
    created_db = False
    try:
        server = await _pg_server_settings(admin)
        await admin.execute(f'CREATE SCHEMA "{raw_schema}"')
        raw = await asyncpg.connect(dsn, server_settings={"search_path": raw_schema})
        try:
            await raw.execute("CREATE TABLE raw (id bigserial PRIMARY KEY, data bytea NOT NULL)")
            payload = os.urandom(400)
            await asyncpg_raw_commits(raw, payload, settings.warmup_seconds)
            raw_runs = []
            for rep in range(settings.write_repetitions):
                raw_runs.append(await asyncpg_raw_commits(raw, payload, settings.write_seconds))
                log(f"  asyncpg 1-connection commits rep {rep + 1}: {_per_s(raw_runs[-1])}")
        finally:
            await raw.close()
        ours = ChronicleSide(with_params(dsn, schema=schema))
        await ours.open()
        peer: PeerSide | None = None
        peer_info: dict[str, Any] = {}
        try:
            ours_sync = await _chronicle_pg_synchronous_commit(ours)
            peer_writes: dict[str, Any] = {}
            peer_error = None
            with tempfile.TemporaryDirectory(prefix="chronicle-smbench-") as tmp:
                if peer_python:
                    try:
                        await admin.execute(f'CREATE DATABASE "{peer_db}"')
                        created_db = True
                        peer = await PeerSide.start(peer_python, tmp, "postgresql")
                        peer_info = await peer.call(
                            "open", backend="postgresql", dsn=_with_database(dsn, peer_db)
                        )
                        peer_writes = await peer.call("probe_writes", dep=f"sm-probe-{run}")
                    except (PeerError, OSError, asyncpg.PostgresError) as exc:
                        peer_error = f"the reference could not open its PostgreSQL store: {exc}"
                        log(peer_error)
                        if peer is not None:
                            await peer.close()
                        peer = None
                result = await run_suite("postgresql", ours, peer, settings, peer_writes)
                if peer is not None:
                    await peer.close()
                    peer = None
            if peer_error:
                result["peer_error"] = peer_error
            result["baseline"] = {"asyncpg_1conn_commits_per_s": rate_summary(raw_runs)}
            result["chronicle_vs_baseline"] = _vs_baseline(result, "asyncpg_1conn_commits_per_s")
            aims = [evaluate(a, result) for a in aims_for("postgresql", settings)]
            if profile:
                result["profiles"] = await _profile_misses(aims, ours, result, settings)
        finally:
            if peer is not None:
                await peer.close()
            await ours.close()
    finally:
        for statement in (
            f'DROP SCHEMA IF EXISTS "{schema}" CASCADE',
            f'DROP SCHEMA IF EXISTS "{raw_schema}" CASCADE',
        ):
            with contextlib.suppress(Exception):
                await admin.execute(statement)
        if created_db:
            with contextlib.suppress(Exception):
                await admin.execute(f'DROP DATABASE IF EXISTS "{peer_db}" WITH (FORCE)')
        await admin.close()
    durability = {
        "server": server,
        "chronicle": {
            "how": "server default; Chronicle sets only search_path on its sessions",
            "observed_synchronous_commit": ours_sync,
        },
        "almanak": {
            "how": "server default (its PostgresStore sets only search_path)",
            "observed": peer_info or "peer not run",
        },
        "baseline": {
            "how": "server default",
            "observed_synchronous_commit": server["synchronous_commit"],
        },
    }
    setup = {
        "chronicle": "StateManager(StateManagerConfig(database_url='<dsn>?schema=bench_sm_<run>', "
        "load_state_on_startup=False)): asyncpg pool (pool_max 20), and the cross-process HOT "
        "invalidation it runs by default (store.watch_remote_appends: a LISTEN connection; the "
        "store's own append notification, debounced, after commit)",
        "almanak": "StateManager(StateManagerConfig(warm_backend=POSTGRESQL, database_url="
        "'<server>/bench_sm_<run>_ref', load_state_on_startup=False)): its PostgresStore, asyncpg "
        "pool 2..10, statement_cache_size=0. Its own database, not a schema: with ?schema= its "
        "pool's init hook sets search_path, but asyncpg's reset on release (RESET ALL) drops it, "
        "so from the second use of a connection its queries miss the tables. Tables: the SDK's "
        "reference DDL (almanak.gateway.database.POSTGRES_SCHEMA, which its PostgresStore does not "
        "run itself) plus the columns its queries read that this DDL lacks (price_inputs_json, "
        "pre_state_json, post_state_json, extracted_data_json TEXT; deployed_capital_usd, "
        "wallet_total_value_usd TEXT; token_prices_json, wallet_balances_json JSONB)",
    }
    return result, {"durability": durability, "aims": aims, "setup": setup}


async def fsync_diagnostic(
    settings: Settings, tmp: str, result: dict[str, Any], peer: PeerSide | None
) -> dict[str, Any]:
    """The same write loops on fresh stores at synchronous=NORMAL: no fsync per commit.

    Only to split a write's cost: 1/rate(NORMAL) is the library's own work per write
    (Python, SQL, thread hops, reads before the write, WAL writes and checkpoints without
    their fsyncs), and 1/rate(FULL) - 1/rate(NORMAL) is roughly what each commit waits for
    its fsync. Never compared against the aims.
    """
    log("  diagnostic: the write loops again at synchronous=NORMAL (no fsync per commit)")
    ours = ChronicleSide(f"sqlite:///{os.path.join(tmp, 'chronicle-normal.db')}?synchronous=normal")
    await ours.open()
    observed: dict[str, Any] = {"chronicle": _chronicle_sqlite_pragmas(ours)}
    if peer is not None:
        observed["almanak"] = await peer.call(
            "open_nosync", path=os.path.join(tmp, "almanak-normal.db")
        )
    seconds = settings.profile_seconds / settings.write_slices
    nxt = {"chronicle": [0, 0], "almanak": [0, 0]}

    def loop(kind: str, side: Side, name: str) -> Callable[[int], Awaitable[dict[str, Any]]]:
        async def run(rep: int) -> dict[str, Any]:
            if kind == "save_state_cas_per_s":
                return await side.save_state("diag-state", seconds)
            slot = 0 if kind == "save_portfolio_snapshot_per_s" else 1
            call = side.save_snapshots if slot == 0 else side.save_ledger
            r = await call(f"diag-{slot}", nxt[name][slot], seconds)
            nxt[name][slot] = r["next"]
            return r

        return run

    out: dict[str, Any] = {"chronicle": {}, "almanak": {}} if peer else {"chronicle": {}}
    try:
        for side in (ours, peer):
            if side is not None:
                await side.save_state("diag-state", settings.warmup_seconds)
        for kind in (
            "save_state_cas_per_s",
            "save_portfolio_snapshot_per_s",
            "save_ledger_entry_per_s",
        ):
            runs = await alternate(
                f"{kind[:-6]} at synchronous=NORMAL",
                loop(kind, ours, "chronicle"),
                loop(kind, peer, "almanak") if peer is not None else None,
                settings,
                _per_s,
                settings.diagnostic_repetitions,
                slices=settings.write_slices,
                combine=combine_rates,
            )
            for name, side_runs in zip(("chronicle", "almanak"), runs, strict=True):
                if not side_runs:
                    continue
                normal = rate_summary(side_runs)
                full = _median(result.get(name), kind)
                out[name][kind] = {
                    "at_normal": normal,
                    "at_full_median": full,
                    "own_work_us_per_op": round(1e6 / normal["median"], 1),
                    "fsync_wait_us_per_op": round(1e6 / full - 1e6 / normal["median"], 1)
                    if full
                    else None,
                }
    finally:
        await ours.close()
    out["observed"] = observed
    out["note"] = (
        "fresh stores at synchronous=NORMAL (WAL: fsync only at checkpoints), same loops, "
        "alternating; own_work = 1/median rate(NORMAL); fsync_wait = 1/median rate(FULL, the "
        "measurement above) - own_work, so it also carries whatever the machine's load did "
        "between the two measurements"
    )
    return out


async def _profile_misses(
    aims: list[dict[str, Any]], ours: ChronicleSide, result: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    profiles: dict[str, Any] = {}
    by_id = {a.id: a for a in aims_for(aims[0]["backend"], settings)} if aims else {}
    for entry in aims:
        if entry["status"] != "fail":
            continue
        path = by_id[entry["id"]].profile
        if path in profiles:
            continue
        log(f"  profiling Chronicle's {path} (aim {entry['id']} missed)")
        profiles[path] = await profile_path(path, ours, result["deployments"], settings)
    return profiles


def _vs_baseline(result: dict[str, Any], key: str) -> dict[str, Any]:
    raw = result["baseline"][key]["median"]
    out: dict[str, Any] = {}
    for side in ("chronicle", "almanak"):
        figures = result.get(side)
        if not figures:
            continue
        out[side] = {
            k: ratio(_median(figures, k), raw)
            for k in (
                "save_state_cas_per_s",
                "save_portfolio_snapshot_per_s",
                "save_ledger_entry_per_s",
            )
        }
    out["note"] = "each write rate as a fraction of the raw driver's single-commit rate"
    return out


def _chronicle_sqlite_pragmas(side: ChronicleSide) -> dict[str, Any]:
    warm = side.manager.warm_backend
    backend: Any = getattr(warm.store if warm else None, "_backend", None)
    db: Any = getattr(backend, "_db", None)
    if not isinstance(db, sqlite3.Connection):
        return {"journal_mode": "unobservable", "synchronous": "unobservable"}
    return {
        **sqlite_pragmas(db),
        "wal_autocheckpoint": db.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
    }


async def _chronicle_pg_synchronous_commit(side: ChronicleSide) -> str:
    warm = side.manager.warm_backend
    pool: Any = getattr(getattr(warm.store if warm else None, "_backend", None), "_pool", None)
    if pool is None:
        return "unobservable"
    return str(await pool.fetchval("SHOW synchronous_commit"))


async def _pg_server_settings(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
        ["synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "commit_delay"],
    )
    out: dict[str, Any] = {row["name"]: row["setting"] for row in rows}
    out["server_version"] = await conn.fetchval("SHOW server_version")
    return out


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


# -- entry point ---------------------------------------------------------------------------


def versions() -> dict[str, str]:
    return common.versions("chronicle-store", "asyncpg", "aiosqlite", "msgspec")


def source_state() -> dict[str, Any]:
    return common.source_state("statemanager", "eventstore", "projections")


async def run(
    backends: Sequence[str],
    settings: Settings,
    dsn: str,
    mode: str,
    command: str = "",
    peer_python: str | None = None,
    use_peer: bool = True,
    profile: bool = True,
) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.ERROR)  # as the peer's side: no per-op warnings
    source = source_state()
    started = time.perf_counter()
    load_start = os.getloadavg()
    peer: dict[str, Any]
    python: str | None = None
    if use_peer:
        install = await asyncio.to_thread(ensure_peer, peer_python)
        python = install.python
        peer = {"available": python is not None, "install_log": install.log}
        if python is None:
            peer["reason"] = install.reason
            log(f"peer unavailable: {install.reason}")
    else:
        peer = {"available": False, "reason": "--no-peer was given"}
    if python is not None:
        hello = await _peer_hello(python)
        if "error" in hello:
            peer = {
                "available": False,
                "reason": hello["error"],
                "install_log": peer["install_log"],
            }
            python = None
        else:
            peer.update(
                library=f"almanak {hello['versions'].get('almanak')}",
                interpreter=python,
                versions=hello["versions"],
            )
    results: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    if "sqlite" in backends:
        results["sqlite"], extras["sqlite"] = await bench_sqlite(settings, python, profile)
    if "postgresql" in backends:
        results["postgresql"], extras["postgresql"] = await bench_postgres(
            settings, dsn, python, profile
        )
    aims = [a for b in ("sqlite", "postgresql") if b in extras for a in extras[b]["aims"]]
    aims += [
        evaluate(a, None)
        for b in ("sqlite", "postgresql")
        if b not in extras
        for a in aims_for(b, settings)
    ]
    if peer.get("available"):
        peer["vs_quoted"] = _peer_vs_quoted(results, settings)
    report = {
        "warnings": run_warnings(results, extras, source, peer),
        "benchmark": "statemanager",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            **machine_basics(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "shared and noisy; the two libraries alternate within each repetition, so "
            "compare ratios measured in one run, not absolute figures across runs",
        },
        "versions": versions(),
        "source": source,
        "settings": {
            **asdict(settings),
            "statistic": f"median of {settings.write_repetitions} repetitions for write rates and "
            f"{settings.repetitions} for reads (min, max and runs kept); "
            "latencies: each repetition's nearest-rank p50 and p99, then their median",
            "fill_batch": FILL_BATCH,
        },
        "workload": {
            "state": "JSON-native runner state, ~400 bytes (cycle, phase, cash, last price, an LP "
            "position's ticks and liquidity); each save gives a new body",
            "save_state": "load_state (HOT hit) -> new state body -> save_state(state, "
            "expected_version=state.version), one deployment, sequential",
            "snapshot": "PortfolioSnapshot with one LP position (the reference's positions "
            "envelope), two token prices, two wallet balances, Decimal values; a new timestamp "
            "each (5 min apart)",
            "ledger_entry": "SWAP LedgerEntry (USDC->WETH, Decimal amounts, gas, tx hash, chain, "
            "protocol, slippage) with price_inputs, pre_state and post_state documents; a new id "
            "each",
            "fill": "quant stats: one deployment filled to 1,000 then 20,000 entries; NAV: one "
            "deployment with 20,000 snapshots. Chronicle: warm_backend.engine.append of "
            f"{FILL_BATCH}-event batches (read models applied inline). Reference: one executemany "
            "INSERT transaction of rows encoded as its save_* methods encode them (its PostgreSQL "
            "store has no writer for these tables)",
            "shared_generators": [fn.__name__ for fn in _SHARED],
        },
        "peer": peer,
        "quoted_reference": QUOTED_REFERENCE,
        "durability": {b: e["durability"] for b, e in extras.items()},
        "setup": {b: e["setup"] for b, e in extras.items() if "setup" in e},
        "summary": summary(results, settings),
        "results": results,
        "aims": aims,
        "aims_all_passed": all(a["passed"] for a in aims if a["passed"] is not None),
    }
    return report


def summary(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The headline medians side by side (details, runs and p99s under ``results``)."""
    figures = {
        "save_state_cas_per_s": ("save_state_cas_per_s",),
        "save_portfolio_snapshot_per_s": ("save_portfolio_snapshot_per_s",),
        "save_ledger_entry_per_s": ("save_ledger_entry_per_s",),
        "load_state_hot_p50_us": ("load_state_hot_us", "p50"),
        "load_state_warm_p50_us": ("load_state_warm_us", "p50"),
        f"ledger_quant_stats_p50_ms_{settings.small_ledger_rows}_rows": (
            "ledger_quant_stats_ms",
            f"{settings.small_ledger_rows}_rows",
            "p50",
        ),
        f"ledger_quant_stats_p50_ms_{settings.ledger_rows}_rows": (
            "ledger_quant_stats_ms",
            f"{settings.ledger_rows}_rows",
            "p50",
        ),
        f"nav_series_p50_ms_{settings.snapshot_rows}_rows": (
            "nav_series_ms",
            f"{settings.snapshot_rows}_rows",
            "p50",
        ),
    }
    out: dict[str, Any] = {}
    for backend, result in results.items():
        rows: dict[str, Any] = {}
        for name, path in figures.items():
            ours = _median(result.get("chronicle"), *path)
            theirs = _median(result.get("almanak"), *path)
            better = ratio(ours, theirs) if name.endswith("_per_s") else ratio(theirs, ours)
            rows[name] = {"chronicle": ours, "almanak": theirs, "chronicle_advantage": better}
        baseline = result.get("baseline", {})
        rows["raw_driver_commits_per_s"] = {
            k: v["median"] for k, v in baseline.items() if isinstance(v, dict)
        }
        out[backend] = rows
    out["note"] = (
        "medians; chronicle_advantage is Chronicle / almanak for rates and almanak / "
        "Chronicle for latencies (above 1: Chronicle is better); almanak null: not run, or "
        "not supported on that backend"
    )
    return out


async def _peer_hello(python: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chronicle-smbench-") as tmp:
        try:
            peer = await PeerSide.start(python, tmp, "hello")
        except OSError as exc:
            return {"error": f"cannot start {python}: {exc}"}
        try:
            return dict(await peer.call("hello"))
        except PeerError as exc:
            return {"error": str(exc)}
        finally:
            await peer.close()


def _peer_vs_quoted(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """This run's reference figures over the quoted ones (how this machine compares now)."""
    out: dict[str, Any] = {}
    quant = f"{settings.ledger_rows}_rows"
    nav = f"{settings.snapshot_rows}_rows"
    paths = {
        "save_state_cas_per_s": ("save_state_cas_per_s",),
        "save_portfolio_snapshot_per_s": ("save_portfolio_snapshot_per_s",),
        "save_ledger_entry_per_s": ("save_ledger_entry_per_s",),
        "load_state_hot_p50_us": ("load_state_hot_us", "p50"),
        "load_state_warm_p50_us": ("load_state_warm_us", "p50"),
        "ledger_quant_stats_p50_ms": ("ledger_quant_stats_ms", quant, "p50"),
        "nav_series_p50_ms": ("nav_series_ms", nav, "p50"),
    }
    if settings.ledger_rows != 20_000 or settings.snapshot_rows != 20_000:
        out["note"] = "the quoted reads are at 20,000 rows; this run's are not"
    for backend, result in results.items():
        theirs = result.get("almanak")
        if not theirs:
            continue
        out[backend] = {
            key: {
                "measured": _median(theirs, *path),
                "quoted": quoted,
                "measured_over_quoted": ratio(_median(theirs, *path), quoted),
            }
            for key, quoted in QUOTED_REFERENCE[backend].items()
            for path in [paths[key]]
        }
    return out


def run_warnings(
    results: dict[str, Any], extras: dict[str, Any], source: dict[str, Any], peer: dict[str, Any]
) -> list[str]:
    out: list[str] = []
    if not peer.get("available"):
        out.append(
            "the reference (almanak 2.29.2) did not run: aims are judged against the QUOTED "
            f"figures, not measured in this run ({peer.get('reason')})"
        )
    sqlite = extras.get("sqlite")
    if sqlite is not None:
        seen = {sqlite["durability"]["chronicle"]["observed"].get("synchronous")}
        observed = sqlite["durability"]["almanak"]["observed"]
        if isinstance(observed, dict):
            seen.add(observed.get("synchronous"))
        if seen != {"FULL"}:
            out.append(f"SQLite synchronous differs from FULL or between libraries: {seen}")
    pg = extras.get("postgresql")
    if pg is not None:
        seen = {pg["durability"]["chronicle"]["observed_synchronous_commit"]}
        observed = pg["durability"]["almanak"]["observed"]
        if isinstance(observed, dict):
            seen.add(observed.get("synchronous_commit"))
        if seen != {"on"}:
            out.append(f"PostgreSQL synchronous_commit is not 'on' for both: {seen}")
    for name, result in results.items():
        if result.get("read_checks_agree") is False:
            out.append(
                f"{name}: the two libraries' quant stats or NAV series disagree on the filled "
                "data (see read_checks)"
            )
    if source.get("uncommitted_changes"):
        out.append(
            "statemanager/, eventstore/ or projections/ had uncommitted changes when this ran "
            "(see source): the figures are for the working tree, not for source.git_commit"
        )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.statemanager_bench",
        description="Chronicle's StateManager against almanak 2.29.2's; prints JSON.",
    )
    add_common_args(parser, quick_help="a ~1 minute smoke run")
    parser.add_argument(
        "--peer-python",
        help=f"the interpreter with almanak {PEER_VERSION} installed (default: "
        f"${PEER_PYTHON_ENV}, else {DEFAULT_PEER_VENV}/bin/python, created when missing)",
    )
    parser.add_argument("--no-peer", action="store_true", help="measure Chronicle alone")
    parser.add_argument(
        "--no-profile", action="store_true", help="skip cProfile of the missed aims' paths"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = selected_backends(args.backend)
    settings, mode = sized(args, FULL, QUICK, SMOKE)
    command = command_line("benchmarks.statemanager_bench", argv)
    report = asyncio.run(
        run(
            backends,
            settings,
            pg_dsn(args.pg_dsn),
            mode,
            command,
            peer_python=args.peer_python,
            use_peer=not args.no_peer,
            profile=not args.no_profile,
        )
    )
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

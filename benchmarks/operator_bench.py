"""The operator verbs at scale: replay, verify, export, as one deployment's log grows.

    python -m benchmarks.operator_bench [--backend sqlite|postgresql|all] [--quick]
        [--out FILE] [--pg-dsn DSN]

For each backend and each log size (1k, 100k and 1M events; ``--quick``: 1k and
10k), one deployment's runner log is generated into a fresh store (the
``projections_bench`` workload: per cycle a StateSaved, a LedgerEntryRecorded, a
PositionEventRecorded, a PortfolioSnapshotRecorded, a PortfolioMetricsSaved and a
CLOB order with two status updates, appended through ``ProjectionEngine(store,
[])`` in chunks of 100 cycles per stream), then measured through the library
functions the verbs call:

1. **replay** (``chronicle replay --at-seq <last>``): the whole log folded into the
   nine read models of a scratch SQLite store, then the deployment view queried;
2. **verify, chain** (``chronicle verify --chain-only``): every hash recomputed;
3. **verify, chain + read models** (``chronicle verify``): the same pass also
   replays into scratch read models, then every table is compared row for row
   with the stored read models (built beforehand by ``ProjectionEngine.start()``,
   untimed); only up to ``compare_max`` events (a full rebuild of 1M events on
   PostgreSQL takes minutes and measures the rebuild, not verify);
4. **export** to a file in a temporary directory and **verify --file** of it.

Rates are events of the log per second, the median of the repetitions (min, max
and every run kept). One JSON document goes to stdout (and to ``--out``);
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import eventstore
import eventstore.backends.postgres
import eventstore.backends.sqlite
from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import DomainEvent
from projections.models import ALL_PROJECTIONS
from statemanager.audit.check import verify_store
from statemanager.audit.export import export_deployment, open_output, verify_file
from statemanager.audit.replay import replay_deployment

from . import _common as common
from ._common import (
    add_common_args,
    command_line,
    emit,
    machine_basics,
    pg_dsn,
    pg_schemas,
    redact,
    selected_backends,
    sized,
    summarize,
    with_params,
)
from .projections_bench import EVENTS_PER_CYCLE, STREAMS, Pools, cycle_events

DEPLOYMENT = "bench-operator"
CHUNK_CYCLES = 100
"""Cycles per ``engine.append`` (one call per stream), as ``projections_bench`` appends."""


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    """Log sizes of the one deployment (rounded up to whole cycles of 8 events)."""
    compare_max: int
    """Largest log verified against stored read models (those are rebuilt first)."""
    repetitions: int
    """Repetitions of each measurement at sizes up to 100k."""
    large_repetitions: int
    """Repetitions above 100k events."""


FULL = Settings(
    sizes=(1_000, 100_000, 1_000_000), compare_max=100_000, repetitions=3, large_repetitions=1
)
QUICK = Settings(sizes=(1_000, 10_000), compare_max=10_000, repetitions=1, large_repetitions=1)
SMOKE = Settings(sizes=(200,), compare_max=200, repetitions=1, large_repetitions=1)


def log(message: str) -> None:
    print(f"[operator-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def generate(store: EventStore, events: int) -> int:
    """Append one deployment's runner log of at least ``events`` events; the count written."""
    writer = ProjectionEngine(store, [])
    pools = Pools()
    cycles = math.ceil(events / EVENTS_PER_CYCLE)
    written = 0
    for start in range(0, cycles, CHUNK_CYCLES):
        streams: dict[str, list[DomainEvent]] = {s: [] for s in STREAMS}
        for c in range(start, min(start + CHUNK_CYCLES, cycles)):
            for stream, batch in cycle_events(pools, 0, DEPLOYMENT, c).items():
                streams[stream].extend(batch)
        for stream, batch in streams.items():
            await writer.append(DEPLOYMENT, stream, batch)
            written += len(batch)
    return written


async def timed(
    repetitions: int, work: Callable[[], Awaitable[Any]]
) -> tuple[list[float], list[Any]]:
    seconds, results = [], []
    for _ in range(repetitions):
        started = time.perf_counter()
        results.append(await work())
        seconds.append(time.perf_counter() - started)
    return seconds, results


def rates(events: int, seconds: Sequence[float]) -> dict[str, Any]:
    return {
        "seconds": summarize(seconds, 3),
        "events_per_s": summarize([events / s for s in seconds]),
    }


async def bench_size(url: str, size: int, settings: Settings, tmp: str) -> dict[str, Any]:
    reps = settings.repetitions if size <= 100_000 else settings.large_repetitions
    out: dict[str, Any] = {"requested_events": size}
    async with eventstore.connect(url) as store:
        started = time.perf_counter()
        events = await generate(store, size)
        out["events"] = events
        out["generate_seconds"] = round(time.perf_counter() - started, 2)
        log(f"  {events:,} events generated in {out['generate_seconds']} s")

        seconds, replays = await timed(
            reps, lambda: replay_deployment(store, DEPLOYMENT, at_seq=events)
        )
        last = replays[-1]
        out["replay"] = {
            **rates(events, seconds),
            "nav_points": len(last.view.nav_series),
            "ledger_entries": last.view.quant_stats.total,
            "chain_ok": last.chain_ok,
        }
        log(f"  replay: {out['replay']['events_per_s']['median']:,} events/s")

        seconds, reports = await timed(reps, lambda: verify_store(store, DEPLOYMENT, compare=False))
        out["verify_chain"] = {**rates(events, seconds), "ok": reports[-1].ok}
        log(f"  verify (chain): {out['verify_chain']['events_per_s']['median']:,} events/s")

        path = os.path.join(tmp, f"export-{size}.jsonl")

        async def export() -> Any:
            handle, finish = open_output(path)
            summary = await export_deployment(store, DEPLOYMENT, handle)
            finish(True)
            return summary

        seconds, summaries = await timed(reps, export)
        out["export"] = {**rates(events, seconds), "bytes": summaries[-1].bytes}
        seconds = []
        for _ in range(reps):
            began = time.perf_counter()
            checked = verify_file(path)
            seconds.append(time.perf_counter() - began)
        out["verify_file"] = {**rates(events, seconds), "ok": checked.ok}
        os.unlink(path)
        log(
            f"  export: {out['export']['events_per_s']['median']:,} events/s, verify --file: "
            f"{out['verify_file']['events_per_s']['median']:,} events/s"
        )

        if events <= settings.compare_max:
            began = time.perf_counter()
            await ProjectionEngine(store, ALL_PROJECTIONS).start()  # rebuilds all nine
            out["stored_read_models_build_seconds"] = round(time.perf_counter() - began, 2)
            seconds, reports = await timed(
                reps, lambda: verify_store(store, DEPLOYMENT, compare=True)
            )
            report = reports[-1]
            out["verify_compare"] = {
                **rates(events, seconds),
                "ok": report.ok,
                "rows_compared": report.rows_compared,
            }
            log(
                f"  verify (chain + read models): "
                f"{out['verify_compare']['events_per_s']['median']:,} events/s"
            )
        else:
            out["verify_compare"] = None
    return out


async def bench_backend(
    backend: str, settings: Settings, url_for: Callable[[int], str], tmp: str
) -> dict[str, Any]:
    steps = []
    for size in settings.sizes:
        log(f"{backend}: one deployment of {size:,} events")
        steps.append(await bench_size(url_for(size), size, settings, tmp))
    return {"steps": steps}


async def bench_sqlite(settings: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chronicle-op-bench-") as tmp:
        # synchronous=normal: generation is not measured; the measured work only reads
        # this store (the scratch store has its own file)
        result = await bench_backend(
            "sqlite",
            settings,
            lambda size: f"sqlite:///{os.path.join(tmp, f'log-{size}.db')}?synchronous=normal",
            tmp,
        )
    result["setup"] = "one SQLite file per size in a temporary directory, WAL"
    return result


async def bench_postgres(settings: Settings, dsn: str) -> dict[str, Any]:
    run = uuid.uuid4().hex[:10]
    schemas = {size: f"bench_op_{run}_{size}" for size in settings.sizes}
    with tempfile.TemporaryDirectory(prefix="chronicle-op-bench-") as tmp:
        async with pg_schemas(dsn, *schemas.values()):
            result = await bench_backend(
                "postgresql",
                settings,
                lambda size: with_params(dsn, schema=schemas[size]),
                tmp,
            )
    result["setup"] = f"one schema per size on {redact(dsn)}, dropped at the end"
    return result


async def run(
    backends: Sequence[str], settings: Settings, dsn: str, mode: str, command: str = ""
) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if "sqlite" in backends:
        results["sqlite"] = await bench_sqlite(settings)
    if "postgresql" in backends:
        results["postgresql"] = await bench_postgres(settings, dsn)
    warnings = [
        f"{backend}: {name} at {step['events']} events did not come out ok"
        for backend, result in results.items()
        for step in result["steps"]
        for name in ("verify_chain", "verify_file", "verify_compare")
        if step[name] is not None and not step[name]["ok"]
    ]
    return {
        "warnings": warnings,
        "benchmark": "operator",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            **machine_basics(),
            "note": "shared and noisy: compare figures measured in one run",
        },
        "versions": common.versions("chronicle-store", "asyncpg", "aiosqlite", "msgspec"),
        "source": common.source_state("eventstore", "projections", "statemanager"),
        "settings": {
            **asdict(settings),
            "workload": "one deployment; per cycle StateSaved, LedgerEntryRecorded, "
            "PositionEventRecorded, PortfolioSnapshotRecorded, PortfolioMetricsSaved, "
            "ClobOrderSaved and two ClobOrderStatusUpdated (projections_bench.cycle_events)",
            "statistic": "median of the repetitions; min, max and runs kept",
        },
        "results": results,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.operator_bench",
        description="chronicle replay / verify / export as one deployment's log grows; "
        "prints JSON.",
    )
    add_common_args(parser, quick_help="1k and 10k events only (about a minute)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings, mode = sized(args, FULL, QUICK, SMOKE)
    command = command_line("benchmarks.operator_bench", argv)
    report = asyncio.run(
        run(selected_backends(args.backend), settings, pg_dsn(args.pg_dsn), mode, command)
    )
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

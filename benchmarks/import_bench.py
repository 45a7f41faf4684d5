"""``chronicle import`` rates: legacy rows per second into a fresh store, both backends.

    python -m benchmarks.import_bench [--backend sqlite|postgresql|all] [--quick]
        [--out FILE] [--pg-dsn DSN]

Two workloads, each through the library functions the verb calls
(``prepare_import``, ``import_legacy``, ``check_legacy``), each file into its own
fresh store (a new SQLite file, a new PostgreSQL schema) whose read models
``ProjectionEngine.start()`` created beforehand (untimed):

1. **fixtures**: the ten real legacy files of ``../shared/fixtures/legacy-sqlite``
   (172 rows), one after another. Small files: the rate is dominated by each
   append's commit (one per stream batch), which is what importing many small
   deployments costs.
2. **grown**: a copy of ``uniswap_lp_collect_capital_flow.sqlite`` whose ledger,
   outbox, accounting events, position events, snapshots and position-state
   snapshots are cloned ``cycles`` times (new keys, times shifted an hour per
   clone), so one deployment of about 21 rows per cycle: the throughput of a
   large file.

Per run: ``rows_per_s`` is rows / (prepare + import) seconds, the verb's cost
from file to committed events and read models; the phases are reported apart
(``prepare``: read, validate, map, encode; ``import``: the appends), and so are a
re-import of the same file (nothing written, every event recognised) and the
``--check`` pass. Each figure is the median of the repetitions (min, max and
every run kept). Every run also asserts the check is clean and the re-import
wrote nothing (``warnings`` says otherwise). One JSON document goes to stdout
(and ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import eventstore
import eventstore.backends.postgres
import eventstore.backends.sqlite
from projections.engine import ProjectionEngine
from projections.models import ALL_PROJECTIONS
from statemanager.legacy import check_legacy, import_legacy, prepare_import

from . import _common as common
from ._common import (
    add_common_args,
    command_line,
    emit,
    legacy_fixtures,
    machine_basics,
    pg_dsn,
    pg_schemas,
    redact,
    selected_backends,
    sized,
    summarize,
    with_params,
)

FIXTURES = legacy_fixtures()
GROWN_FROM = "uniswap_lp_collect_capital_flow.sqlite"

# table -> (text key columns that get a clone suffix, integer ids left to SQLite, time columns)
GROWN_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "transaction_ledger": (("id",), (), ("timestamp",)),
    "accounting_outbox": (("id",), (), ("created_at", "updated_at")),
    "accounting_events": (("id",), (), ("timestamp",)),
    "position_events": (("id",), (), ("timestamp",)),
    "portfolio_snapshots": ((), ("id",), ("timestamp", "created_at")),
    "position_state_snapshots": ((), ("id",), ("captured_at",)),
}


@dataclass(frozen=True)
class Settings:
    repetitions: int
    grown_cycles: int
    grown_repetitions: int


FULL = Settings(repetitions=5, grown_cycles=1000, grown_repetitions=3)
QUICK = Settings(repetitions=1, grown_cycles=50, grown_repetitions=1)
SMOKE = Settings(repetitions=1, grown_cycles=2, grown_repetitions=1)


def log(message: str) -> None:
    print(f"[import_bench] {message}", file=sys.stderr, flush=True)


# -- workloads -----------------------------------------------------------------------------


def fixture_files(directory: Path = FIXTURES) -> list[Path]:
    files = sorted(directory.glob("*.sqlite"))
    if not files:
        raise SystemExit(f"no legacy fixtures in {directory}")
    return files


def grow(source: Path, target: Path, cycles: int) -> Path:
    """A larger legacy file: the source's event-like rows cloned ``cycles`` times."""
    shutil.copyfile(source, target)
    db = sqlite3.connect(target)
    db.create_function("shift", 2, _shift, deterministic=True)
    try:
        for table, (keys, auto_ids, times) in GROWN_TABLES.items():
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
            if not columns:
                continue  # an older file without this table
            original = db.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0] or 0
            kept = [c for c in columns if c not in auto_ids]
            for clone in range(1, cycles + 1):
                values = []
                for column in kept:
                    if column in keys:
                        values.append(f"\"{column}\" || '-{clone}'")
                    elif column in times:
                        values.append(f'shift("{column}", {clone})')
                    else:
                        values.append(f'"{column}"')
                db.execute(
                    f'INSERT INTO "{table}" ({", ".join(kept)}) SELECT {", ".join(values)} '
                    f'FROM "{table}" WHERE rowid <= {original}'
                )
        db.commit()
    finally:
        db.close()
    return target


def _shift(text: Any, hours: int) -> Any:
    if not isinstance(text, str):
        return text
    return (datetime.fromisoformat(text) + timedelta(hours=hours)).isoformat()


# -- one import, timed ----------------------------------------------------------------------


async def import_once(path: Path, url: str) -> dict[str, Any]:
    """Prepare, import, re-import and check one file into the (fresh) store at ``url``."""
    async with eventstore.connect(url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        await engine.start()
        started = time.perf_counter()
        plan = await asyncio.to_thread(prepare_import, path)
        prepared = time.perf_counter()
        report = await import_legacy(engine, plan)
        imported = time.perf_counter()
        again = await import_legacy(engine, plan)
        reimported = time.perf_counter()
        check = await check_legacy(engine, plan)
        checked = time.perf_counter()
    return {
        "file": path.name,
        "rows": report.rows,
        "events": report.events,
        "appends": len(plan.batches),
        "prepare_s": prepared - started,
        "import_s": imported - prepared,
        "reimport_s": reimported - imported,
        "check_s": checked - reimported,
        "written": report.written,
        "reimport_written": again.written,
        "check_differences": len(check.differences),
    }


def totals(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    rows = sum(r["rows"] for r in runs)
    prepare = sum(r["prepare_s"] for r in runs)
    imported = sum(r["import_s"] for r in runs)
    return {
        "rows_per_s": rows / (prepare + imported),
        "prepare_rows_per_s": rows / prepare,
        "import_rows_per_s": rows / imported,
        "import_events_per_s": sum(r["events"] for r in runs) / imported,
        "reimport_rows_per_s": rows / sum(r["reimport_s"] for r in runs),
        "check_rows_per_s": rows / sum(r["check_s"] for r in runs),
    }


def summary(repetitions: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Median (min, max, runs) of each rate over the repetitions, and what every run held."""
    per_rep = [totals(runs) for runs in repetitions]
    first = repetitions[0]
    out: dict[str, Any] = {
        "files": len(first),
        "rows": sum(r["rows"] for r in first),
        "events": sum(r["events"] for r in first),
        "appends": sum(r["appends"] for r in first),
    }
    for name in per_rep[0]:
        out[name] = summarize([rep[name] for rep in per_rep])
    runs = [r for rep in repetitions for r in rep]
    out["all_checks_clean"] = all(r["check_differences"] == 0 for r in runs)
    out["all_reimports_wrote_nothing"] = all(r["reimport_written"] == 0 for r in runs)
    out["all_imports_wrote_every_event"] = all(r["written"] == r["events"] for r in runs)
    out["per_file"] = [
        {
            "file": r["file"],
            "rows": r["rows"],
            "events": r["events"],
            "appends": r["appends"],
            "prepare_ms_median": _median_ms(repetitions, index, "prepare_s"),
            "import_ms_median": _median_ms(repetitions, index, "import_s"),
        }
        for index, r in enumerate(first)
    ]
    return out


def _median_ms(repetitions: Sequence[Sequence[dict[str, Any]]], index: int, key: str) -> float:
    values = sorted(float(rep[index][key]) * 1000 for rep in repetitions)
    return round(values[len(values) // 2], 2)


# -- backends -------------------------------------------------------------------------------


async def bench_sqlite(settings: Settings, files: Sequence[Path], grown: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        counter = iter(range(1_000_000))

        def url() -> str:
            return f"sqlite:///{os.path.join(tmp, f'store-{next(counter)}.db')}"

        durability = await observe(url())
        return await bench(settings, files, grown, url, durability)


async def bench_postgres(
    settings: Settings, dsn: str, files: Sequence[Path], grown: Path
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    count = settings.repetitions * len(files) + settings.grown_repetitions + 1
    names = [f"import_bench_{run}_{i}" for i in range(count)]
    async with pg_schemas(dsn, *names):
        pool = iter(names)

        def url() -> str:
            return with_params(dsn, schema=next(pool))

        durability = await observe(url())
        result = await bench(settings, files, grown, url, durability)
    result["server"] = redact(dsn)
    return result


async def bench(
    settings: Settings,
    files: Sequence[Path],
    grown: Path,
    url: Any,
    durability: dict[str, Any],
) -> dict[str, Any]:
    fixture_reps = []
    for rep in range(settings.repetitions):
        log(f"fixtures, repetition {rep + 1}/{settings.repetitions}")
        fixture_reps.append([await import_once(path, url()) for path in files])
    grown_reps = []
    for rep in range(settings.grown_repetitions):
        log(f"grown file, repetition {rep + 1}/{settings.grown_repetitions}")
        grown_reps.append([await import_once(grown, url())])
    return {
        "durability": durability,
        "fixtures": summary(fixture_reps),
        "grown": summary(grown_reps),
    }


async def observe(url: str) -> dict[str, Any]:
    """The store's durability settings, read back from its own connection."""
    async with eventstore.connect(url) as store:
        if store.backend == "sqlite":
            journal = (await store.query("PRAGMA journal_mode"))[0][0]
            value = (await store.query("PRAGMA synchronous"))[0][0]
            return {"journal_mode": journal, "synchronous": common.sqlite_sync_name(value)}
        rows = await store.query("SHOW synchronous_commit")
        return {"synchronous_commit": rows[0][0]}


# -- the report -----------------------------------------------------------------------------


async def run(
    backends: Sequence[str],
    settings: Settings,
    dsn: str,
    mode: str,
    command: str = "",
    files: Sequence[Path] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    chosen = list(files) if files is not None else fixture_files()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="import-bench-grown-") as scratch:
        source = next((p for p in chosen if p.name == GROWN_FROM), chosen[0])
        grown = grow(source, Path(scratch) / f"grown-{source.name}", settings.grown_cycles)
        if "sqlite" in backends:
            results["sqlite"] = await bench_sqlite(settings, chosen, grown)
        if "postgresql" in backends:
            results["postgresql"] = await bench_postgres(settings, dsn, chosen, grown)
    return {
        "warnings": warnings(results),
        "benchmark": "import",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": mode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            **machine_basics(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "note": "shared and noisy: compare figures measured in one run, not across runs",
        },
        "versions": common.versions("chronicle-store", "asyncpg", "aiosqlite", "msgspec"),
        "source": common.source_state("eventstore", "projections", "statemanager"),
        "settings": {
            **asdict(settings),
            "fixtures": [p.name for p in chosen],
            "grown_from": source.name,
            "statistic": "median over repetitions of totals over the files (min, max and "
            "every run kept); each file into a fresh store, read models created untimed",
            "rows_per_s": "legacy rows / (prepare + import) seconds",
        },
        "results": results,
    }


def warnings(results: dict[str, Any]) -> list[str]:
    out = []
    for backend, result in results.items():
        for workload in ("fixtures", "grown"):
            figures = result[workload]
            if not figures["all_checks_clean"]:
                out.append(f"{backend} {workload}: the check found differences")
            if not figures["all_reimports_wrote_nothing"]:
                out.append(f"{backend} {workload}: a re-import wrote events")
            if not figures["all_imports_wrote_every_event"]:
                out.append(f"{backend} {workload}: an import did not write every event")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.import_bench",
        description="chronicle import: legacy rows per second, both backends; prints JSON.",
    )
    add_common_args(parser, quick_help="one repetition and a small grown file (a few seconds)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings, mode = sized(args, FULL, QUICK, SMOKE)
    report = asyncio.run(
        run(
            selected_backends(args.backend),
            settings,
            pg_dsn(args.pg_dsn),
            mode,
            command_line("benchmarks.import_bench", argv),
        )
    )
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

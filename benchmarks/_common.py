"""Helpers shared by the benchmark modules: statistics, run metadata, DSNs, output.

Only what the benchmarks do identically lives here; each benchmark keeps its own
measurements, workloads and report layout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent

S = TypeVar("S")

LEGACY_FIXTURES_ENV = "CHRONICLE_LEGACY_FIXTURES"


def legacy_fixtures() -> Path:
    """The legacy state databases: ``$CHRONICLE_LEGACY_FIXTURES``, else the workplace's
    shared copy, else ``../shared`` next to the repository (a clone elsewhere)."""
    explicit = os.environ.get(LEGACY_FIXTURES_ENV)
    if explicit:
        return Path(explicit)
    for candidate in (
        Path("/work/shared/fixtures/legacy-sqlite"),
        ROOT.parent / "shared" / "fixtures" / "legacy-sqlite",
    ):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "fixtures" / "legacy-sqlite"


DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN_ENV = ("CHRONICLE_BENCH_PG_DSN", "CHRONICLE_TEST_PG_DSN")

SQLITE_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# -- statistics ----------------------------------------------------------------------------


def summarize(values: Sequence[float], digits: int = 0) -> dict[str, Any]:
    """Median, min, max and every run, rounded to ``digits`` (0: integers)."""

    def r(value: float) -> float | int:
        return round(value) if digits == 0 else round(value, digits)

    return {
        "median": r(statistics.median(values)),
        "min": r(min(values)),
        "max": r(max(values)),
        "runs": [r(v) for v in values],
    }


# -- run metadata --------------------------------------------------------------------------


def machine_basics() -> dict[str, Any]:
    """The machine fields every report starts its ``machine`` section with."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def versions(*dists: str) -> dict[str, str]:
    """Python's version, each distribution's (or "not installed"), then SQLite's."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["sqlite"] = sqlite3.sqlite_version
    return out


def source_state(*paths: str, key: str = "uncommitted_changes") -> dict[str, Any]:
    """Which code was measured: the commit, and the uncommitted changes under ``paths``."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        # rstrip only: a porcelain line starts with its status ("XY path"), which may be a space
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", *paths)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, key: None}
    return {
        "git_commit": commit or None,
        key: [line[3:] for line in dirty.splitlines()],
    }


# -- SQLite --------------------------------------------------------------------------------


def sqlite_sync_name(value: Any) -> Any:
    """``PRAGMA synchronous``'s number as its name (unknown values as they are)."""
    return SQLITE_SYNC_NAMES.get(value, value)


def sqlite_pragmas(db: sqlite3.Connection) -> dict[str, Any]:
    """journal_mode and synchronous, read back from an open connection."""
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    value = db.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": journal, "synchronous": sqlite_sync_name(value)}


# -- PostgreSQL ----------------------------------------------------------------------------


def pg_dsn(explicit: str | None) -> str:
    """``--pg-dsn``, else the first environment variable set, else the default."""
    if explicit:
        return explicit
    for name in PG_DSN_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_PG_DSN


def with_params(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redact(dsn: str) -> str:
    """The DSN without its query, the password (if any) as ``***``."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@contextlib.asynccontextmanager
async def pg_schemas(dsn: str, *names: str) -> AsyncIterator[None]:
    """Create fresh schemas for the run and drop them afterwards, whatever happens."""
    conn = await asyncpg.connect(dsn)
    try:
        for name in names:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        yield
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


# -- aims ----------------------------------------------------------------------------------


class AimHeader(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def requirement(self) -> str: ...
    @property
    def threshold(self) -> float: ...


class ValuedAim(AimHeader, Protocol):
    @property
    def value(self) -> Callable[[dict[str, Any]], float]: ...


A = TypeVar("A", bound=ValuedAim)


def aim_entry(aim: AimHeader) -> dict[str, Any]:
    """The fields every evaluated aim starts with."""
    return {
        "id": aim.id,
        "backend": aim.backend,
        "requirement": aim.requirement,
        "threshold": aim.threshold,
    }


def judge(entry: dict[str, Any], value: Any, passed: bool) -> dict[str, Any]:
    entry.update(value=value, status="pass" if passed else "fail", passed=passed)
    return entry


def evaluate_threshold_aims(
    aims: Sequence[A], results: dict[str, Any], passes: Callable[[A, float], bool]
) -> list[dict[str, Any]]:
    """Each aim's record: "not run" when its backend was not, else its value and verdict."""
    out: list[dict[str, Any]] = []
    for aim in aims:
        entry = aim_entry(aim)
        if aim.backend not in results:
            entry.update(value=None, status="not run", passed=None)
        else:
            value = aim.value(results[aim.backend])
            judge(entry, value, passes(aim, value))
        out.append(entry)
    return out


# -- command line and output ---------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """--backend, --quick, --smoke, --out and --pg-dsn, as every benchmark takes them."""
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=quick_help)
    size.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: checks that the benchmark still runs end to end (the test "
        "suite's use); its figures mean nothing",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument(
        "--pg-dsn",
        help=f"PostgreSQL server (default: ${PG_DSN_ENV[0]}, ${PG_DSN_ENV[1]}, "
        f"or {DEFAULT_PG_DSN})",
    )


def sized(args: argparse.Namespace, full: S, quick: S, smoke: S) -> tuple[S, str]:
    """The settings ``--quick``/``--smoke`` pick, and the mode's name for the report."""
    if args.smoke:
        return smoke, "smoke"
    if args.quick:
        return quick, "quick"
    return full, "full"


def selected_backends(backend: str) -> tuple[str, ...]:
    return ("sqlite", "postgresql") if backend == "all" else (backend,)


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """How this run was started, for the report."""
    argv_used = list(sys.argv[1:] if argv is None else argv)
    return " ".join([f"python -m {module}", *argv_used])


def emit(report: dict[str, Any], out: Path | None) -> None:
    """The report as JSON on stdout, and in ``out`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")

"""Keep ``benchmarks/`` from rotting: run each benchmark as its README says, for a moment.

Each runs as ``python -m benchmarks.NAME --smoke`` from the repository root, in a
subprocess, the way a user runs it: the benchmarks are not part of the installed
package, so the test suite never imports them. Asserts on the shape of each JSON
report and on the work it checked, never on speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", f"benchmarks.{name}", "--backend", "sqlite", "--smoke"]
    done = subprocess.run(
        [*command, "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.read_text())
    assert json.loads(done.stdout) == report  # stdout carries the same document
    assert report["mode"] == "smoke"
    return report


def test_eventstore_bench_reports_both_libraries_and_the_aims(tmp_path: Path) -> None:
    report = run_benchmark("eventstore_bench", tmp_path)
    sizes = report["settings"]["payload_bytes"]
    assert 200 <= sizes["min"] <= sizes["max"] <= 400  # realistic ledger entries
    result = report["results"]["sqlite"]
    for side in ("chronicle", "eventsourcing"):
        figures = result[side]
        assert figures["single_append_per_s"]["median"] > 0
        assert figures["concurrent4_append_per_s"]["median"] > 0
        assert figures["batch100_events_per_s"]["median"] > 0
        assert figures["read_all_events_per_s"]["median"] > 0
    assert result["read_back_complete"]
    assert set(result["ratios"]) >= {"single_append_ratio", "batch100_ratio"}
    assert result["baseline"]["sqlite3_single_row_commits_per_s"]["median"] > 0
    durability = report["durability"]["sqlite"]
    assert durability["eventsourcing"]["observed"]["synchronous"] == "FULL"
    aims = {aim["id"]: aim for aim in report["aims"]}
    assert aims["sqlite_single_append"]["status"] in ("pass", "fail")
    assert aims["postgresql_batch_append"]["status"] == "not run"


def test_operator_bench_reports_every_figure(tmp_path: Path) -> None:
    report = run_benchmark("operator_bench", tmp_path)
    (step,) = report["results"]["sqlite"]["steps"]
    assert step["events"] == 200
    for name in ("replay", "verify_chain", "verify_compare", "export", "verify_file"):
        assert step[name]["events_per_s"]["median"] > 0, name
    assert step["replay"]["chain_ok"] and step["verify_compare"]["ok"]
    assert report["warnings"] == []


def test_import_bench_reports_rows_per_s_and_a_clean_check(tmp_path: Path) -> None:
    report = run_benchmark("import_bench", tmp_path)
    assert report["warnings"] == []
    for workload in ("fixtures", "grown"):
        figures = report["results"]["sqlite"][workload]
        assert figures["rows_per_s"]["median"] > 0 and figures["all_checks_clean"]
    assert report["results"]["sqlite"]["durability"]["synchronous"] == "FULL"


def test_projections_bench_rebuilds_and_instruments_the_one_pass(tmp_path: Path) -> None:
    report = run_benchmark("projections_bench", tmp_path)
    result = report["results"]["sqlite"]
    events = result["workload"]["events"]
    assert result["rebuild"]["events_applied"] == events == 800
    assert result["rebuild"]["verified"]["ok"] and result["rebuild"]["events_per_s"]["median"] > 0
    assert result["rebuild_parallel"]["events_applied"] == events
    split = result["breakdown"]["instrumented_rebuild"]
    counts = split["counts"]
    assert counts["rows_read"] == counts["decode_calls"] == counts["events_applied"]
    assert counts["events_applied"] == result["breakdown"]["events"] == 800
    assert counts["decode_calls_untrusted"] == 0
    assert counts["statements_from_apply"] > counts["statements_after_fold"] > 0
    assert counts["statements_executed"] > counts["statements_after_fold"]
    assert 0 < counts["driver_calls"] < counts["statements_executed"]
    for part in ("read", "decode", "replay_statements", "execute", "shadow_ddl"):
        assert split["total"][f"{part}_s"] > 0, part
    per_projection = split["replay_statements_per_projection"]
    assert len(set(per_projection) - {"how"}) == 9
    assert split["engine_restored_after"]


def test_statemanager_bench_measures_every_write_and_read(tmp_path: Path) -> None:
    report = run_benchmark("statemanager_bench", tmp_path, "--no-peer")
    figures = report["results"]["sqlite"]["chronicle"]
    for name in (
        "save_state_cas_per_s",
        "save_portfolio_snapshot_per_s",
        "save_ledger_entry_per_s",
    ):
        assert figures[name]["median"] > 0, name
    assert report["peer"]["available"] is False


@pytest.mark.parametrize(
    "name", ["eventstore", "projections", "statemanager", "operator", "import"]
)
def test_every_benchmark_documents_its_command_line(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}_bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--smoke" in done.stdout and "--quick" in done.stdout and "--backend" in done.stdout

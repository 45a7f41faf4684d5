"""Keep ``benchmarks/eventstore_bench.py`` from rotting: run it for a moment on SQLite.

Asserts on the shape of the report only, never on speed. Skipped when the
benchmark-only peer (``pip install -e '.[bench]'``) is not installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import eventstore_bench as bench

TINY = bench.Settings(
    write_seconds=0.05, read_seconds=0.02, warmup_seconds=0.01, repetitions=1, concurrency=4
)


def test_payloads_are_realistic_ledger_entries() -> None:
    sizes = bench.payload_sizes(bench.make_payloads(64))
    assert 200 <= sizes["min"] <= sizes["max"] <= 400


async def test_sqlite_suite_reports_both_libraries_and_the_aims() -> None:
    report = await bench.run(["sqlite"], TINY, bench.DEFAULT_PG_DSN, "smoke")
    json.dumps(report)  # the whole report is plain JSON
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


def test_command_line_parses() -> None:
    args = bench.parse_args(["--backend", "sqlite", "--quick", "--out", "x.json"])
    assert (args.backend, args.quick, str(args.out)) == ("sqlite", True, "x.json")


async def test_operator_bench_reports_every_figure() -> None:
    from benchmarks import operator_bench

    tiny = operator_bench.Settings(
        sizes=(200,), compare_max=200, repetitions=1, large_repetitions=1
    )
    report = await operator_bench.run(["sqlite"], tiny, bench.DEFAULT_PG_DSN, "smoke")
    json.dumps(report)  # the whole report is plain JSON
    (step,) = report["results"]["sqlite"]["steps"]
    assert step["events"] == 200
    for name in ("replay", "verify_chain", "verify_compare", "export", "verify_file"):
        assert step[name]["events_per_s"]["median"] > 0, name
    assert step["replay"]["chain_ok"] and step["verify_compare"]["ok"]
    assert report["warnings"] == []


async def test_import_bench_reports_rows_per_s_and_a_clean_check() -> None:
    from benchmarks import import_bench

    files = import_bench.fixture_files()[:2]
    settings = import_bench.Settings(repetitions=1, grown_cycles=2, grown_repetitions=1)
    report = await import_bench.run(["sqlite"], settings, bench.DEFAULT_PG_DSN, "smoke", "", files)
    json.dumps(report)
    assert report["warnings"] == []
    for workload in ("fixtures", "grown"):
        figures = report["results"]["sqlite"][workload]
        assert figures["rows_per_s"]["median"] > 0 and figures["all_checks_clean"]
    assert report["results"]["sqlite"]["durability"]["synchronous"] == "FULL"
    assert import_bench.parse_args(["--quick", "--backend", "sqlite"]).quick


async def test_projections_bench_instruments_the_one_pass_rebuild(tmp_path: Path) -> None:
    import dataclasses

    from benchmarks import projections_bench as proj
    from projections.models import ALL_PROJECTIONS

    url = f"sqlite:///{tmp_path / 'breakdown.db'}"
    out = await proj.breakdown(url, dataclasses.replace(proj.QUICK, breakdown_events=800))
    json.dumps(out)  # plain JSON
    split = out["instrumented_rebuild"]
    counts = split["counts"]
    assert counts["rows_read"] == counts["decode_calls"] == counts["events_applied"]
    assert counts["events_applied"] == out["events"] == 800
    assert counts["decode_calls_untrusted"] == 0
    assert counts["statements_from_apply"] > counts["statements_after_fold"] > 0
    assert counts["statements_executed"] > counts["statements_after_fold"]
    assert 0 < counts["driver_calls"] < counts["statements_executed"]
    for part in ("read", "decode", "replay_statements", "execute", "shadow_ddl"):
        assert split["total"][f"{part}_s"] > 0, part
    per_projection = split["replay_statements_per_projection"]
    assert set(per_projection) - {"how"} == {cls.name for cls in ALL_PROJECTIONS}
    # the instrument put the engine back as it was
    assert vars(proj.shadow_module)["decode_event"] is proj.decode_event
    assert all("fold" not in vars(cls) or cls.fold.__name__ == "fold" for cls in ALL_PROJECTIONS)

    child = await proj.rebuild_child(url)
    summary = proj.rebuild_summary([child], out["events"])
    json.dumps(summary)
    assert summary["events_applied"] == 800 and summary["events_per_s"]["median"] > 0
    assert all(set(p) == {"events"} for p in summary["per_projection"].values())
    assert summary["memory"]["rss_samples_last_run"][0]["events_applied"] > 0

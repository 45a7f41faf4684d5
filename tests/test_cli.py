"""The ``chronicle`` command as an operator runs it: a real process, real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def chronicle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemanager.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    done = chronicle("demo", "--cycles", "60", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chronicle.db").exists()  # the default store, in the working directory
    for heading in ("current state", "open registry", "NAV", "ledger", "audit chain"):
        assert heading in done.stdout
    assert "verified" in done.stdout


def test_demo_json_on_both_backends(store_url: str, tmp_path: Path) -> None:
    done = chronicle("demo", "--cycles", "40", "--json", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"]["version"] == 41  # one creation, then 40 CAS saves
    assert summary["nav"]["snapshots"] == 40
    assert summary["quant_stats"]["entries"] == 40
    assert summary["order"] == {"status": "partially_filled", "filled": "0.5", "fills": 1}
    assert len(summary["open_registry_rows"]) == 1
    assert summary["audit"]["chain_ok"] is True
    verify = chronicle("verify", "--url", store_url, "--json", cwd=tmp_path)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True


def test_bad_urls_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    done = chronicle("verify", "--url", "mysql://nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "unsupported store URL" in done.stderr


def test_writer_role_sql(tmp_path: Path) -> None:
    done = chronicle("writer-role", "runner", "--schema", "prod", cwd=tmp_path)
    assert done.returncode == 0
    assert 'GRANT SELECT, INSERT ON "prod".chronicle_events TO "runner";' in done.stdout


def test_rebuild_reports_and_keeps_the_rows(store_url: str, tmp_path: Path) -> None:
    assert chronicle("demo", "--cycles", "20", "--url", store_url, cwd=tmp_path).returncode == 0
    done = chronicle("rebuild", "--url", store_url, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by_name = {p["name"]: p["events"] for p in report["projections"]}
    assert by_name["state"] == 21 and by_name["nav"] == 20 and by_name["ledger"] == 20
    again = chronicle("demo", "--cycles", "5", "--url", store_url, "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["audit"]["chain_ok"]
    one = chronicle("rebuild", "--projection", "ledger", "--url", store_url, cwd=tmp_path)
    assert one.returncode == 0 and "rebuilt 1 read model(s)" in one.stdout
    assert "ledger" in one.stdout and "25 events" in one.stdout
    bad = chronicle("rebuild", "--projection", "nope", "--url", store_url, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown projection" in bad.stderr
    nobody = chronicle("rebuild", "--deployment", "nobody", "--url", store_url, cwd=tmp_path)
    assert nobody.returncode == 2 and "has no events" in nobody.stderr

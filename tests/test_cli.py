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

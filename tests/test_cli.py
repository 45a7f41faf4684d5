"""The ``chronicle`` command as an operator runs it: a real process, real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def chronicle(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemanager.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=None if env is None else {**os.environ, **env},
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


def test_rebuild_with_worker_processes_gives_the_same_read_models(
    store_url: str, tmp_path: Path
) -> None:
    assert chronicle("demo", "--cycles", "30", "--url", store_url, cwd=tmp_path).returncode == 0
    serial = chronicle("rebuild", "--url", store_url, "--json", cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr
    assert json.loads(serial.stdout)["jobs"] == 1  # a small log: no workers by default
    before = chronicle("verify", "--url", store_url, "--json", cwd=tmp_path)
    assert before.returncode == 0 and json.loads(before.stdout)["ok"] is True
    done = chronicle("rebuild", "--jobs", "2", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "split between 2 worker processes" in done.stdout
    # verify replays the log and compares every read-model row with what is stored
    after = chronicle("verify", "--url", store_url, "--json", cwd=tmp_path)
    assert after.returncode == 0 and json.loads(after.stdout)["ok"] is True, after.stdout
    zero = chronicle("rebuild", "--jobs", "0", "--url", store_url, cwd=tmp_path)
    assert zero.returncode == 2 and "--jobs must be at least 1" in zero.stderr


def test_demo_refuses_a_bad_url_before_it_starts(tmp_path: Path) -> None:
    for url, message in (
        ("notaurl", "unsupported store URL"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot open the store"),
        (f"sqlite:///{tmp_path}/no/such/dir/x.db", "does not exist"),
    ):
        done = chronicle("demo", "--cycles", "2", "--url", url, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (url, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == ""
    empty = chronicle("demo", "--url", "", cwd=tmp_path)
    assert empty.returncode == 2 and "--url is empty" in empty.stderr
    assert not (tmp_path / "chronicle.db").exists()  # nothing fell back to the default


def test_the_store_url_comes_from_chronicle_url(store_url: str, tmp_path: Path) -> None:
    env = {"CHRONICLE_URL": store_url}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert chronicle("demo", "--cycles", "5", cwd=elsewhere, env=env).returncode == 0
    stats = chronicle("stats", "--json", cwd=elsewhere, env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["deployments"], stats.stdout
    assert not (elsewhere / "chronicle.db").exists()  # the URL came from the environment


def test_rebuild_counts_each_log_event_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert chronicle("demo", "--cycles", "30", "--url", url, cwd=tmp_path).returncode == 0
    stats = json.loads(chronicle("stats", "--url", url, "--json", cwd=tmp_path).stdout)
    logged = sum(stats["events_per_type"].values())
    done = json.loads(chronicle("rebuild", "--url", url, "--json", cwd=tmp_path).stdout)
    # a ledger entry committed with a registry row feeds two read models
    assert done["events"] == logged < sum(p["events"] for p in done["projections"])


def test_a_closed_pipe_and_an_unwritable_export_are_not_tracebacks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert chronicle("demo", "--cycles", "300", "--url", url, cwd=tmp_path).returncode == 0
    piped = subprocess.run(
        f"{sys.executable} -m statemanager.cli stats --url {url} | head -1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout.startswith("log") and "Traceback" not in piped.stderr, piped.stderr
    stats = json.loads(chronicle("stats", "--url", url, "--json", cwd=tmp_path).stdout)
    dep = stats["deployments"][0]["deployment_id"]
    into_dir = chronicle("export", "--url", url, "--deployment", dep, "--out", ".", cwd=tmp_path)
    assert into_dir.returncode == 2 and "is a directory" in into_dir.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_inspecting_a_sqlite_store_changes_no_byte_of_it(tmp_path: Path) -> None:
    """Opening a store at the current schema only reads it: even a store whose
    append-only trigger was dropped is left as found (evidence, not repaired)."""
    import hashlib
    import sqlite3

    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    assert chronicle("demo", "--cycles", "5", "--url", url, cwd=tmp_path).returncode == 0
    db = sqlite3.connect(path)
    (trigger,) = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%UPDATE ON%'"
    ).fetchone()
    db.execute(f"DROP TRIGGER {trigger}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for verb in (("verify", "--chain-only"), ("stats",)):
        done = chronicle(*verb, "--url", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_verify_goes_on_past_a_broken_chain(tmp_path: Path) -> None:
    """One deployment's altered event stops neither the other deployments' chains
    nor the comparison of their read models."""
    import sqlite3

    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    for dep in ("dep-a", "dep-b"):
        done = chronicle("demo", "--cycles", "5", "--deployment", dep, "--url", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    db = sqlite3.connect(path)
    for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute(
        "UPDATE chronicle_events SET data = data || x'00' "
        "WHERE deployment_id = 'dep-a' AND deployment_seq = 3"
    )
    db.execute("UPDATE rm_ledger SET gas_usd = '9.99' WHERE deployment_id = 'dep-b'")
    db.commit()
    db.close()
    done = chronicle("verify", "--url", url, "--json", cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["first_bad_deployment_id"], report["first_bad_deployment_seq"]) == ("dep-a", 3)
    assert report["broken_deployments"] == ["dep-a"] and report["deployments_checked"] == 2
    assert {d["deployment_id"] for d in report["differences"]} == {"dep-b"}
    text = chronicle("verify", "--url", url, cwd=tmp_path).stdout
    assert "BROKEN: deployment 'dep-a' event #3" in text and "rm_ledger (ledger)" in text

"""Tests of the PostgreSQL launcher (tests/pgserver.py) that the suite's fixtures rely on.

They do the real thing (connect to the local server, initdb and start a
throwaway cluster, stop it) because the launcher's job is process and file
management that mocks would not exercise.  The throwaway tests are skipped
only when no PostgreSQL binaries exist at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pgserver  # tests/ is no package, so pytest puts tests/ itself on sys.path
import pytest

HAVE_PG_BINARIES = pgserver.find_pg_bindir() is not None
needs_pg_binaries = pytest.mark.skipif(
    not HAVE_PG_BINARIES,
    reason="no PostgreSQL binaries (initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)",
)


def _fetch_identity(dsn: str) -> tuple[int, str, str]:
    """Run ``SELECT 1`` plus who/where we are on ``dsn``, synchronously."""

    async def query() -> tuple[int, str, str]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            row = await conn.fetchrow("SELECT 1 AS one, current_user AS u, current_database() AS d")
            assert row is not None
            return int(row["one"]), str(row["u"]), str(row["d"])
        finally:
            await conn.close()

    return asyncio.run(query())


def _default_server_or_skip() -> None:
    """Skip unless the conventional server on 127.0.0.1:5432 answers."""
    error = pgserver.can_connect(pgserver.DEFAULT_DSN, 2.0)
    if error is not None:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({error})")


def test_default_server_is_found_and_left_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no env DSN, the server on 127.0.0.1:5432 is used, and stop() leaves it alone."""
    _default_server_or_skip()
    monkeypatch.delenv(pgserver.ENV_DSN, raising=False)

    server = pgserver.find_or_start_postgres(try_throwaway=False)

    assert server is not None
    assert server.dsn == pgserver.DEFAULT_DSN
    assert not server.started_here
    assert server.base_dir is None
    assert _fetch_identity(server.dsn) == (1, "postgres", "test")
    reason = pgserver.last_failure_reason()
    assert reason is not None and pgserver.ENV_DSN in reason
    server.stop()
    assert pgserver.can_connect(pgserver.DEFAULT_DSN, 2.0) is None, "stop() hit a foreign server"


def test_env_dsn_wins_and_is_used_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHRONICLE_TEST_PG_DSN is returned exactly as given (query parameters included)."""
    _default_server_or_skip()
    dsn = pgserver.DEFAULT_DSN + "?application_name=chronicle-pgserver-test"
    monkeypatch.setenv(pgserver.ENV_DSN, dsn)

    server = pgserver.find_or_start_postgres(try_default=False, try_throwaway=False)

    assert server is not None
    assert server.dsn == dsn
    assert not server.started_here


def test_unreachable_env_dsn_fails_loudly_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit DSN that does not answer raises instead of silently falling back."""
    port = pgserver._free_port()  # nothing listens there
    monkeypatch.setenv(pgserver.ENV_DSN, f"postgresql://postgres:secret@127.0.0.1:{port}/test")

    started = time.monotonic()
    with pytest.raises(pgserver.PostgresUnavailableError) as info:
        pgserver.find_or_start_postgres()

    assert time.monotonic() - started < 6.0
    assert pgserver.ENV_DSN in str(info.value)
    assert "secret" not in str(info.value), "the password leaked into the error"


@needs_pg_binaries
def test_throwaway_cluster_starts_answers_and_stops() -> None:
    """Forcing the throwaway path starts a private cluster that stop() fully removes."""
    server = pgserver.find_or_start_postgres(try_env=False, try_default=False)
    assert server is not None, f"no throwaway cluster: {pgserver.last_failure_reason()}"
    try:
        assert server.started_here
        assert server.base_dir is not None and server.base_dir.is_dir()
        url = urlsplit(server.dsn)
        assert (url.scheme, url.hostname, url.username, url.path) == (
            "postgresql",
            "127.0.0.1",
            "postgres",
            "/test",
        )
        assert url.port is not None and url.port != 5432
        assert _fetch_identity(server.dsn) == (1, "postgres", "test")
    finally:
        server.stop()

    assert not server.base_dir.exists(), "stop() left the cluster's temp dir behind"
    assert pgserver.can_connect(server.dsn, 1.0) is not None, "the cluster still answers"
    server.stop()  # idempotent


@needs_pg_binaries
def test_throwaway_cluster_is_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    """A caller that forgets stop() still leaves no server or files behind (atexit)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(pgserver.__file__).parent)!r})
        import pgserver
        server = pgserver.find_or_start_postgres(try_env=False, try_default=False)
        assert server is not None, pgserver.last_failure_reason()
        print(json.dumps({{"dsn": server.dsn, "base_dir": str(server.base_dir)}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])

    assert not Path(info["base_dir"]).exists(), "atexit did not remove the cluster"
    assert pgserver.can_connect(info["dsn"], 1.0) is not None, "atexit did not stop the cluster"


@needs_pg_binaries
def test_root_without_unprivileged_user_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root with no account to drop to, the launcher gives up with a printable reason."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pgserver, "_UNPRIVILEGED_USERS", ("chronicle-no-such-user",))

    server = pgserver.find_or_start_postgres(try_env=False, try_default=False)

    assert server is None
    reason = pgserver.last_failure_reason()
    assert reason is not None and "no unprivileged user" in reason


def test_missing_binaries_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without initdb/pg_ctl the throwaway path returns None and says so."""
    monkeypatch.setattr(pgserver, "find_pg_bindir", lambda: None)

    assert pgserver.find_or_start_postgres(try_env=False, try_default=False) is None
    reason = pgserver.last_failure_reason()
    assert reason is not None and "initdb" in reason


def test_ci_true_means_postgres_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CI=true switch the fixture uses to fail instead of skip."""
    monkeypatch.setenv("CI", "true")
    assert pgserver.postgres_required()
    monkeypatch.setenv("CI", "false")
    assert not pgserver.postgres_required()
    monkeypatch.delenv("CI")
    assert not pgserver.postgres_required()

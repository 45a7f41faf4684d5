"""Find or start the PostgreSQL server the conformance suite runs against.

Policy (docs/DESIGN.md, "Tests"): PostgreSQL comes from ``CHRONICLE_TEST_PG_DSN``,
else a server on 127.0.0.1:5432, else a throwaway cluster started from the
local PostgreSQL binaries; when ``CI=true``, a missing PostgreSQL fails the run
instead of skipping.  This module implements the first three steps; the
CI/skip decision is left to the caller (see :func:`postgres_required`) because
only the caller knows whether it is a pytest fixture or a script.

Everything here is synchronous on purpose: it is called from a session-scoped
pytest fixture before any event loop exists, and probing a server must not
depend on (or disturb) the loop that the tests later run in.  Only the stdlib
and asyncpg are used, so the suite needs no extra tooling (no pytest-postgresql,
no docker).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

__all__ = [
    "DEFAULT_DSN",
    "ENV_DSN",
    "PostgresServer",
    "PostgresUnavailableError",
    "can_connect",
    "find_or_start_postgres",
    "find_pg_bindir",
    "last_failure_reason",
    "postgres_required",
]

ENV_DSN = "CHRONICLE_TEST_PG_DSN"
"""Environment variable naming an explicit server; it wins over everything."""

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""The conventional local server (developer machines, CI service containers)."""

ENV_DSN_TIMEOUT = 3.0
"""Seconds an explicit DSN gets to answer; the user asked for it, so be patient."""

DEFAULT_DSN_TIMEOUT = 2.0
"""Seconds the default server gets; short, since it is usually simply absent."""

TEST_DATABASE = "test"
SUPERUSER = "postgres"

# Users that may own a throwaway cluster when we run as root: initdb and the
# postmaster refuse to run as root, so the binaries must run as someone else.
_UNPRIVILEGED_USERS: tuple[str, ...] = ("postgres", "nobody")

# Environment variables that libpq-based tools (pg_ctl) honour and that could
# point them at some other server or data directory than the one we started.
_PG_ENV_TO_DROP: tuple[str, ...] = (
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
)

_last_failure: str | None = None


class PostgresUnavailableError(RuntimeError):
    """Raised when the server named by ``CHRONICLE_TEST_PG_DSN`` does not answer.

    Falling back silently would run the suite against a server the user did not
    ask for (or skip it), which hides a broken setup; failing loudly does not.
    """


@dataclass(frozen=True)
class _RunAs:
    """Identity to run the PostgreSQL binaries as (None ids: as ourselves)."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None


@dataclass
class PostgresServer:
    """A usable PostgreSQL server: where to connect and how to let go of it.

    ``dsn`` is a ``postgresql://user@host:port/dbname`` URL on which the
    superuser connects without a password (trust auth).  ``stop()`` stops the
    cluster only when ``started_here`` is true: a server we merely found belongs
    to someone else.  ``base_dir`` is the throwaway cluster's temp directory
    (None for a found server); it is removed by ``stop()``.
    """

    dsn: str
    started_here: bool = False
    base_dir: Path | None = None
    _pg_ctl: Path | None = field(default=None, repr=False)
    _run_as: _RunAs = field(default_factory=_RunAs, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory, if we started it."""
        return None if self.base_dir is None else self.base_dir / "data"

    def stop(self) -> None:
        """Stop a cluster we started and delete its files; idempotent.

        Uses ``pg_ctl stop -m immediate`` because the data is throwaway and a
        clean checkpoint only costs time.  If pg_ctl fails, the postmaster is
        signalled directly so a test run never leaks a server process.
        """
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if not self.started_here or self.base_dir is None:
            return
        data_dir = self.base_dir / "data"
        stopped = False
        if self._pg_ctl is not None and (data_dir / "postmaster.pid").exists():
            result = _run(
                [
                    str(self._pg_ctl),
                    "-D",
                    str(data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "20",
                    "stop",
                ],
                self._run_as,
                cwd=self.base_dir,
                timeout=30.0,
            )
            stopped = result.returncode == 0
        if not stopped:
            _kill_postmaster(data_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def last_failure_reason() -> str | None:
    """Why the last :func:`find_or_start_postgres` call found nothing (or what it skipped).

    Kept as module state rather than an exception because "no PostgreSQL" is a
    normal outcome (the caller skips), yet the caller still wants to print why.
    """
    return _last_failure


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the run instead of skipping (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def can_connect(dsn: str, timeout: float = DEFAULT_DSN_TIMEOUT) -> str | None:
    """Try to connect to ``dsn`` and run ``SELECT 1``; return None on success, else the error.

    Returning the error text instead of raising lets callers collect one reason
    per attempted source for :func:`last_failure_reason`.
    """
    try:
        _run_sync(_probe(dsn, timeout), timeout + 2.0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def find_pg_bindir() -> Path | None:
    """Find the directory holding ``initdb`` and ``pg_ctl``.

    PATH comes first, then the newest ``/usr/lib/postgresql/*/bin`` (and
    ``/usr/pgsql-*/bin``, the RPM layout), compared numerically.

    PATH entries are often symlinks (e.g. /usr/local/bin/initdb), so they are
    resolved: pg_ctl looks for the ``postgres`` executable next to its real
    location, and both tools must come from the same installation.
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        for candidate in (Path(initdb).resolve().parent, Path(initdb).parent):
            if _has_binaries(candidate):
                return candidate
    pattern_dirs = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    pattern_dirs += [Path(p) for p in glob.glob("/usr/pgsql-*/bin")]
    for candidate in sorted(pattern_dirs, key=_version_key, reverse=True):
        if _has_binaries(candidate):
            return candidate
    return None


def find_or_start_postgres(
    *,
    try_env: bool = True,
    try_default: bool = True,
    try_throwaway: bool = True,
) -> PostgresServer | None:
    """Return a reachable PostgreSQL server following the test policy, or None.

    Order: ``CHRONICLE_TEST_PG_DSN`` (used as is; if it does not answer within
    ~3 s, :class:`PostgresUnavailableError` is raised because the user asked for
    it explicitly), then :data:`DEFAULT_DSN`, then a throwaway cluster from the
    local binaries.  The keyword flags exist so the launcher's own tests can
    force one path.  Afterwards :func:`last_failure_reason` says why each
    earlier source was passed over (and, on None, why nothing was found).
    """
    global _last_failure
    reasons: list[str] = []
    try:
        return _find(reasons, try_env=try_env, try_default=try_default, try_throwaway=try_throwaway)
    finally:
        _last_failure = "; ".join(reasons) or None


def _find(
    reasons: list[str], *, try_env: bool, try_default: bool, try_throwaway: bool
) -> PostgresServer | None:
    """Walk the sources in policy order, appending one reason per source passed over."""
    if try_env:
        env_dsn = os.environ.get(ENV_DSN, "").strip()
        if env_dsn:
            error = can_connect(env_dsn, ENV_DSN_TIMEOUT)
            if error is not None:
                message = (
                    f"{ENV_DSN} is set to {_redact(env_dsn)!r} but no usable server "
                    f"answered within {ENV_DSN_TIMEOUT:.0f} s: {error}"
                )
                reasons.append(message)
                raise PostgresUnavailableError(message)
            return PostgresServer(dsn=env_dsn)
        reasons.append(f"{ENV_DSN} is not set")

    if try_default:
        error = can_connect(DEFAULT_DSN, DEFAULT_DSN_TIMEOUT)
        if error is None:
            return PostgresServer(dsn=DEFAULT_DSN)
        reasons.append(f"{DEFAULT_DSN} did not answer: {error}")

    if try_throwaway:
        server, reason = _start_throwaway()
        if server is not None:
            return server
        reasons.append(f"throwaway cluster: {reason}")

    if not (try_env or try_default or try_throwaway):
        reasons.append("every source was disabled")
    return None


# --------------------------------------------------------------------------- #
# Throwaway cluster
# --------------------------------------------------------------------------- #


def _start_throwaway() -> tuple[PostgresServer | None, str]:
    """Create, start and prepare a private cluster; return it or the reason it failed.

    The cluster lives entirely in a fresh temp dir (data, unix socket, log), on
    a free loopback port, with durability off (fsync) since nothing in it
    outlives the test run.  It is registered with atexit so a forgetful caller
    (or a crashed test session that still reaches interpreter exit) does not
    leak a postmaster.
    """
    bindir = find_pg_bindir()
    if bindir is None:
        return None, "no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin"
    run_as, reason = _choose_identity()
    if reason is not None:
        return None, reason

    try:
        base_dir = Path(tempfile.mkdtemp(prefix="chronicle-pg-", dir=_temp_parent(run_as)))
    except OSError as exc:
        return None, f"cannot create a temp dir: {exc}"
    server = PostgresServer(
        dsn="",
        started_here=True,
        base_dir=base_dir,
        _pg_ctl=bindir / "pg_ctl",
        _run_as=run_as,
    )
    # Registered before anything can start, so every exit path cleans up.
    atexit.register(server.stop)
    try:
        reason = _init_and_start(server, bindir, run_as)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        server.stop()
        return None, reason
    return server, ""


def _init_and_start(server: PostgresServer, bindir: Path, run_as: _RunAs) -> str | None:
    """Run initdb, start the postmaster, create the test database; None on success."""
    assert server.base_dir is not None
    base_dir = server.base_dir
    data_dir = base_dir / "data"
    socket_dir = base_dir / "socket"
    log_file = base_dir / "server.log"
    socket_dir.mkdir()
    if run_as.uid is not None and run_as.gid is not None:
        os.chown(base_dir, run_as.uid, run_as.gid)
        os.chown(socket_dir, run_as.uid, run_as.gid)

    result = _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        run_as,
        cwd=base_dir,
        timeout=120.0,
    )
    if result.returncode != 0:
        return (
            "initdb failed"
            + (f" as user {run_as.name!r}" if run_as.name else "")
            + ": "
            + _output(result)
        )

    last_error = "not started"
    for _attempt in range(3):  # a free port can be taken between probing it and binding it
        port = _free_port()
        _append_config(
            data_dir / "postgresql.conf",
            {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": _quote_conf(str(socket_dir)),
                "fsync": "off",
                "full_page_writes": "off",
            },
        )
        result = _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log_file),
                "-w",
                "-t",
                "30",
                "start",
            ],
            run_as,
            cwd=base_dir,
            timeout=45.0,
        )
        if result.returncode == 0:
            admin_dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
            try:
                _run_sync(_execute(admin_dsn, f"CREATE DATABASE {TEST_DATABASE}", 10.0), 15.0)
            except Exception as exc:
                return f"server started but CREATE DATABASE failed: {type(exc).__name__}: {exc}"
            server.dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{TEST_DATABASE}"
            return None
        last_error = f"pg_ctl start failed: {_output(result)}; server log: {_tail(log_file)}"
        _kill_postmaster(data_dir)
    return last_error


def _choose_identity() -> tuple[_RunAs, str | None]:
    """Pick who runs initdb/postgres: ourselves, or an unprivileged user when we are root.

    PostgreSQL refuses to run as root (a compromised server must not own the
    machine), so as root we switch to an existing unprivileged account using
    subprocess's own setuid support, which needs no runuser/setpriv/sudo.
    """
    if os.geteuid() != 0:
        return _RunAs(), None
    for name in _UNPRIVILEGED_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=name), None
    return _RunAs(), (
        "running as root and no unprivileged user ("
        + ", ".join(_UNPRIVILEGED_USERS)
        + ") exists to run initdb/postgres as; set "
        + ENV_DSN
        + " or run the tests as a normal user"
    )


def _temp_parent(run_as: _RunAs) -> str | None:
    """Parent for the temp dir: the default one, unless another user cannot reach it.

    When we switch users, every ancestor of the cluster directory must be
    searchable by that user; a TMPDIR under /root would not be, so use /tmp.
    """
    if run_as.uid is None:
        return None
    default = Path(tempfile.gettempdir()).resolve()
    for ancestor in (default, *default.parents):
        try:
            mode = ancestor.stat().st_mode
        except OSError:
            return "/tmp"
        if not mode & stat.S_IXOTH:
            return "/tmp"
    return str(default)


def _run(
    argv: Sequence[str],
    run_as: _RunAs,
    *,
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as ``run_as``; a tool that cannot even start reports exit -1.

    The working directory is the cluster's own temp dir because the
    unprivileged user may not be able to read the caller's cwd (tools complain
    and some refuse).  PG* variables are dropped so nothing redirects the tool.
    """
    env = {k: v for k, v in os.environ.items() if k not in _PG_ENV_TO_DROP}
    env["LC_ALL"] = "C"
    if run_as.uid is not None:
        env["HOME"] = str(cwd)
        env["USER"] = env["LOGNAME"] = run_as.name or ""
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(list(argv), -1, "", f"{type(exc).__name__}: {exc}")


def _kill_postmaster(data_dir: Path) -> None:
    """Last-resort stop: SIGQUIT the postmaster named in postmaster.pid, then wait briefly."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except OSError:
        return
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _append_config(conf: Path, settings: Mapping[str, str]) -> None:
    """Append settings to postgresql.conf; later lines win, so retries just append again.

    Writing the file (rather than ``pg_ctl -o ...``) avoids shell-quoting the
    socket path, which pg_ctl passes through ``/bin/sh``.
    """
    with conf.open("a", encoding="utf-8") as fh:
        fh.write("\n# chronicle throwaway test cluster\n")
        for key, value in settings.items():
            fh.write(f"{key} = {value}\n")


def _quote_conf(value: str) -> str:
    """Quote a string for postgresql.conf (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _has_binaries(directory: Path) -> bool:
    """True if ``directory`` holds executable initdb and pg_ctl."""
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort key for ``.../<version>/bin`` so that 15 > 9.6 (numeric, not lexical)."""
    match = re.search(r"(\d+(?:\.\d+)*)", bindir.parent.name)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _output(result: subprocess.CompletedProcess[str]) -> str:
    """Condensed stderr/stdout of a failed tool run, for the failure reason."""
    text = (result.stderr or "").strip() or (result.stdout or "").strip()
    return f"exit {result.returncode}: {text[-800:]}" if text else f"exit {result.returncode}"


def _tail(path: Path, chars: int = 800) -> str:
    """Last characters of the server log, for the failure reason."""
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty)"
    except OSError:
        return "(no log)"


def _redact(dsn: str) -> str:
    """Hide a password in a DSN before it goes into an error message."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)


# --------------------------------------------------------------------------- #
# Synchronous wrappers around asyncpg
# --------------------------------------------------------------------------- #


async def _probe(dsn: str, wait_s: float) -> None:
    """Connect and run ``SELECT 1``: a server that accepts TCP but not our login is not usable."""
    await _execute(dsn, "SELECT 1", wait_s)


async def _execute(dsn: str, sql: str, wait_s: float) -> None:
    """Run one statement on a fresh connection, always closing it."""
    conn = await asyncpg.connect(dsn, timeout=wait_s, command_timeout=wait_s)
    try:
        await conn.execute(sql)
    finally:
        await conn.close(timeout=wait_s)


def _run_sync(coro: Coroutine[Any, Any, None], timeout: float) -> None:
    """Run a coroutine to completion from synchronous code.

    Normally there is no running loop (session fixture setup), so
    ``asyncio.run`` is used; if the caller is already inside a loop, the
    coroutine runs on a private loop in a worker thread instead of failing.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result(timeout=timeout)

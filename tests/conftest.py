"""One conformance suite, run on every backend.

A test that takes ``store`` or ``store_url`` runs twice: on a fresh SQLite file
and in a fresh PostgreSQL schema. PostgreSQL comes from ``pgserver`` (an explicit
DSN, the local server, or a throwaway cluster); when none is available the
PostgreSQL half is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import pgserver
import pytest

import eventstore

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A superuser DSN of a running PostgreSQL, or skip/fail as the policy says."""
    server = pgserver.find_or_start_postgres()
    if server is None:
        reason = f"no PostgreSQL available: {pgserver.last_failure_reason()}"
        if pgserver.postgres_required():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield server.dsn
    finally:
        server.stop()


def with_params(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@pytest.fixture
async def pg_schema(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh schema, dropped after the test, so tests never see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def settled(store: eventstore.EventStore, within: float = 20.0) -> None:
    """Wait until every committed event is readable through ``read_all``.

    On PostgreSQL the global log is held back while any transaction older than an
    event's is open anywhere on the server (another test run, a benchmark); tests
    that read the whole log wait for that to pass instead of flaking.
    """
    import asyncio

    deadline = asyncio.get_running_loop().time() + within
    while (await store.horizon()).held_back:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("read_all stayed held back by an open transaction")
        await asyncio.sleep(0.05)


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend_name == "sqlite":
        return f"sqlite:///{tmp_path / 'chronicle.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return with_params(dsn, schema=schema)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventstore.EventStore]:
    async with eventstore.connect(store_url) as opened:
        yield opened

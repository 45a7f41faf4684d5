"""Store URLs: what each form means and what is refused (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventstore
from eventstore.url import PostgresURL, SQLiteURL, parse_url


def test_sqlite_relative_and_absolute_paths(tmp_path: Path) -> None:
    assert parse_url("sqlite:///chronicle.db") == SQLiteURL("chronicle.db")
    absolute = parse_url(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(absolute, SQLiteURL) and absolute.path == f"{tmp_path}/x.db"


def test_sqlite_durability_setting() -> None:
    assert parse_url("sqlite:///a.db").synchronous == "full"  # type: ignore[union-attr]
    normal = parse_url("sqlite:///a.db?synchronous=NORMAL")
    assert isinstance(normal, SQLiteURL) and normal.synchronous == "normal"


def test_postgres_url_keeps_driver_params_and_takes_ours() -> None:
    url = parse_url("postgresql://u@h:5433/db?schema=tenant_1&pool_max=32&sslmode=disable")
    assert url == PostgresURL(
        dsn="postgresql://u@h:5433/db?sslmode=disable", schema="tenant_1", pool_max=32
    )
    assert isinstance(parse_url("postgres://u@h/db"), PostgresURL)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "chronicle.db",
        "mysql://u@h/db",
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:///a.db?synchronous=off",
        "sqlite:///a.db?colour=blue",
        "sqlite:////no/such/dir/x.db",
        "postgresql:///db",
        "postgresql://u@h:notaport/db",
        "postgresql://u@h/db?schema=bad-name",
        "postgresql://u@h/db?pool_max=0",
        "postgresql://u@h/db?pool_max=many",
    ],
)
def test_malformed_urls_get_a_clear_error(bad: str) -> None:
    with pytest.raises(eventstore.InvalidURL):
        parse_url(bad)


async def test_connect_refuses_a_malformed_url_before_touching_anything(tmp_path: Path) -> None:
    with pytest.raises(eventstore.InvalidURL, match="sqlite:///"):
        await eventstore.connect(f"sqlite://{tmp_path}/x.db")
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a local tmp dir

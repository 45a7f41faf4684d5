"""Store URLs: which backend, where, and with which durability and pool settings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InvalidURL

DEFAULT_SQLITE_PATH = "chronicle.db"
DEFAULT_URL = f"sqlite:///{DEFAULT_SQLITE_PATH}"
_SYNCHRONOUS = ("full", "normal")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class SQLiteURL:
    path: str
    synchronous: str = "full"
    """``full``: a committed append survives power loss; ``normal``: it survives a
    crash of the process but the last commits may be lost on power loss."""
    poll_interval: float = 0.2


@dataclass(frozen=True)
class PostgresURL:
    dsn: str
    """What asyncpg receives: the URL without Chronicle's own parameters."""
    schema: str = "public"
    pool_min: int = 1
    pool_max: int = 20
    poll_interval: float = 1.0


def parse_url(url: str) -> SQLiteURL | PostgresURL:
    if not isinstance(url, str) or not url:
        raise InvalidURL("the store URL is empty; use sqlite:///path.db or postgresql://...")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "sqlite":
        return _sqlite(url, parts.netloc, parts.path, params)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, parts, params)
    raise InvalidURL(
        f"unsupported store URL {url!r}: use sqlite:///relative.db, sqlite:////abs/path.db "
        "or postgresql://user@host:port/db"
    )


def _sqlite(url: str, netloc: str, path: str, params: dict[str, str]) -> SQLiteURL:
    if netloc:
        raise InvalidURL(
            f"{url!r}: a SQLite URL has no host; write sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    if not path.startswith("/") or len(path) < 2:
        raise InvalidURL(f"{url!r} names no file; write sqlite:///chronicle.db")
    file_path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
    synchronous = params.pop("synchronous", "full").lower()
    if synchronous not in _SYNCHRONOUS:
        raise InvalidURL(f"{url!r}: synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    poll = _number(url, params.pop("poll_interval", "0.2"), "poll_interval")
    if params:
        raise InvalidURL(f"{url!r}: unknown parameter(s) {', '.join(sorted(params))}")
    directory = os.path.dirname(os.path.abspath(file_path))
    if not os.path.isdir(directory):
        raise InvalidURL(f"{url!r}: directory {directory} does not exist")
    return SQLiteURL(file_path, synchronous, poll)


def _postgres(url: str, parts: object, params: dict[str, str]) -> PostgresURL:
    from urllib.parse import SplitResult

    assert isinstance(parts, SplitResult)
    if not parts.hostname and "host" not in params:
        raise InvalidURL(f"{url!r} names no host; write postgresql://user@host:port/db")
    try:
        _ = parts.port
    except ValueError as exc:
        raise InvalidURL(f"{url!r}: the port is not a number") from exc
    schema = params.pop("schema", "public")
    if not _SCHEMA_NAME.match(schema):
        raise InvalidURL(f"{url!r}: schema must be a plain SQL identifier, got {schema!r}")
    pool_min = int(_number(url, params.pop("pool_min", "1"), "pool_min"))
    pool_max = int(_number(url, params.pop("pool_max", "20"), "pool_max"))
    if not 0 <= pool_min <= pool_max or pool_max < 1:
        raise InvalidURL(f"{url!r}: need 0 <= pool_min <= pool_max and pool_max >= 1")
    poll = _number(url, params.pop("poll_interval", "1.0"), "poll_interval")
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(params), parts.fragment))
    return PostgresURL(dsn, schema, pool_min, pool_max, poll)


def _number(url: str, text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidURL(f"{url!r}: {name} must be a number, got {text!r}") from exc
    if value < 0:
        raise InvalidURL(f"{url!r}: {name} must not be negative")
    return value

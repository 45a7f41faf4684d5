"""``StateManager`` configuration, and the one Chronicle store URL it resolves to.

The dataclasses keep the reference's names, fields and defaults
(docs/reference-semantics.md sections 2.2 and 2.3) so that runner code building
an SDK ``StateManagerConfig`` builds a Chronicle one unchanged. Where the SDK
picked one of two WARM backends, Chronicle opens one event store; its URL is
:meth:`StateManagerConfig.resolve_url`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Literal
from urllib.parse import quote, urlencode

from eventstore.url import DEFAULT_SQLITE_PATH

from .types import TierMetrics

__all__ = [
    "PostgresConfig",
    "SQLiteConfig",
    "SQLiteConfigLight",
    "StateManagerConfig",
    "WarmBackendType",
    "postgres_url",
    "sqlite_url",
]


class WarmBackendType(Enum):
    """Which database holds the WARM tier (values as the reference's ``auto()``)."""

    POSTGRESQL = auto()
    """Production: PostgreSQL."""
    SQLITE = auto()
    """Development and single-host deployments: a local SQLite file."""


@dataclass
class PostgresConfig:
    """PostgreSQL connection settings, used when no ``database_url`` is given."""

    host: str = "localhost"
    port: int = 5432
    database: str = "almanak"
    user: str = "almanak"
    password: str = ""
    pool_min_size: int = 2
    pool_max_size: int = 10

    @property
    def dsn(self) -> str:
        """The reference's DSN, verbatim (no escaping; see :func:`postgres_url`)."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"


def _default_db_path() -> str:
    """Chronicle's own default file, the same one the ``chronicle`` CLI opens.

    Deliberately not the SDK's ``./almanak_state.db`` (whose default also changed
    across SDK versions): a legacy SDK file must only ever be opened read-only,
    and opening one as a Chronicle store would add tables to it and switch it to
    WAL. A configuration that names a path explicitly gets exactly that path.
    """
    return DEFAULT_SQLITE_PATH


@dataclass
class SQLiteConfigLight:
    """The SQLite settings ``StateManagerConfig`` carries (the reference's two fields)."""

    db_path: str = field(default_factory=_default_db_path)
    wal_mode: bool = True


@dataclass
class SQLiteConfig:
    """The SDK's full SQLite settings, for code that builds a store directly.

    Chronicle's SQLite store always runs in WAL (``synchronous=FULL`` unless its
    URL says ``normal``) and manages its own connections and timeouts, so only
    ``db_path`` reaches it; the other fields are kept so such code still
    constructs and validates as before.
    """

    db_path: str = field(default_factory=_default_db_path)
    timeout: float = 30.0
    isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None = None
    check_same_thread: bool = False
    wal_mode: bool = True
    journal_mode: str = "DELETE"
    """Used by the SDK only when ``wal_mode`` is off."""
    busy_timeout: int = 5000
    """Milliseconds."""
    cache_size: int = -2000
    """Pages, or KiB when negative."""

    def __post_init__(self) -> None:
        """Refuse the values the reference refuses, at construction time."""
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.busy_timeout < 0:
            raise ValueError("busy_timeout must be non-negative")


@dataclass
class StateManagerConfig:
    """Configuration for ``StateManager``: tiers, HOT cache limits, WARM location.

    ``database_url`` (Chronicle: any store URL, ``sqlite:///...`` or
    ``postgresql://...``) takes precedence over ``warm_backend`` and the two
    backend configs; see :meth:`resolve_url`.
    """

    enable_hot: bool = True
    enable_warm: bool = True
    warm_backend: WarmBackendType = WarmBackendType.POSTGRESQL
    hot_cache_ttl_seconds: int = 0
    """0 means HOT entries never expire."""
    hot_cache_max_size: int = 1000
    database_url: str | None = None
    postgres_config: PostgresConfig = field(default_factory=PostgresConfig)
    sqlite_config: SQLiteConfigLight = field(default_factory=SQLiteConfigLight)
    metrics_callback: Callable[[TierMetrics], None] | None = None
    load_state_on_startup: bool = True

    def resolve_url(self) -> str:
        """The Chronicle store URL this configuration names.

        ``database_url`` when set (non-empty), returned unchanged: the store
        validates it when it connects. Otherwise ``sqlite_config.db_path`` when
        ``warm_backend`` is ``SQLITE``, and ``postgres_config`` for anything else
        (the reference also builds PostgreSQL for every value but ``SQLITE``).

        Differs from the reference in one way: there, ``database_url`` only
        replaced ``postgres_config`` and was ignored with ``warm_backend=SQLITE``.
        In Chronicle a URL names its backend itself, so it wins outright.
        """
        if self.database_url:
            return self.database_url
        if self.warm_backend is WarmBackendType.SQLITE:
            return sqlite_url(self.sqlite_config.db_path)
        return postgres_url(self.postgres_config)


def sqlite_url(db_path: str) -> str:
    """``sqlite:///<path>``; an absolute path gives ``sqlite:////abs/path``.

    The store takes the path after the third slash literally (no percent
    decoding), so the path is not escaped, and a path holding ``?`` or ``#`` (which
    a URL would cut off) is refused. So is an in-memory database: the store opens
    several connections to the file, and each ``:memory:`` connection would be a
    different, empty database.
    """
    if not db_path:
        raise ValueError("sqlite_config.db_path is empty; name a database file")
    if db_path == ":memory:" or db_path.startswith(":"):
        raise ValueError(
            f"SQLite path {db_path!r} is not a file: the Chronicle store needs a database "
            "file that several connections can open (an in-memory database is private to "
            "one connection); use a temporary file instead"
        )
    if "?" in db_path or "#" in db_path:
        raise ValueError(
            f"SQLite path {db_path!r} holds '?' or '#', which a store URL cannot carry"
        )
    return f"sqlite:///{db_path}"


def postgres_url(config: PostgresConfig) -> str:
    """``postgresql://user:password@host:port/database``, each part percent-encoded.

    Unlike :attr:`PostgresConfig.dsn`, a password holding ``@``, ``:`` or ``/``
    survives the trip through URL parsing. An IPv6 host is bracketed; a host that
    is a Unix-socket directory (``/var/run/postgresql``) goes in the ``host`` query
    parameter, where libpq and asyncpg look for it. The pool sizes are not part of
    the URL: Chronicle's pool settings are its own ``pool_min``/``pool_max``
    parameters, which a ``database_url`` can set.
    """
    user = quote(config.user, safe="")
    password = quote(config.password, safe="")
    database = quote(config.database, safe="")
    host = config.host
    if host.startswith("/"):
        query = urlencode({"host": host, "port": str(config.port)})
        return f"postgresql://{user}:{password}@/{database}?{query}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"postgresql://{user}:{password}@{host}:{config.port}/{database}"

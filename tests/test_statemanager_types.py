"""The storage-independent parts of ``statemanager``: errors, config, types,
migrations and positions, checked against the reference's documented behaviour
(docs/reference-semantics.md sections 2, 10, 11 and 12). No database."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import legacy_files
import pytest

import projections.errors
from eventstore.url import PostgresURL, SQLiteURL, parse_url
from statemanager.config import (
    PostgresConfig,
    SQLiteConfig,
    SQLiteConfigLight,
    StateManagerConfig,
    WarmBackendType,
    postgres_url,
    sqlite_url,
)
from statemanager.errors import (
    AccountingPersistenceError,
    AccountingWriteKind,
    ChainNotFoundError,
    CutoverStorageNotSupported,
    MigrationError,
    MigrationNotFoundError,
    RegistryAutoCollisionError,
    RollbackNotSafeError,
    StateConflictError,
    StateNotFoundError,
)
from statemanager.migrations import (
    MigrationRegistry,
    MigrationResult,
    RollbackInfo,
    StateMigration,
    auto_migrate,
    check_rollback_safety,
    get_registry,
    get_rollback_safe_version,
    migrate,
    migrate_state_data,
    migration,
    needs_migration,
    register_migration,
)
from statemanager.positions import PositionManager, PositionRecord, PositionType
from statemanager.types import StateData, StateTier, TierMetrics, compute_checksum

LEGACY_PE = legacy_files.DIRECTORY / "pendle_pt.sqlite"
T0 = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# =============================================================================
# errors
# =============================================================================


def test_state_conflict_error_attributes_and_message() -> None:
    exc = StateConflictError("dep-1", 3, 5)
    assert (exc.deployment_id, exc.expected_version, exc.actual_version) == ("dep-1", 3, 5)
    assert str(exc) == "State conflict for deployment dep-1: expected version 3, found 5"
    assert str(StateConflictError("dep-1", 3, 5, "custom")) == "custom"
    assert type(exc).__mro__[1] is Exception


def test_state_not_found_error() -> None:
    exc = StateNotFoundError("dep-1")
    assert exc.deployment_id == "dep-1"
    assert str(exc) == "State not found for deployment dep-1"
    assert str(StateNotFoundError("dep-1", message="gone")) == "gone"


def test_accounting_write_kinds_are_strings() -> None:
    assert [k.value for k in AccountingWriteKind] == [
        "ledger",
        "snapshot",
        "metrics",
        "accounting",
        "outbox",
    ]
    assert AccountingWriteKind("ledger") is AccountingWriteKind.LEDGER
    assert f"{AccountingWriteKind.OUTBOX}" == "outbox"


def test_accounting_persistence_error_normalises_the_kind() -> None:
    from_enum = AccountingPersistenceError(AccountingWriteKind.SNAPSHOT, "dep-1")
    from_text = AccountingPersistenceError("snapshot", "dep-1")
    for exc in (from_enum, from_text):
        assert exc.write_kind == "snapshot"
        assert type(exc.write_kind) is str
        assert exc.write_kind == AccountingWriteKind.SNAPSHOT
    with pytest.raises(ValueError):
        AccountingPersistenceError("ledgr")


def test_accounting_persistence_error_message_and_cause() -> None:
    cause = OSError("disk full")
    exc = AccountingPersistenceError(AccountingWriteKind.LEDGER, deployment_id="dep-1", cause=cause)
    assert exc.deployment_id == "dep-1" and exc.strategy_id == "dep-1"
    assert exc.cause is cause
    assert str(exc) == "Accounting write failed (ledger) deployment=dep-1: disk full"
    assert str(AccountingPersistenceError("metrics")) == "Accounting write failed (metrics)"
    assert AccountingPersistenceError("metrics").deployment_id == ""
    custom = AccountingPersistenceError("outbox", "dep-1", "No WARM backend", cause)
    assert str(custom) == "No WARM backend" and custom.cause is cause


def test_accounting_persistence_error_accepts_the_legacy_keyword() -> None:
    exc = AccountingPersistenceError(write_kind="snapshot", strategy_id="strat-1", message="m")
    assert exc.deployment_id == "strat-1" and exc.strategy_id == "strat-1"
    legacy = AccountingPersistenceError("ledger", strategy_id="strat-1")
    assert str(legacy) == "Accounting write failed (ledger) strategy=strat-1"
    same = AccountingPersistenceError("ledger", deployment_id="d", strategy_id="d")
    assert same.deployment_id == "d"
    with pytest.raises(TypeError):
        AccountingPersistenceError("ledger", deployment_id="a", strategy_id="b")


def test_registry_collision_is_the_projection_layers_class() -> None:
    assert RegistryAutoCollisionError is projections.errors.RegistryAutoCollisionError
    assert not issubclass(RegistryAutoCollisionError, AccountingPersistenceError)


def test_cutover_chain_and_migration_errors() -> None:
    assert issubclass(CutoverStorageNotSupported, RuntimeError)
    assert str(CutoverStorageNotSupported("no cutover")) == "no cutover"

    chain = ChainNotFoundError("base", ["arbitrum", "optimism"])
    assert (chain.chain, chain.configured_chains) == ("base", ["arbitrum", "optimism"])
    assert str(chain) == "Chain 'base' not found. Configured chains: ['arbitrum', 'optimism']"

    missing = MigrationNotFoundError(4)
    assert missing.version == 4 and str(missing) == "No migration registered for version 4"

    failed = MigrationError(1, 3, cause=KeyError("x"))
    assert (failed.from_version, failed.to_version) == (1, 3)
    assert str(failed) == "Migration failed from version 1 to 3: 'x'"
    assert str(MigrationError(1, 3)) == "Migration failed from version 1 to 3"

    rollback = RollbackNotSafeError(5, 1, 3)
    assert (rollback.current_version, rollback.target_version, rollback.safe_until_version) == (
        5,
        1,
        3,
    )
    assert str(rollback) == (
        "Cannot safely rollback from version 5 to 1. Rollback is only safe until version 3"
    )


# =============================================================================
# types
# =============================================================================


def _legacy_state_row() -> tuple[str, str, str, int]:
    if not LEGACY_PE.exists() and not os.environ.get("CI"):
        pytest.skip(f"{LEGACY_PE} not found (set {legacy_files.ENV})")
    uri = f"file:{LEGACY_PE}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        row = db.execute(
            "SELECT deployment_id, state_data, checksum, version FROM strategy_state"
        ).fetchone()
    db.close()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def test_checksum_matches_a_legacy_row() -> None:
    deployment_id, state_data, checksum, version = _legacy_state_row()
    assert _sha(state_data) == checksum  # the row is self-consistent
    state = json.loads(state_data)
    assert json.dumps(state, sort_keys=True) == state_data  # our bytes are the SDK's bytes
    assert compute_checksum(state) == checksum

    fresh = StateData(deployment_id=deployment_id, version=version, state=state)
    assert fresh.checksum == checksum
    assert fresh.verify_checksum()
    stored = StateData(deployment_id, version, json.loads(state_data), checksum=checksum)
    assert stored.checksum == checksum and stored.verify_checksum()


def test_checksum_formula_with_non_json_values_and_unicode() -> None:
    state: dict[str, Any] = {
        "b": Decimal("1.50"),
        "a": {"z": 1, "y": [T0]},
        "name": "Zürich",
        "f": 0.1,
    }
    expected = _sha(json.dumps(state, sort_keys=True, default=str))
    assert compute_checksum(state) == expected
    assert expected == _sha(
        '{"a": {"y": ["2026-05-01 12:30:00+00:00"], "z": 1}, "b": "1.50", '
        '"f": 0.1, "name": "Z\\u00fcrich"}'
    )
    assert StateData(state=state).checksum == expected


def test_state_data_defaults() -> None:
    before = datetime.now(UTC)
    data = StateData()
    assert (data.deployment_id, data.version, data.state, data.schema_version) == ("", 0, {}, 1)
    assert data.loaded_from is None
    assert data.checksum == _sha("{}")
    assert before <= data.created_at <= datetime.now(UTC)
    assert data.created_at.tzinfo is not None


def test_given_checksum_is_kept_and_verified() -> None:
    data = StateData("dep-1", 2, {"k": "v"}, checksum="deadbeef")
    assert data.checksum == "deadbeef"
    assert not data.verify_checksum()

    ok = StateData("dep-1", 2, {"k": "v"})
    assert ok.verify_checksum()
    ok.state["k"] = "tampered"
    assert not ok.verify_checksum()


def test_state_data_to_dict_format() -> None:
    data = StateData("dep-1", 7, {"k": [1, 2]}, 3, created_at=T0, loaded_from=StateTier.WARM)
    assert data.to_dict() == {
        "deployment_id": "dep-1",
        "version": 7,
        "state": {"k": [1, 2]},
        "schema_version": 3,
        "checksum": compute_checksum({"k": [1, 2]}),
        "created_at": "2026-05-01T12:30:00+00:00",
        "loaded_from": "WARM",
    }
    assert StateData("d", 1, {}, created_at=T0).to_dict()["loaded_from"] is None


def test_state_data_round_trip() -> None:
    for tier in (None, StateTier.HOT, StateTier.WARM):
        data = StateData("dep-1", 4, {"a": {"b": None}}, 2, created_at=T0, loaded_from=tier)
        again = StateData.from_dict(json.loads(json.dumps(data.to_dict())))
        assert again == data


def test_state_data_from_dict_fills_in_defaults() -> None:
    before = datetime.now(UTC)
    data = StateData.from_dict({"deployment_id": "dep-1", "version": 2, "state": {"x": 1}})
    assert data.schema_version == 1
    assert data.checksum == compute_checksum({"x": 1})
    assert data.loaded_from is None
    assert before <= data.created_at <= datetime.now(UTC)

    kept = StateData.from_dict(
        {"deployment_id": "d", "version": 1, "state": {}, "checksum": "abc", "created_at": T0}
    )
    assert kept.checksum == "abc" and kept.created_at == T0

    legacy = StateData.from_dict({"strategy_id": "strat-1", "version": 1, "state": {}})
    assert legacy.deployment_id == "strat-1"

    with pytest.raises(KeyError):
        StateData.from_dict({"deployment_id": "d", "state": {}})
    with pytest.raises(KeyError):
        StateData.from_dict({"deployment_id": "d", "version": 1, "state": {}, "loaded_from": "X"})


def test_state_tier_and_tier_metrics() -> None:
    assert (StateTier.HOT, StateTier.WARM) == (1, 2)
    assert StateTier.HOT < StateTier.WARM
    metric = TierMetrics(StateTier.HOT, "load", 0.25, True, "cache_miss", timestamp=T0)
    assert metric.to_dict() == {
        "tier": "HOT",
        "operation": "load",
        "latency_ms": 0.25,
        "success": True,
        "error": "cache_miss",
        "timestamp": "2026-05-01T12:30:00+00:00",
    }
    fresh = TierMetrics(StateTier.WARM, "save", 3.0, False)
    assert fresh.error is None and fresh.timestamp.tzinfo is not None


# =============================================================================
# config
# =============================================================================


def test_config_defaults() -> None:
    assert (WarmBackendType.POSTGRESQL.value, WarmBackendType.SQLITE.value) == (1, 2)
    config = StateManagerConfig()
    assert config.enable_hot and config.enable_warm and config.load_state_on_startup
    assert config.warm_backend is WarmBackendType.POSTGRESQL
    assert (config.hot_cache_ttl_seconds, config.hot_cache_max_size) == (0, 1000)
    assert config.database_url is None and config.metrics_callback is None
    assert config.postgres_config == PostgresConfig()
    assert config.sqlite_config == SQLiteConfigLight()
    assert StateManagerConfig().postgres_config is not config.postgres_config

    pg = PostgresConfig()
    assert (pg.host, pg.port, pg.database, pg.user, pg.password) == (
        "localhost",
        5432,
        "almanak",
        "almanak",
        "",
    )
    assert (pg.pool_min_size, pg.pool_max_size) == (2, 10)
    assert pg.dsn == "postgresql://almanak:@localhost:5432/almanak"

    assert SQLiteConfigLight(db_path="./state.db").wal_mode is True
    full = SQLiteConfig()
    assert full.db_path == SQLiteConfigLight().db_path
    assert (full.timeout, full.isolation_level, full.check_same_thread, full.wal_mode) == (
        30.0,
        None,
        False,
        True,
    )
    assert (full.journal_mode, full.busy_timeout, full.cache_size) == ("DELETE", 5000, -2000)


def test_sqlite_config_validation() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        SQLiteConfig(timeout=0)
    with pytest.raises(ValueError, match="busy_timeout must be non-negative"):
        SQLiteConfig(busy_timeout=-1)
    assert SQLiteConfig(busy_timeout=0).busy_timeout == 0


def test_default_sqlite_path_is_not_a_legacy_file_name() -> None:
    assert "almanak_state" not in SQLiteConfigLight().db_path
    url = StateManagerConfig(warm_backend=WarmBackendType.SQLITE).resolve_url()
    assert url == "sqlite:///chronicle.db"


def test_resolve_url_postgres_default_and_encoding() -> None:
    assert StateManagerConfig().resolve_url() == "postgresql://almanak:@localhost:5432/almanak"
    tricky = PostgresConfig(
        host="db.internal", port=6543, database="my db", user="u@x", password="p:/@?#%"
    )
    url = StateManagerConfig(postgres_config=tricky).resolve_url()
    assert url == "postgresql://u%40x:p%3A%2F%40%3F%23%25@db.internal:6543/my%20db"
    parts = urlsplit(url)
    assert unquote(parts.username or "") == "u@x"
    assert unquote(parts.password or "") == "p:/@?#%"
    assert (parts.hostname, parts.port, unquote(parts.path[1:])) == ("db.internal", 6543, "my db")
    parsed = parse_url(url)
    assert isinstance(parsed, PostgresURL) and parsed.dsn == url


def test_resolve_url_postgres_ipv6_and_socket_hosts() -> None:
    assert postgres_url(PostgresConfig(host="::1")) == "postgresql://almanak:@[::1]:5432/almanak"
    socket = postgres_url(PostgresConfig(host="/var/run/postgresql"))
    assert socket == ("postgresql://almanak:@/almanak?host=%2Fvar%2Frun%2Fpostgresql&port=5432")
    assert isinstance(parse_url(socket), PostgresURL)


def test_resolve_url_sqlite_paths(tmp_path: Path) -> None:
    relative = StateManagerConfig(
        warm_backend=WarmBackendType.SQLITE, sqlite_config=SQLiteConfigLight(db_path="./state.db")
    )
    assert relative.resolve_url() == "sqlite:///./state.db"
    assert parse_url(relative.resolve_url()) == SQLiteURL("./state.db")

    absolute = StateManagerConfig(
        warm_backend=WarmBackendType.SQLITE,
        sqlite_config=SQLiteConfigLight(db_path=f"{tmp_path}/state.db"),
    )
    assert absolute.resolve_url() == f"sqlite:///{tmp_path}/state.db"
    assert absolute.resolve_url().startswith("sqlite:////")
    assert parse_url(absolute.resolve_url()) == SQLiteURL(f"{tmp_path}/state.db")


@pytest.mark.parametrize("bad", ["", ":memory:", ":hosted-mode-no-sqlite-path:", "a?b.db", "a#b"])
def test_sqlite_paths_a_store_url_cannot_carry(bad: str) -> None:
    with pytest.raises(ValueError):
        sqlite_url(bad)


def test_database_url_takes_precedence() -> None:
    for backend in WarmBackendType:
        config = StateManagerConfig(
            warm_backend=backend, database_url="postgresql://u@h:5433/db?schema=tenant_1"
        )
        assert config.resolve_url() == "postgresql://u@h:5433/db?schema=tenant_1"
    sqlite = StateManagerConfig(database_url="sqlite:///other.db")
    assert sqlite.resolve_url() == "sqlite:///other.db"
    empty = StateManagerConfig(database_url="")  # falsy: ignored, as in the reference
    assert empty.resolve_url() == "postgresql://almanak:@localhost:5432/almanak"


# =============================================================================
# migrations
# =============================================================================


def _add(key: str, value: Any) -> Any:
    def step(state: dict[str, Any]) -> dict[str, Any]:
        state[key] = value
        return state

    return step


def _boom(state: dict[str, Any]) -> dict[str, Any]:
    state["half"] = True  # mutates only the step's private copy
    raise RuntimeError("boom")


@pytest.fixture
def default_registry() -> Iterator[MigrationRegistry]:
    registry = get_registry()
    saved = registry.migrations
    registry.clear()
    try:
        yield registry
    finally:
        registry.clear()
        for step in saved.values():
            registry.register(step)


def test_state_migration_validation_apply_and_to_dict() -> None:
    with pytest.raises(ValueError):
        StateMigration(1, _add("a", 1))
    with pytest.raises(ValueError):
        StateMigration(3, _add("a", 1), rollback_safe_until_version=0)
    with pytest.raises(ValueError):
        StateMigration(3, _add("a", 1), rollback_safe_until_version=4)

    step = StateMigration(2, _add("a", 1), "add a", 2, created_at=T0)
    original = {"nested": {"x": 1}}
    migrated = step.apply(original)
    assert migrated == {"nested": {"x": 1}, "a": 1}
    assert original == {"nested": {"x": 1}}
    assert migrated["nested"] is not original["nested"]  # deep copy
    assert step.to_dict() == {
        "version": 2,
        "description": "add a",
        "rollback_safe_until_version": 2,
        "created_at": "2026-05-01T12:30:00+00:00",
    }


def test_registry_versions_lookup_and_clear() -> None:
    registry = MigrationRegistry()
    assert registry.current_version == 1 and registry.migrations == {}
    v3 = StateMigration(3, _add("c", 3))
    registry.register(v3)
    assert registry.current_version == 3
    v2 = StateMigration(2, _add("b", 2))
    registry.register(v2)
    assert registry.current_version == 3  # the highest, not the last registered
    assert registry.get(2) is v2 and registry.get(4) is None
    with pytest.raises(ValueError, match="Migration for version 2 already registered"):
        registry.register(StateMigration(2, _add("x", 0)))

    copy = registry.migrations
    copy.clear()
    assert set(registry.migrations) == {2, 3}

    registry.clear()
    assert registry.current_version == 1 and registry.migrations == {}


def test_migrations_path() -> None:
    registry = MigrationRegistry()
    steps = {v: StateMigration(v, _add(f"v{v}", v)) for v in (2, 3, 5)}
    for step in steps.values():
        registry.register(step)
    assert registry.get_migrations_path(1, 3) == [steps[2], steps[3]]
    assert registry.get_migrations_path(2, 3) == [steps[3]]
    assert registry.get_migrations_path(3, 3) == []
    assert registry.get_migrations_path(5, 2) == []
    with pytest.raises(MigrationNotFoundError) as raised:
        registry.get_migrations_path(1, 5)
    assert raised.value.version == 4


def test_rollback_info() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    registry.register(StateMigration(3, _add("c", 3), rollback_safe_until_version=3))
    registry.register(StateMigration(4, _add("d", 4), rollback_safe_until_version=2))

    info = registry.get_rollback_info(4)
    assert info == RollbackInfo(4, [3], [1, 2])  # the strictest bound (3) applies
    assert info.is_safe_to_rollback(3) and not info.is_safe_to_rollback(2)
    assert not info.is_safe_to_rollback(4)  # current is in neither list

    assert registry.get_rollback_info(2) == RollbackInfo(2, [1], [])
    assert registry.get_rollback_info(1) == RollbackInfo(1, [], [])
    assert check_rollback_safety(4, 3, registry) and not check_rollback_safety(4, 1, registry)
    assert get_rollback_safe_version(4, registry) == 3
    assert get_rollback_safe_version(1, registry) == 1  # nothing to roll back to


def test_migrate_success_and_no_op() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    registry.register(StateMigration(3, _add("c", 3)))
    state = {"a": 1}

    result = migrate(state, 1, registry=registry)  # to_version defaults to current (3)
    assert result.success and result.error is None
    assert (result.from_version, result.to_version, result.migrations_applied) == (1, 3, [2, 3])
    assert result.state == {"a": 1, "b": 2, "c": 3}
    assert state == {"a": 1}
    assert result.duration_ms >= 0.0

    partial = migrate(state, 1, 2, registry)
    assert partial.success and partial.state == {"a": 1, "b": 2} and partial.to_version == 2

    noop = migrate(state, 3, 2, registry)
    assert noop.success and noop.state is state
    assert (noop.from_version, noop.to_version, noop.migrations_applied) == (3, 3, [])
    assert noop.duration_ms == 0.0


def test_migrate_missing_migration_returns_the_original_state() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    registry.register(StateMigration(4, _add("d", 4)))
    state = {"a": 1}
    result = migrate(state, 1, 4, registry)
    assert not result.success
    assert (result.from_version, result.to_version, result.migrations_applied) == (1, 4, [])
    assert result.state is state
    assert result.error == "No migration registered for version 3"


def test_migrate_failing_step_returns_the_partially_migrated_state() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    registry.register(StateMigration(3, _boom))
    registry.register(StateMigration(4, _add("d", 4)))
    state = {"a": 1}
    result = migrate(state, 1, 4, registry)
    assert not result.success
    assert result.migrations_applied == [2]
    assert result.state == {"a": 1, "b": 2}  # as of the last good step, not the original
    assert result.to_version == 4
    assert result.error == "Migration to version 3 failed: boom"
    assert state == {"a": 1}
    assert result.to_dict() == {
        "success": False,
        "from_version": 1,
        "to_version": 4,
        "migrations_applied": [2],
        "error": "Migration to version 3 failed: boom",
        "duration_ms": result.duration_ms,
    }
    assert "state" not in MigrationResult(True, 1, 1, [], {}).to_dict()


def test_default_registry_helpers(default_registry: MigrationRegistry) -> None:
    register_migration(2, _add("b", 2), "add b")

    @migration(version=3)
    def add_c(state: dict[str, Any]) -> dict[str, Any]:
        """Add c."""
        state["c"] = 3
        return state

    assert default_registry.current_version == 3
    assert default_registry.get(3) is not None
    assert default_registry.get(3).description == "Add c."  # type: ignore[union-attr]
    assert migrate({}, 1).state == {"b": 2, "c": 3}  # registry=None: the default one
    assert needs_migration(2) and not needs_migration(3) and not needs_migration(2, 2)
    assert needs_migration(2, 0)  # a falsy target means current, as in the reference


def test_auto_migrate() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    state: dict[str, Any] = {"a": 1}
    result = auto_migrate(state, registry=registry)
    assert result.success and result.state == {"a": 1, "b": 2, "schema_version": 2}
    assert state == {"a": 1}

    current = {"schema_version": 2}
    same = auto_migrate(current, registry=registry)
    assert same.state is current and same.migrations_applied == []

    custom = auto_migrate({"v": 1}, schema_version_key="v", registry=registry)
    assert custom.state == {"v": 2, "b": 2}


def test_migrate_state_data() -> None:
    registry = MigrationRegistry()
    registry.register(StateMigration(2, _add("b", 2)))
    data = StateData("dep-1", 7, {"a": 1}, 1, created_at=T0, loaded_from=StateTier.HOT)

    migrated, result = migrate_state_data(data, registry)
    assert result.success and migrated is not data
    assert (migrated.deployment_id, migrated.version, migrated.schema_version) == ("dep-1", 7, 2)
    assert (migrated.created_at, migrated.loaded_from) == (T0, StateTier.HOT)
    assert migrated.state == {"a": 1, "b": 2}
    assert migrated.checksum == compute_checksum({"a": 1, "b": 2}) and migrated.verify_checksum()
    assert data.state == {"a": 1} and data.schema_version == 1

    unchanged, noop = migrate_state_data(migrated, registry)
    assert unchanged is migrated and noop.migrations_applied == []

    registry.register(StateMigration(3, _boom))
    kept, failed = migrate_state_data(data, registry)
    assert kept is data and not failed.success


# =============================================================================
# positions
# =============================================================================


def _pos(
    pid: str,
    chain: str = "arbitrum",
    kind: PositionType = PositionType.SUPPLY,
    protocol: str | None = "aave_v3",
    value: str = "100",
) -> PositionRecord:
    return PositionRecord(
        position_id=pid,
        chain=chain,
        position_type=kind,
        protocol=protocol,
        token="WETH",
        amount=Decimal("1.5"),
        value_usd=Decimal(value),
        created_at=T0,
        updated_at=T0 + timedelta(hours=1),
        metadata={"health_factor": "1.8"},
    )


def test_position_types() -> None:
    assert [t.value for t in PositionType] == ["TOKEN", "LP", "BORROW", "SUPPLY", "PERP", "VAULT"]
    assert PositionType("LP") is PositionType.LP


def test_position_record_round_trip_is_exact() -> None:
    record = _pos("p1")
    record.amount = Decimal("10.00616589969173248633700042")
    record.value_usd = Decimal("0E-7")
    data = record.to_dict()
    assert data == {
        "position_id": "p1",
        "chain": "arbitrum",
        "position_type": "SUPPLY",
        "protocol": "aave_v3",
        "token": "WETH",
        "amount": "10.00616589969173248633700042",
        "value_usd": "0E-7",
        "created_at": "2026-05-01T12:30:00+00:00",
        "updated_at": "2026-05-01T13:30:00+00:00",
        "metadata": {"health_factor": "1.8"},
    }
    again = PositionRecord.from_dict(json.loads(json.dumps(data)))
    assert again == record
    assert str(again.value_usd) == "0E-7"


def test_position_record_from_dict_defaults_and_errors() -> None:
    before = datetime.now(UTC)
    minimal = PositionRecord.from_dict(
        {"position_id": "p", "chain": "base", "position_type": "LP", "token": "X", "amount": 2}
        | {"value_usd": 0.1}
    )
    assert minimal.protocol is None and minimal.metadata == {}
    assert minimal.amount == Decimal("2") and minimal.value_usd == Decimal("0.1")
    assert before <= minimal.created_at <= datetime.now(UTC)
    assert before <= minimal.updated_at <= datetime.now(UTC)
    with pytest.raises(ValueError):
        PositionRecord.from_dict(_pos("p").to_dict() | {"position_type": "NFT"})
    with pytest.raises(KeyError):
        PositionRecord.from_dict({"position_id": "p"})


def test_position_manager_queries() -> None:
    manager = PositionManager(
        ["arbitrum", "optimism", "base"],
        [
            _pos("a1", value="100.5"),
            _pos("o1", "optimism", PositionType.LP, "uniswap_v3", "50"),
            _pos("a2", kind=PositionType.BORROW, value="-20"),
        ],
    )
    assert manager.chains == ["arbitrum", "optimism", "base"]
    assert [p.position_id for p in manager.positions] == ["a1", "a2", "o1"]  # chain order
    assert [p.position_id for p in manager.positions_on("arbitrum")] == ["a1", "a2"]
    assert manager.positions_on("base") == []
    assert manager.total_value_usd == Decimal("130.5")
    assert manager.total_value_on("arbitrum") == Decimal("80.5")
    assert manager.total_value_on("base") == Decimal("0")
    assert [p.position_id for p in manager.positions_by_type(PositionType.LP)] == ["o1"]
    assert [p.position_id for p in manager.positions_by_protocol("aave_v3")] == ["a1", "a2"]
    assert manager.get_position("a1", "arbitrum") is not None
    assert manager.get_position("a1", "optimism") is None

    manager.add_position(_pos("dup", "optimism"))
    manager.add_position(_pos("dup", "base"))
    found = manager.find_position("dup")
    assert found is not None and found.chain == "optimism"  # first in chain order
    assert manager.find_position("nope") is None

    chains = manager.chains
    chains.append("mutated")
    assert manager.chains == ["arbitrum", "optimism", "base"]


def test_position_manager_replaces_in_place_and_removes() -> None:
    manager = PositionManager(["arbitrum"], [_pos("a1"), _pos("a2"), _pos("a3")])
    manager.add_position(_pos("a1", value="999"))
    assert [p.position_id for p in manager.positions] == ["a1", "a2", "a3"]  # slot kept
    assert manager.total_value_usd == Decimal("1199")
    assert manager.remove_position("a2", "arbitrum") is True
    assert manager.remove_position("a2", "arbitrum") is False
    assert [p.position_id for p in manager.positions] == ["a1", "a3"]


def test_position_manager_unknown_chain_is_an_error() -> None:
    manager = PositionManager(["arbitrum"])
    calls: list[Callable[[], object]] = [
        lambda: manager.positions_on("base"),
        lambda: manager.total_value_on("base"),
        lambda: manager.add_position(_pos("p", "base")),
        lambda: manager.remove_position("p", "base"),
        lambda: manager.get_position("p", "base"),
        lambda: manager.clear("base"),
    ]
    for call in calls:
        with pytest.raises(ChainNotFoundError) as raised:
            call()
        assert raised.value.chain == "base" and raised.value.configured_chains == ["arbitrum"]
    with pytest.raises(ChainNotFoundError):
        PositionManager(["arbitrum"], [_pos("p", "base")])


def test_position_manager_clear() -> None:
    manager = PositionManager(["arbitrum", "base"], [_pos("a"), _pos("b", "base")])
    manager.clear("arbitrum")
    assert [p.position_id for p in manager.positions] == ["b"]
    manager.clear()
    assert manager.positions == [] and manager.chains == ["arbitrum", "base"]


def test_position_manager_dict_round_trip() -> None:
    manager = PositionManager(["arbitrum", "base"], [_pos("a1"), _pos("a2")])
    data = manager.to_dict()
    assert data == {
        "chains": ["arbitrum", "base"],
        "positions": {
            "arbitrum": {"a1": _pos("a1").to_dict(), "a2": _pos("a2").to_dict()},
            "base": {},
        },
    }
    again = PositionManager.from_dict(json.loads(json.dumps(data)))
    assert again.chains == manager.chains
    assert again.positions == manager.positions
    assert PositionManager.from_dict({}).chains == []


def test_position_manager_from_dict_skips_what_it_cannot_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = _pos("ok").to_dict()
    data = {
        "chains": ["arbitrum"],
        "positions": {
            "arbitrum": {
                "bad-type": _pos("bad-type").to_dict() | {"position_type": "NFT"},
                "no-token": {k: v for k, v in good.items() if k != "token"},
                "bad-amount": _pos("bad-amount").to_dict() | {"amount": "lots"},
                "bad-time": _pos("bad-time").to_dict() | {"created_at": "yesterday"},
                "ok": good,
            },
            "solana": {"s1": _pos("s1", "solana").to_dict()},  # not configured: dropped
        },
    }
    with caplog.at_level("WARNING", logger="statemanager.positions"):
        manager = PositionManager.from_dict(data)
    assert [p.position_id for p in manager.positions] == ["ok"]
    assert len([r for r in caplog.records if "Failed to deserialize" in r.message]) == 4


def test_position_manager_summary_and_repr() -> None:
    manager = PositionManager(
        ["arbitrum", "base"], [_pos("a1", value="1.25"), _pos("a2", value="2")]
    )
    assert manager.get_summary() == {
        "total_positions": 2,
        "total_value_usd": "3.25",
        "chains": {
            "arbitrum": {"position_count": 2, "value_usd": "3.25", "positions": ["a1", "a2"]},
            "base": {"position_count": 0, "value_usd": "0", "positions": []},
        },
    }
    assert repr(manager) == (
        "PositionManager(chains=['arbitrum', 'base'], positions=2, total_value_usd=3.25)"
    )
    assert repr(PositionManager([])) == "PositionManager(chains=[], positions=0, total_value_usd=0)"

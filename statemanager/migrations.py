"""Schema migrations of a strategy's state dict, as the reference runs them.

A migration upgrades ``state`` from ``version - 1`` to ``version``; the registry
holds them by target version and :func:`migrate` applies a contiguous run of
them. Each migration also says how far back a rollback stays lossless
(``rollback_safe_until_version``), which :meth:`MigrationRegistry.get_rollback_info`
folds into safe and unsafe targets.

Nothing here is called by ``StateManager`` itself: like the reference, the
manager stores and returns ``schema_version`` and never migrates on load or save
(docs/reference-semantics.md section 11). Runners call these explicitly.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import MigrationNotFoundError
from .types import StateData

__all__ = [
    "MigrationFunction",
    "MigrationRegistry",
    "MigrationResult",
    "RollbackInfo",
    "StateMigration",
    "auto_migrate",
    "check_rollback_safety",
    "get_registry",
    "get_rollback_safe_version",
    "migrate",
    "migrate_state_data",
    "migration",
    "needs_migration",
    "register_migration",
]

logger = logging.getLogger(__name__)

MigrationFunction = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes the state at ``version - 1`` (a private deep copy) and returns it at ``version``."""


@dataclass
class StateMigration:
    """One upgrade step, to schema ``version`` from ``version - 1``.

    ``rollback_safe_until_version`` is the lowest version that code may roll back
    to without losing what this step introduced (1 means any). Invalid
    combinations are refused at construction: version 1 is the initial schema and
    has no migration, and the safe bound must lie in ``[1, version]``.
    """

    version: int
    migration_fn: MigrationFunction
    description: str = ""
    rollback_safe_until_version: int = 1
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        """Validate the version and the rollback bound."""
        if self.version < 2:
            raise ValueError("Migration version must be >= 2 (version 1 is initial)")
        if self.rollback_safe_until_version < 1:
            raise ValueError("rollback_safe_until_version must be >= 1")
        if self.rollback_safe_until_version > self.version:
            raise ValueError("rollback_safe_until_version cannot exceed version")

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Run the step on a deep copy, so the caller's state is never mutated."""
        return self.migration_fn(copy.deepcopy(state))

    def to_dict(self) -> dict[str, Any]:
        """Describe the step (the function itself is not serialisable)."""
        return {
            "version": self.version,
            "description": self.description,
            "rollback_safe_until_version": self.rollback_safe_until_version,
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class MigrationResult:
    """What :func:`migrate` did.

    ``state`` is the migrated state on success. On failure it is whatever the last
    successful step produced: the original state when nothing ran (a missing
    migration), a partially migrated one when a step raised. The seed page's
    "(or original if failed)" is not what the reference does.
    """

    success: bool
    from_version: int
    to_version: int
    migrations_applied: list[int]
    state: dict[str, Any]
    error: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """For logs: everything but ``state``, which may be large or sensitive."""
        return {
            "success": self.success,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "migrations_applied": self.migrations_applied,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


@dataclass
class RollbackInfo:
    """Which older schema versions code at ``current_version`` may roll back to.

    Every version in ``[1, current_version)`` is in exactly one of the two lists;
    ``current_version`` itself is in neither.
    """

    current_version: int
    safe_rollback_versions: list[int]
    unsafe_rollback_versions: list[int]

    def is_safe_to_rollback(self, target_version: int) -> bool:
        """Whether ``target_version`` is a listed safe target."""
        return target_version in self.safe_rollback_versions


class MigrationRegistry:
    """The registered migrations, by target version, and the latest version.

    ``current_version`` starts at 1 (the initial schema, no migration) and is the
    highest version ever registered since the last :meth:`clear`.
    """

    def __init__(self) -> None:
        self._migrations: dict[int, StateMigration] = {}
        self._current_version = 1

    @property
    def current_version(self) -> int:
        """The latest schema version: the highest registered, or 1."""
        return self._current_version

    @property
    def migrations(self) -> dict[int, StateMigration]:
        """A copy of the version -> migration map (changing it changes nothing here)."""
        return dict(self._migrations)

    def register(self, migration: StateMigration) -> None:
        """Add a migration; a second one for the same version is a ``ValueError``."""
        if migration.version in self._migrations:
            raise ValueError(f"Migration for version {migration.version} already registered")
        self._migrations[migration.version] = migration
        self._current_version = max(self._current_version, migration.version)
        logger.info(
            "Registered migration to version %d: %s", migration.version, migration.description
        )

    def get(self, version: int) -> StateMigration | None:
        """The migration *to* ``version``, or ``None``."""
        return self._migrations.get(version)

    def get_migrations_path(self, from_version: int, to_version: int) -> list[StateMigration]:
        """The steps ``from_version + 1 .. to_version`` in order; ``[]`` when not upward.

        Raises :class:`MigrationNotFoundError` for the first version without a
        migration, before anything could be applied.
        """
        if from_version >= to_version:
            return []
        path: list[StateMigration] = []
        for version in range(from_version + 1, to_version + 1):
            step = self._migrations.get(version)
            if step is None:
                raise MigrationNotFoundError(version)
            path.append(step)
        return path

    def get_rollback_info(self, current_version: int) -> RollbackInfo:
        """Safe and unsafe rollback targets below ``current_version``.

        The bound is the highest ``rollback_safe_until_version`` among the
        registered migrations ``2 .. current_version`` (1 when there are none):
        rolling back below any one step's bound loses that step's data, so the
        strictest bound applies. Versions at or above it are safe.
        """
        min_safe = 1
        for version in range(2, current_version + 1):
            step = self._migrations.get(version)
            if step is not None:
                min_safe = max(min_safe, step.rollback_safe_until_version)
        earlier = range(1, current_version)
        return RollbackInfo(
            current_version=current_version,
            safe_rollback_versions=[v for v in earlier if v >= min_safe],
            unsafe_rollback_versions=[v for v in earlier if v < min_safe],
        )

    def clear(self) -> None:
        """Forget every migration and go back to version 1 (for tests)."""
        self._migrations.clear()
        self._current_version = 1


_registry = MigrationRegistry()
"""The process-wide default registry, as in the reference."""


def get_registry() -> MigrationRegistry:
    """The default registry used when a function is given ``registry=None``."""
    return _registry


def _resolve(registry: MigrationRegistry | None) -> MigrationRegistry:
    return _registry if registry is None else registry


def register_migration(
    version: int,
    migration_fn: MigrationFunction,
    description: str = "",
    rollback_safe_until_version: int = 1,
) -> StateMigration:
    """Build a :class:`StateMigration` and register it in the default registry."""
    step = StateMigration(
        version=version,
        migration_fn=migration_fn,
        description=description,
        rollback_safe_until_version=rollback_safe_until_version,
    )
    _registry.register(step)
    return step


def migration(
    version: int, description: str = "", rollback_safe_until_version: int = 1
) -> Callable[[MigrationFunction], MigrationFunction]:
    """Decorator form of :func:`register_migration`; the docstring is the default
    description. Returns the function unchanged."""

    def decorator(fn: MigrationFunction) -> MigrationFunction:
        register_migration(
            version=version,
            migration_fn=fn,
            description=description or fn.__doc__ or "",
            rollback_safe_until_version=rollback_safe_until_version,
        )
        return fn

    return decorator


def migrate(
    state: dict[str, Any],
    from_version: int,
    to_version: int | None = None,
    registry: MigrationRegistry | None = None,
) -> MigrationResult:
    """Apply the migrations ``from_version + 1 .. to_version`` in order.

    Never raises for a migration problem; the result says what happened:

    * ``to_version=None`` means the registry's ``current_version`` (the default
      registry when ``registry`` is ``None``).
    * ``from_version >= to_version``: success, nothing applied, the *same* state
      object back, and ``to_version`` reported as ``from_version`` (a downgrade is
      not a migration).
    * a version without a migration: failure before any step ran, the original
      state, the requested ``to_version``, and ``error`` the text of
      :class:`MigrationNotFoundError`.
    * a step that raises: failure, ``migrations_applied`` the steps that
      succeeded, and ``state`` **as of the last successful step**, partially
      migrated (the seed page says the original is returned; the reference
      returns this), with ``error = "Migration to version {v} failed: {e}"``.

    Each step works on its own deep copy, so the caller's ``state`` is never
    mutated.
    """
    started = time.perf_counter()
    reg = _resolve(registry)
    target = reg.current_version if to_version is None else to_version

    if from_version >= target:
        return MigrationResult(
            success=True,
            from_version=from_version,
            to_version=from_version,
            migrations_applied=[],
            state=state,
            duration_ms=0.0,
        )

    def elapsed_ms() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        path = reg.get_migrations_path(from_version, target)
    except MigrationNotFoundError as exc:
        return MigrationResult(
            success=False,
            from_version=from_version,
            to_version=target,
            migrations_applied=[],
            state=state,
            error=str(exc),
            duration_ms=elapsed_ms(),
        )

    current = state
    applied: list[int] = []
    for step in path:
        try:
            current = step.apply(current)
        except Exception as exc:
            logger.error("Migration to version %d failed: %s", step.version, exc)
            return MigrationResult(
                success=False,
                from_version=from_version,
                to_version=target,
                migrations_applied=applied,
                state=current,
                error=f"Migration to version {step.version} failed: {exc}",
                duration_ms=elapsed_ms(),
            )
        applied.append(step.version)
        logger.info("Applied migration to version %d: %s", step.version, step.description)

    return MigrationResult(
        success=True,
        from_version=from_version,
        to_version=target,
        migrations_applied=applied,
        state=current,
        duration_ms=elapsed_ms(),
    )


def check_rollback_safety(
    current_version: int, target_version: int, registry: MigrationRegistry | None = None
) -> bool:
    """Whether rolling back from ``current_version`` to ``target_version`` is lossless."""
    info = _resolve(registry).get_rollback_info(current_version)
    return info.is_safe_to_rollback(target_version)


def get_rollback_safe_version(
    current_version: int, registry: MigrationRegistry | None = None
) -> int:
    """The lowest safe rollback target, or ``current_version`` when there is none."""
    safe = _resolve(registry).get_rollback_info(current_version).safe_rollback_versions
    return min(safe) if safe else current_version


def needs_migration(
    state_schema_version: int,
    target_version: int | None = None,
    registry: MigrationRegistry | None = None,
) -> bool:
    """Whether a state at ``state_schema_version`` is behind the target.

    As in the reference, a falsy target (``None`` or 0) means the registry's
    ``current_version``.
    """
    target = target_version or _resolve(registry).current_version
    return state_schema_version < target


def auto_migrate(
    state: dict[str, Any],
    schema_version_key: str = "schema_version",
    registry: MigrationRegistry | None = None,
) -> MigrationResult:
    """Migrate a state dict that records its own schema version under a key.

    The version is read from ``state[schema_version_key]`` (1 when absent). On a
    successful migration the key is set to the new version in the *migrated*
    state; an up-to-date state comes back as the same object, untouched.
    """
    reg = _resolve(registry)
    version: int = state.get(schema_version_key, 1)
    if not needs_migration(version, registry=reg):
        return MigrationResult(
            success=True,
            from_version=version,
            to_version=version,
            migrations_applied=[],
            state=state,
            duration_ms=0.0,
        )
    result = migrate(state, from_version=version, to_version=reg.current_version, registry=reg)
    if result.success:
        result.state[schema_version_key] = result.to_version
    return result


def migrate_state_data(
    state_data: StateData, registry: MigrationRegistry | None = None
) -> tuple[StateData, MigrationResult]:
    """Bring a :class:`StateData` to the registry's current schema version.

    On success a *new* ``StateData`` (same deployment, version, ``created_at`` and
    ``loaded_from``; the migrated state, the new ``schema_version`` and a fresh
    checksum); the input object is returned unchanged when nothing was needed or
    the migration failed. The ``MigrationResult`` says which.
    """
    reg = _resolve(registry)
    if not needs_migration(state_data.schema_version, registry=reg):
        return state_data, MigrationResult(
            success=True,
            from_version=state_data.schema_version,
            to_version=state_data.schema_version,
            migrations_applied=[],
            state=state_data.state,
            duration_ms=0.0,
        )
    result = migrate(
        state_data.state,
        from_version=state_data.schema_version,
        to_version=reg.current_version,
        registry=reg,
    )
    if not result.success:
        return state_data, result
    migrated = StateData(
        deployment_id=state_data.deployment_id,
        version=state_data.version,
        state=result.state,
        schema_version=result.to_version,
        created_at=state_data.created_at,
        loaded_from=state_data.loaded_from,
    )
    return migrated, result

"""The exceptions of the runner-facing ``StateManager`` API.

Runners written against the Almanak SDK catch these by class and read their
attributes (``exc.expected_version``, ``exc.write_kind``, ...), and some match on
the messages in logs and alerts. So every class here keeps the reference's base
class, constructor, attributes and default message (docs/reference-semantics.md
section 10). They deliberately do *not* derive from
:class:`eventstore.EventStoreError`: a runner's ``except StateConflictError`` must
not start catching store refusals it never caught before, and vice versa.

``RegistryAutoCollisionError`` is Chronicle's own class from
:mod:`projections.errors`, re-exported here so runners import every
``StateManager`` error from one place. It is raised by the registry read model when
it refuses the append, so there must be exactly one class to catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from projections.errors import RegistryAutoCollisionError

__all__ = [
    "AccountingPersistenceError",
    "AccountingWriteKind",
    "ChainNotFoundError",
    "CutoverStorageNotSupported",
    "MigrationError",
    "MigrationNotFoundError",
    "RegistryAutoCollisionError",
    "RollbackNotSafeError",
    "StateConflictError",
    "StateNotFoundError",
]


class StateConflictError(Exception):
    """A CAS save found the state at another version than the caller expected.

    Another writer saved in between. Reload the state (after
    ``invalidate_hot_cache(deployment_id)``: the HOT copy is not refreshed by a
    conflict) and decide again; retrying the same save fails the same way.
    ``actual_version`` is 0 when the deployment has no state at all.
    """

    def __init__(
        self,
        deployment_id: str,
        expected_version: int,
        actual_version: int,
        message: str | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            message
            or f"State conflict for deployment {deployment_id}: "
            f"expected version {expected_version}, found {actual_version}"
        )


class StateNotFoundError(Exception):
    """``load_state`` found no state for the deployment in any tier."""

    def __init__(self, deployment_id: str, message: str | None = None) -> None:
        self.deployment_id = deployment_id
        super().__init__(message or f"State not found for deployment {deployment_id}")


class AccountingWriteKind(StrEnum):
    """Which accounting surface a failed mandatory write was aimed at.

    A ``StrEnum`` so that callers still passing the raw strings (``"ledger"``)
    keep working and compare equal to the members.
    """

    LEDGER = "ledger"
    SNAPSHOT = "snapshot"
    METRICS = "metrics"
    ACCOUNTING = "accounting"
    OUTBOX = "outbox"


class AccountingPersistenceError(Exception):
    """A mandatory accounting write (ledger, snapshot, metrics, ...) did not land.

    In live mode these writes are the books' record of what happened on chain, so
    the runner turns this error into an ``ACCOUNTING_FAILED`` cycle and halts
    instead of carrying on with books that disagree with the chain.

    ``write_kind`` is stored as the plain string value; a raw string is checked
    against :class:`AccountingWriteKind` here, so a typo fails where it is made and
    not later in whatever pattern-matches on the kind. ``cause`` is the original
    exception, if any (callers also chain it with ``raise ... from``).

    The deployment is passed as ``deployment_id`` (positionally or by keyword, as
    the current SDK does) or, from older call sites, as ``strategy_id=``. Both end
    up in ``.deployment_id``; ``.strategy_id`` reads the same value. The default
    message labels it ``deployment=``, or ``strategy=`` when the caller used the
    legacy keyword, so a legacy call site logs exactly what it used to.
    """

    def __init__(
        self,
        write_kind: AccountingWriteKind | str,
        deployment_id: str = "",
        message: str | None = None,
        cause: BaseException | None = None,
        *,
        strategy_id: str | None = None,
    ) -> None:
        if strategy_id is not None and deployment_id and strategy_id != deployment_id:
            raise TypeError(
                "AccountingPersistenceError got both deployment_id and strategy_id "
                f"({deployment_id!r} != {strategy_id!r}); pass deployment_id only"
            )
        legacy = strategy_id is not None and not deployment_id
        identity = strategy_id if legacy and strategy_id is not None else deployment_id
        self.write_kind: str = AccountingWriteKind(write_kind).value
        self.deployment_id = identity
        self.cause = cause
        label = "strategy" if legacy else "deployment"
        detail = f" {label}={identity}" if identity else ""
        suffix = f": {cause}" if cause is not None else ""
        super().__init__(message or f"Accounting write failed ({self.write_kind}){detail}{suffix}")

    @property
    def strategy_id(self) -> str:
        """The pre-rename name of :attr:`deployment_id`, for legacy readers."""
        return self.deployment_id


class CutoverStorageNotSupported(RuntimeError):
    """The backend cannot store or read the registry-cutover tables.

    Raised instead of returning ``[]`` or ``None``: an empty answer would be read by
    the cutover boot guard as "fresh database, nothing open" and could mark still
    open positions as gone. The message names the backend and the method.
    """


class ChainNotFoundError(Exception):
    """A position operation named a chain the ``PositionManager`` was not built with."""

    def __init__(self, chain: str, configured_chains: Sequence[str]) -> None:
        self.chain = chain
        self.configured_chains = list(configured_chains)
        super().__init__(f"Chain '{chain}' not found. Configured chains: {self.configured_chains}")


class MigrationError(Exception):
    """A state migration between two schema versions failed."""

    def __init__(
        self,
        from_version: int,
        to_version: int,
        message: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.from_version = from_version
        self.to_version = to_version
        self.cause = cause
        super().__init__(
            message
            or f"Migration failed from version {from_version} to {to_version}"
            + (f": {cause}" if cause else "")
        )


class MigrationNotFoundError(Exception):
    """No migration is registered for a schema version on the requested path."""

    def __init__(self, version: int, message: str | None = None) -> None:
        self.version = version
        super().__init__(message or f"No migration registered for version {version}")


class RollbackNotSafeError(Exception):
    """Rolling back to the target schema version would lose data."""

    def __init__(
        self,
        current_version: int,
        target_version: int,
        safe_until_version: int,
        message: str | None = None,
    ) -> None:
        self.current_version = current_version
        self.target_version = target_version
        self.safe_until_version = safe_until_version
        super().__init__(
            message
            or f"Cannot safely rollback from version {current_version} to {target_version}. "
            f"Rollback is only safe until version {safe_until_version}"
        )

"""The runner-facing ``StateManager`` API over Chronicle's event store.

Everything the seed page documents is importable from here: the manager, its
configuration, the value and record types, the migrations and position helpers,
and the exceptions.
"""

from .config import (
    PostgresConfig,
    SQLiteConfig,
    SQLiteConfigLight,
    StateManagerConfig,
    WarmBackendType,
)
from .errors import (
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
from .manager import StateManager
from .migrations import (
    MigrationRegistry,
    MigrationResult,
    RollbackInfo,
    StateMigration,
    migrate,
)
from .positions import PositionManager, PositionRecord, PositionType
from .records import (
    AccountingEvent,
    ClobFill,
    ClobOrderSide,
    ClobOrderState,
    ClobOrderStatus,
    HandleMapping,
    LedgerEntry,
    LedgerQuantStats,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
    RegistryRow,
    ValueConfidence,
)
from .types import StateData, StateTier, TierMetrics
from .warm import ChronicleStore, PostgresStore, SQLiteStore

__all__ = [
    "AccountingEvent",
    "AccountingPersistenceError",
    "AccountingWriteKind",
    "ChainNotFoundError",
    "ChronicleStore",
    "ClobFill",
    "ClobOrderSide",
    "ClobOrderState",
    "ClobOrderStatus",
    "CutoverStorageNotSupported",
    "HandleMapping",
    "LedgerEntry",
    "LedgerQuantStats",
    "MigrationError",
    "MigrationNotFoundError",
    "MigrationRegistry",
    "MigrationResult",
    "PortfolioMetrics",
    "PortfolioSnapshot",
    "PositionEvent",
    "PositionManager",
    "PositionRecord",
    "PositionType",
    "PostgresConfig",
    "PostgresStore",
    "RegistryAutoCollisionError",
    "RegistryRow",
    "RollbackInfo",
    "RollbackNotSafeError",
    "SQLiteConfig",
    "SQLiteConfigLight",
    "SQLiteStore",
    "StateConflictError",
    "StateData",
    "StateManager",
    "StateManagerConfig",
    "StateMigration",
    "StateNotFoundError",
    "StateTier",
    "TierMetrics",
    "ValueConfidence",
    "WarmBackendType",
    "migrate",
]

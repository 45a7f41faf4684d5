"""The read models built from the log; see each module for what it answers."""

from __future__ import annotations

from ..projection import Projection
from .accounting import AccountingProjection
from .ledger import LedgerProjection
from .metrics import MetricsProjection
from .migration import MigrationProjection
from .nav import NavProjection
from .orders import OrdersProjection
from .positions import PositionEventsProjection
from .registry import RegistryProjection
from .state import StateProjection

ALL_PROJECTIONS: tuple[type[Projection], ...] = (
    StateProjection,
    OrdersProjection,
    RegistryProjection,
    NavProjection,
    MetricsProjection,
    LedgerProjection,
    PositionEventsProjection,
    AccountingProjection,
    MigrationProjection,
)
"""The nine read models, in the order the engine starts and rebuilds them."""

__all__ = [
    "ALL_PROJECTIONS",
    "AccountingProjection",
    "LedgerProjection",
    "MetricsProjection",
    "MigrationProjection",
    "NavProjection",
    "OrdersProjection",
    "PositionEventsProjection",
    "RegistryProjection",
    "StateProjection",
]

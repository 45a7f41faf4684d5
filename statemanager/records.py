"""The record types runners pass to and get from the ``StateManager``.

Fields follow the legacy tables (``docs/legacy-schema.md``). Records that are
also domain events' payloads (``LedgerEntry``, ``RegistryRow``, ...) are those
very Structs; the others are written here with the defaults a runner expects,
and convert to and from the read models' rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from projections.events import (
    AccountingEventRecorded,
    ClobFill,
    ClobOrderSide,
    ClobOrderStatus,
    HandleMapping,
    LedgerEntry,
    PositionEventRecorded,
    RegistryRow,
    ValueConfidence,
)
from projections.models.ledger import LedgerQuantStats
from projections.models.metrics import PortfolioMetrics as _MetricsRow
from projections.models.nav import Snapshot
from projections.models.orders import ClobOrder

PositionEvent = PositionEventRecorded
"""A position lifecycle event (OPEN, CLOSE, COLLECT_FEES, SNAPSHOT, ...)."""

AccountingEvent = AccountingEventRecorded
"""A typed accounting event (lending, LP, perp ...), keyed by deployment and position key."""


class PortfolioSnapshot(msgspec.Struct, kw_only=True):
    """One point of the NAV series; ``id`` is assigned by the store when saved."""

    deployment_id: str
    timestamp: datetime
    total_value_usd: Decimal
    available_cash_usd: Decimal
    deployed_capital_usd: Decimal = Decimal("0")
    wallet_total_value_usd: Decimal = Decimal("0")
    value_confidence: ValueConfidence = ValueConfidence.HIGH
    positions: dict[str, Any] | list[Any] = msgspec.field(default_factory=list)
    token_prices: dict[str, Any] = msgspec.field(default_factory=dict)
    wallet_balances: list[Any] = msgspec.field(default_factory=list)
    chain: str | None = None
    iteration_number: int = 0
    cycle_id: str = ""
    execution_mode: str = ""
    id: int | None = None
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Snapshot) -> PortfolioSnapshot:
        return cls(
            deployment_id=row.deployment_id,
            timestamp=row.timestamp,
            total_value_usd=row.total_value_usd,
            available_cash_usd=row.available_cash_usd,
            deployed_capital_usd=row.deployed_capital_usd,
            wallet_total_value_usd=row.wallet_total_value_usd,
            value_confidence=row.value_confidence,
            positions=row.positions,
            token_prices=row.token_prices,
            wallet_balances=row.wallet_balances,
            chain=row.chain,
            iteration_number=row.iteration_number,
            cycle_id=row.cycle_id,
            execution_mode=row.execution_mode,
            id=row.snapshot_id,
            created_at=row.created_at,
        )


class PortfolioMetrics(msgspec.Struct, kw_only=True):
    """The PnL baseline of a deployment; ``None`` in a USD field means unmeasured."""

    deployment_id: str
    initial_value_usd: Decimal
    timestamp: datetime
    deposits_usd: Decimal | None = Decimal("0")
    withdrawals_usd: Decimal | None = Decimal("0")
    gas_spent_usd: Decimal | None = Decimal("0")
    total_value_usd: Decimal | None = None
    positions: list[Any] = msgspec.field(default_factory=list)
    cycle_id: str | None = None
    execution_mode: str = ""
    is_complete: bool = True

    @classmethod
    def from_row(cls, row: _MetricsRow) -> PortfolioMetrics:
        return cls(
            deployment_id=row.deployment_id,
            initial_value_usd=row.initial_value_usd,
            timestamp=row.updated_at,
            deposits_usd=row.deposits_usd,
            withdrawals_usd=row.withdrawals_usd,
            gas_spent_usd=row.gas_spent_usd,
            total_value_usd=row.total_value_usd,
            positions=row.positions,
            cycle_id=row.cycle_id,
            execution_mode=row.execution_mode,
            is_complete=row.is_complete,
        )


class ClobOrderState(msgspec.Struct, kw_only=True):
    """A CLOB order as persisted for crash recovery; open while pending ... partially filled."""

    deployment_id: str
    order_id: str
    market_id: str
    token_id: str
    side: ClobOrderSide
    status: ClobOrderStatus
    price: Decimal
    size: Decimal
    filled_size: Decimal = Decimal("0")
    average_fill_price: Decimal | None = None
    fills: tuple[ClobFill, ...] = ()
    order_type: str = "GTC"
    intent_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    submitted_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: ClobOrder) -> ClobOrderState:
        return cls(**msgspec.structs.asdict(row))


__all__ = [
    "AccountingEvent",
    "ClobFill",
    "ClobOrderSide",
    "ClobOrderState",
    "ClobOrderStatus",
    "HandleMapping",
    "LedgerEntry",
    "LedgerQuantStats",
    "PortfolioMetrics",
    "PortfolioSnapshot",
    "PositionEvent",
    "RegistryRow",
    "ValueConfidence",
]

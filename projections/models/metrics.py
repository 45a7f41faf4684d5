"""The PnL baseline: one portfolio-metrics row per deployment, replaced by each save.

A USD field the writer could not measure stays NULL and reads back ``None``,
never ``Decimal("0")``: "capital flows unmeasured" and "no capital flows" lead
to different PnL, so the two must not meet in this table.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from eventstore import EventStore, Placement, Statement

from ..events import DomainEvent, PortfolioMetricsSaved
from ..projection import Projection, Table, dec, flag, from_json, to_json, ts, undec, unts


class PortfolioMetrics(msgspec.Struct, frozen=True):
    """The last saved baseline; ``None`` in a USD field means unmeasured.

    ``initial_timestamp`` is what the legacy column holds: the metrics' own
    timestamp at the last save. ``updated_at`` is when that save happened.
    """

    deployment_id: str
    initial_value_usd: Decimal
    initial_timestamp: datetime
    deposits_usd: Decimal | None
    withdrawals_usd: Decimal | None
    gas_spent_usd: Decimal | None
    total_value_usd: Decimal | None
    positions: list[Any]
    cycle_id: str | None
    execution_mode: str
    is_complete: bool
    updated_at: datetime


_COLUMNS = (
    "deployment_id, initial_value_usd, initial_timestamp, deposits_usd, withdrawals_usd, "
    "gas_spent_usd, total_value_usd, positions, cycle_id, execution_mode, is_complete, updated_at"
)


class MetricsProjection(Projection):
    name = "metrics"
    version = 1
    handles = (PortfolioMetricsSaved,)
    tables = (
        Table(
            "portfolio_metrics",
            """deployment_id TEXT PRIMARY KEY,
            initial_value_usd TEXT NOT NULL,
            initial_timestamp BIGINT NOT NULL,
            deposits_usd TEXT,
            withdrawals_usd TEXT,
            gas_spent_usd TEXT,
            total_value_usd TEXT,
            positions TEXT NOT NULL,
            cycle_id TEXT,
            execution_mode TEXT NOT NULL,
            is_complete BIGINT NOT NULL,
            updated_at BIGINT NOT NULL""",
        ),
    )

    def prepare(self) -> None:
        table = self.t["portfolio_metrics"]
        marks = ", ".join(f"${i}" for i in range(1, 13))
        updates = ", ".join(
            f"{column} = excluded.{column}" for column in _COLUMNS.replace(" ", "").split(",")[1:]
        )
        self._upsert = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (deployment_id) DO UPDATE SET {updates}"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table} WHERE deployment_id = $1"

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        return event.deployment_id if isinstance(event, PortfolioMetricsSaved) else None

    def fold(self, earlier: Statement, later: Statement) -> Statement | None:
        """Every save replaces the whole row: the later one is all that counts."""
        return later if earlier.sql == later.sql == self._upsert else None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, PortfolioMetricsSaved):
            yield Statement(
                self._upsert,
                (
                    event.deployment_id,
                    dec(event.initial_value_usd),
                    ts(event.initial_timestamp),
                    dec(event.deposits_usd),
                    dec(event.withdrawals_usd),
                    dec(event.gas_spent_usd),
                    dec(event.total_value_usd),
                    to_json(event.positions),
                    event.cycle_id,
                    event.execution_mode,
                    flag(event.is_complete),
                    ts(event.updated_at),
                ),
            )

    async def get(self, store: EventStore, deployment_id: str) -> PortfolioMetrics | None:
        rows = await store.query(self._select, (deployment_id,))
        if not rows:
            return None
        r = rows[0]
        return PortfolioMetrics(
            deployment_id=r[0],
            initial_value_usd=Decimal(r[1]),
            initial_timestamp=unts(r[2]),  # type: ignore[arg-type]
            deposits_usd=undec(r[3]),
            withdrawals_usd=undec(r[4]),
            gas_spent_usd=undec(r[5]),
            total_value_usd=undec(r[6]),
            positions=from_json(r[7]),
            cycle_id=r[8],
            execution_mode=r[9],
            is_complete=bool(r[10]),
            updated_at=unts(r[11]),  # type: ignore[arg-type]
        )

"""CLOB orders: the current row of every order, and the open ones newest first.

A save replaces the whole order but keeps the ``submitted_at`` of the first
save, as the legacy upsert did, so re-saving an order never moves it in the
newest-first list. A status update touches only what it carries: a ``None``
field keeps the stored value and ``fills``, when given, replaces the whole list.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from eventstore import EventStore, Placement, Statement

from ..events import (
    OPEN_CLOB_ORDER_STATUSES,
    ClobFill,
    ClobOrderDeleted,
    ClobOrderSaved,
    ClobOrderSide,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
)
from ..projection import Index, Projection, Table, dec, from_json, to_json, ts, undec, unts


class ClobOrder(msgspec.Struct, frozen=True):
    """One order as the legacy ``clob_orders`` row holds it (without its rowid)."""

    deployment_id: str
    order_id: str
    market_id: str
    token_id: str
    side: ClobOrderSide
    status: ClobOrderStatus
    price: Decimal
    size: Decimal
    filled_size: Decimal
    average_fill_price: Decimal | None
    fills: tuple[ClobFill, ...]
    order_type: str
    intent_id: str | None
    error: str | None
    metadata: dict[str, Any]
    submitted_at: datetime
    updated_at: datetime

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_CLOB_ORDER_STATUSES


# the literal list keeps the partial index and the query predicate identical text
_OPEN = f"status IN ({', '.join(repr(s.value) for s in sorted(OPEN_CLOB_ORDER_STATUSES))})"

_COLUMNS = (
    "deployment_id, order_id, market_id, token_id, side, status, price, size, filled_size, "
    "average_fill_price, fills, order_type, intent_id, error, metadata, submitted_at, updated_at"
)

_fills = msgspec.json.Decoder(tuple[ClobFill, ...])


class OrdersProjection(Projection):
    name = "orders"
    version = 1
    handles = (ClobOrderSaved, ClobOrderStatusUpdated, ClobOrderDeleted)
    tables = (
        Table(
            "clob_orders",
            """deployment_id TEXT NOT NULL,
            order_id TEXT NOT NULL,
            market_id TEXT NOT NULL,
            token_id TEXT NOT NULL,
            side TEXT NOT NULL,
            status TEXT NOT NULL,
            price TEXT NOT NULL,
            size TEXT NOT NULL,
            filled_size TEXT NOT NULL,
            average_fill_price TEXT,
            fills TEXT NOT NULL,
            order_type TEXT NOT NULL,
            intent_id TEXT,
            error TEXT,
            metadata TEXT NOT NULL,
            submitted_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (deployment_id, order_id)""",
            (
                Index(
                    "open",
                    "INDEX {name} ON {table} (deployment_id, submitted_at DESC, order_id DESC) "
                    f"WHERE {_OPEN}",
                ),
                Index(
                    "open_by_market",
                    "INDEX {name} ON {table} "
                    "(deployment_id, market_id, submitted_at DESC, order_id DESC) "
                    f"WHERE {_OPEN}",
                ),
            ),
        ),
    )

    def prepare(self) -> None:
        table = self.t["clob_orders"]
        marks = ", ".join(f"${i}" for i in range(1, 18))
        kept = {"deployment_id", "order_id", "submitted_at"}
        updates = ", ".join(
            f"{column} = excluded.{column}"
            for column in _COLUMNS.replace(" ", "").split(",")
            if column not in kept
        )
        self._upsert = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (deployment_id, order_id) DO UPDATE SET {updates}"
        )
        self._update = (
            f"UPDATE {table} SET status = $3, updated_at = $4, "
            "fills = coalesce($5, fills), filled_size = coalesce($6, filled_size), "
            "average_fill_price = coalesce($7, average_fill_price), error = coalesce($8, error) "
            "WHERE deployment_id = $1 AND order_id = $2"
        )
        self._delete = f"DELETE FROM {table} WHERE deployment_id = $1 AND order_id = $2"
        self._select = f"SELECT {_COLUMNS} FROM {table}"

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        if isinstance(event, (ClobOrderSaved, ClobOrderStatusUpdated, ClobOrderDeleted)):
            return (event.deployment_id, event.order_id)
        return None

    def fold(self, earlier: Statement, later: Statement) -> Statement | None:
        """A save or update then an update: one statement with the update applied the
        way its SQL would (given values replace, NULLs keep). Anything then a delete:
        the delete."""
        if later.sql == self._delete:
            return later
        if later.sql != self._update:
            return None
        _, _, status, updated_at, fills, filled, average, error = later.params
        p = earlier.params
        if earlier.sql == self._update:
            return Statement(
                self._update,
                (
                    p[0],
                    p[1],
                    status,
                    updated_at,
                    _given(fills, p[4]),
                    _given(filled, p[5]),
                    _given(average, p[6]),
                    _given(error, p[7]),
                ),
            )
        if earlier.sql == self._upsert:
            row = list(p)
            row[5], row[16] = status, updated_at
            row[10] = _given(fills, row[10])
            row[8] = _given(filled, row[8])
            row[9] = _given(average, row[9])
            row[13] = _given(error, row[13])
            return Statement(self._upsert, tuple(row))
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, ClobOrderSaved):
            yield Statement(
                self._upsert,
                (
                    event.deployment_id,
                    event.order_id,
                    event.market_id,
                    event.token_id,
                    event.side,
                    event.status.value,
                    dec(event.price),
                    dec(event.size),
                    dec(event.filled_size),
                    # the legacy save stores a falsy average (zero included) as NULL
                    dec(event.average_fill_price) if event.average_fill_price else None,
                    to_json(event.fills),
                    event.order_type,
                    event.intent_id,
                    event.error,
                    to_json(event.metadata),
                    ts(event.submitted_at),
                    ts(event.updated_at),
                ),
            )
        elif isinstance(event, ClobOrderStatusUpdated):
            yield Statement(
                self._update,
                (
                    event.deployment_id,
                    event.order_id,
                    event.status.value,
                    ts(event.updated_at),
                    None if event.fills is None else to_json(event.fills),
                    dec(event.filled_size),
                    # unlike a save, an update stores the given value, a zero included
                    dec(event.average_fill_price),
                    event.error,
                ),
            )
        elif isinstance(event, ClobOrderDeleted):
            yield Statement(self._delete, (event.deployment_id, event.order_id))

    # -- queries ----------------------------------------------------------------------

    async def get(self, store: EventStore, deployment_id: str, order_id: str) -> ClobOrder | None:
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 AND order_id = $2", (deployment_id, order_id)
        )
        return _order(rows[0]) if rows else None

    async def open_orders(
        self, store: EventStore, deployment_id: str, market_id: str | None = None
    ) -> list[ClobOrder]:
        """Newest first by first submission (ties: higher order id first).

        ``market_id`` filters only when truthy: ``""`` lists every market, as
        the legacy ``get_open_clob_orders`` did.
        """
        sql = f"{self._select} WHERE deployment_id = $1 AND {_OPEN}"
        params: list[Any] = [deployment_id]
        if market_id:
            params.append(market_id)
            sql += " AND market_id = $2"
        rows = await store.query(f"{sql} ORDER BY submitted_at DESC, order_id DESC", params)
        return [_order(row) for row in rows]


def _order(row: Any) -> ClobOrder:
    return ClobOrder(
        deployment_id=row[0],
        order_id=row[1],
        market_id=row[2],
        token_id=row[3],
        side=row[4],
        status=ClobOrderStatus(row[5]),
        price=Decimal(row[6]),
        size=Decimal(row[7]),
        filled_size=Decimal(row[8]),
        average_fill_price=undec(row[9]),
        fills=_fills.decode(row[10]),
        order_type=row[11],
        intent_id=row[12],
        error=row[13],
        metadata=from_json(row[14]),
        submitted_at=unts(row[15]),  # type: ignore[arg-type]
        updated_at=unts(row[16]),  # type: ignore[arg-type]
    )


def _given(value: Any, current: Any) -> Any:
    """``coalesce(value, current)``, as the update statement computes it."""
    return current if value is None else value

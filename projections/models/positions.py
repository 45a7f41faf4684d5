"""Position lifecycle events (OPEN, CLOSE, COLLECT_FEES, ...), as the legacy table held them.

An event id is recorded once: the first write wins and a repeat is ignored (the
legacy INSERT OR IGNORE); afterwards only the attribution may change. Cells keep
the legacy encoding so the dict readers return what ``get_position_events_sync``
returned: an absent amount is ``''`` (SQL NULL only where the imported row held
NULL, per ``legacy.null_columns``), booleans are 0/1, the attribution is JSON text.

Orderings: the legacy readers sort by timestamp with no tie-breaker, so SQLite
returned equal timestamps in insertion (rowid) order. ``seq`` (the event's
``deployment_seq``) is that insertion order here, and breaks ties: ascending in
the oldest-first readers, descending in the newest-first one. Text keys (ids,
position ids) sort by code point on SQLite and on a PostgreSQL database with a C
collation; another collation would order them differently.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventstore import EventStore, Placement, Statement

from ..events import DomainEvent, PositionAttributionUpdated, PositionEventRecorded
from ..projection import (
    Index,
    Projection,
    Table,
    flag,
    from_json,
    to_json,
    ts,
    undec,
    unflag,
    unts,
)

_LEGACY_COLUMNS = (
    "id, deployment_id, cycle_id, execution_mode, position_id, position_type, event_type, "
    "timestamp, protocol, chain, token0, token1, amount0, amount1, value_usd, tick_lower, "
    "tick_upper, liquidity, in_range, fees_token0, fees_token1, leverage, entry_price, "
    "mark_price, unrealized_pnl, is_long, tx_hash, gas_usd, ledger_entry_id, "
    "protocol_fees_usd, attribution_json, attribution_version"
)
_LEGACY_NAMES = tuple(_LEGACY_COLUMNS.replace(" ", "").split(","))
# the stored columns in legacy order (``ts`` holds the timestamp as microseconds)
_COLUMNS = _LEGACY_COLUMNS.replace("timestamp", "ts")
_TEXT_FIELDS = (
    "cycle_id",
    "execution_mode",
    "protocol",
    "chain",
    "token0",
    "token1",
    "tx_hash",
    "ledger_entry_id",
)
_DECIMAL_FIELDS = (
    "amount0",
    "amount1",
    "value_usd",
    "liquidity",
    "fees_token0",
    "fees_token1",
    "leverage",
    "entry_price",
    "mark_price",
    "unrealized_pnl",
    "gas_usd",
    "protocol_fees_usd",
)


class PositionEventsProjection(Projection):
    name = "position_events"
    version = 1
    handles = (PositionEventRecorded, PositionAttributionUpdated)
    tables = (
        Table(
            "position_events",
            """deployment_id TEXT NOT NULL,
            id TEXT NOT NULL,
            cycle_id TEXT,
            execution_mode TEXT,
            position_id TEXT NOT NULL,
            position_type TEXT NOT NULL,
            event_type TEXT NOT NULL,
            ts BIGINT NOT NULL,
            protocol TEXT,
            chain TEXT,
            token0 TEXT,
            token1 TEXT,
            amount0 TEXT,
            amount1 TEXT,
            value_usd TEXT,
            tick_lower BIGINT,
            tick_upper BIGINT,
            liquidity TEXT,
            in_range BIGINT,
            fees_token0 TEXT,
            fees_token1 TEXT,
            leverage TEXT,
            entry_price TEXT,
            mark_price TEXT,
            unrealized_pnl TEXT,
            is_long BIGINT,
            tx_hash TEXT,
            gas_usd TEXT,
            ledger_entry_id TEXT,
            protocol_fees_usd TEXT,
            attribution_json TEXT NOT NULL,
            attribution_version BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (deployment_id, id)""",
            (
                Index("by_time", "INDEX {name} ON {table} (deployment_id, ts, seq)"),
                Index("lifecycle", "INDEX {name} ON {table} (deployment_id, position_id, ts, seq)"),
                Index("by_type", "INDEX {name} ON {table} (deployment_id, position_type)"),
            ),
        ),
    )

    def prepare(self) -> None:
        table = self.t["position_events"]
        marks = ", ".join(f"${i}" for i in range(1, len(_LEGACY_NAMES) + 2))
        self._insert = (
            f"INSERT INTO {table} ({_COLUMNS}, seq) VALUES ({marks}) "
            "ON CONFLICT (deployment_id, id) DO NOTHING"
        )
        self._attribute = (
            f"UPDATE {table} SET attribution_json = $1, attribution_version = $2 "
            "WHERE deployment_id = $3 AND id = $4"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table}"

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        if isinstance(event, (PositionEventRecorded, PositionAttributionUpdated)):
            return (event.deployment_id, event.position_event_id)
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, PositionEventRecorded):
            yield Statement(self._insert, (*_event_row(event), recorded.deployment_seq))
        elif isinstance(event, PositionAttributionUpdated):
            yield Statement(
                self._attribute,
                (
                    to_json(event.attribution),
                    event.attribution_version,
                    event.deployment_id,
                    event.position_event_id,
                ),
            )

    # -- queries ----------------------------------------------------------------------

    async def events(
        self,
        store: EventStore,
        deployment_id: str,
        *,
        position_id: str | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> list[PositionEventRecorded]:
        """Newest first (ties: the later recorded first), at most ``limit`` (< 0 reads as 0)."""
        where, params = self._where(deployment_id, position_id=position_id, event_type=event_type)
        params.append(max(limit, 0))
        rows = await store.query(
            f"{self._select} {where} ORDER BY ts DESC, seq DESC LIMIT ${len(params)}", params
        )
        return [_event(row) for row in rows]

    async def history(
        self, store: EventStore, deployment_id: str, position_id: str
    ) -> list[PositionEventRecorded]:
        """One position's events, oldest first (ties: in the order they were recorded)."""
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 AND position_id = $2 ORDER BY ts, seq",
            (deployment_id, position_id),
        )
        return [_event(row) for row in rows]

    async def filtered(
        self, store: EventStore, deployment_id: str, position_types: frozenset[str]
    ) -> list[dict[str, Any]]:
        """The events of the given position types, ordered by position id, time, event id.

        That is the reference's own (total) order; an empty set reads nothing.
        """
        if not position_types:
            return []
        kinds = sorted(position_types)
        marks = ", ".join(f"${i}" for i in range(2, len(kinds) + 2))
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 AND position_type IN ({marks}) "
            "ORDER BY position_id, ts, id",
            (deployment_id, *kinds),
        )
        return [_legacy_dict(row) for row in rows]

    async def as_dicts(
        self,
        store: EventStore,
        deployment_id: str,
        position_id: str | None = None,
        position_type: str | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """``get_position_events_sync`` rows: oldest first (ties: in recorded order).

        A filter applies when it is a non-empty string, as in the legacy reader.
        """
        where, params = self._where(
            deployment_id,
            position_id=position_id,
            position_type=position_type,
            event_type=event_type,
        )
        rows = await store.query(f"{self._select} {where} ORDER BY ts, seq", params)
        return [_legacy_dict(row) for row in rows]

    @staticmethod
    def _where(deployment_id: str, **filters: str | None) -> tuple[str, list[Any]]:
        sql = ["WHERE deployment_id = $1"]
        params: list[Any] = [deployment_id]
        for column, value in filters.items():
            if value:
                params.append(value)
                sql.append(f"AND {column} = ${len(params)}")
        return " ".join(sql), params


def _event_row(event: PositionEventRecorded) -> tuple[Any, ...]:
    """The row of a position event. A legacy row's SQL NULLs stay NULL; otherwise an
    absent amount is ``''``, as the legacy writer stored it."""
    n = _NO_NULLS if event.legacy is None else frozenset(event.legacy.null_columns)
    return (
        event.position_event_id,
        event.deployment_id,
        _text(n, "cycle_id", event.cycle_id),
        _text(n, "execution_mode", event.execution_mode),
        event.position_id,
        event.position_type,
        event.position_event_type,
        ts(event.timestamp),
        _text(n, "protocol", event.protocol),
        _text(n, "chain", event.chain),
        _text(n, "token0", event.token0),
        _text(n, "token1", event.token1),
        _amount(n, "amount0", event.amount0),
        _amount(n, "amount1", event.amount1),
        _amount(n, "value_usd", event.value_usd),
        event.tick_lower,
        event.tick_upper,
        _amount(n, "liquidity", event.liquidity),
        flag(event.in_range),
        _amount(n, "fees_token0", event.fees_token0),
        _amount(n, "fees_token1", event.fees_token1),
        _amount(n, "leverage", event.leverage),
        _amount(n, "entry_price", event.entry_price),
        _amount(n, "mark_price", event.mark_price),
        _amount(n, "unrealized_pnl", event.unrealized_pnl),
        flag(event.is_long),
        _text(n, "tx_hash", event.tx_hash),
        _amount(n, "gas_usd", event.gas_usd),
        _text(n, "ledger_entry_id", event.ledger_entry_id),
        _amount(n, "protocol_fees_usd", event.protocol_fees_usd),
        to_json(event.attribution),
        event.attribution_version,
    )


_NO_NULLS: frozenset[str] = frozenset()


def _text(nulls: frozenset[str], column: str, value: str) -> str | None:
    return None if column in nulls else value


def _amount(nulls: frozenset[str], column: str, value: Decimal | None) -> str | None:
    if value is not None:
        return str(value)
    return None if column in nulls else ""


def _legacy_dict(row: Any) -> dict[str, Any]:
    values = dict(zip(_LEGACY_NAMES, row, strict=True))
    moment: datetime = unts(values["timestamp"])  # type: ignore[assignment]
    values["timestamp"] = moment.isoformat()
    return values


def _event(row: Any) -> PositionEventRecorded:
    values = dict(zip(_LEGACY_NAMES, row, strict=True))
    fields: dict[str, Any] = {name: values[name] or "" for name in _TEXT_FIELDS}
    fields.update({name: undec(values[name]) for name in _DECIMAL_FIELDS})
    return PositionEventRecorded(
        position_event_id=values["id"],
        deployment_id=values["deployment_id"],
        position_id=values["position_id"],
        position_type=values["position_type"],
        position_event_type=values["event_type"],
        timestamp=unts(values["timestamp"]),  # type: ignore[arg-type]
        tick_lower=values["tick_lower"],
        tick_upper=values["tick_upper"],
        in_range=unflag(values["in_range"]),
        is_long=unflag(values["is_long"]),
        attribution=from_json(values["attribution_json"]),
        attribution_version=values["attribution_version"],
        **fields,
    )

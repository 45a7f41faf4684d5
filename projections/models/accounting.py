"""Typed accounting events, the full history per deployment, oldest first.

Cost basis is rebuilt from the opening event forward, so readers get every
event, unpaged. Re-recording an id replaces the event: production ids are
derived (UUIDv5) from what the event describes, so re-deriving one after a
retry or a reprocess must overwrite it, not add a twin.

Equal timestamps are ordered by id (the reference's PostgreSQL reader does so;
its SQLite reader used rowid), compared by code point on both backends as long
as the PostgreSQL database uses the C collation.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from eventstore import EventStore, Placement, Statement

from ..events import AccountingEventRecorded, DomainEvent
from ..projection import Index, Projection, Table, from_json, to_json, ts, unts

_COLUMNS = (
    "accounting_event_id, deployment_id, cycle_id, execution_mode, ts, chain, protocol, "
    "wallet_address, accounting_event_type, position_key, ledger_entry_id, tx_hash, "
    "confidence, payload, payload_schema_version, position_reference"
)

_ROW_KEYS = (
    "id",
    "deployment_id",
    "cycle_id",
    "execution_mode",
    "timestamp",
    "chain",
    "protocol",
    "wallet_address",
    "event_type",
    "position_key",
    "ledger_entry_id",
    "tx_hash",
    "confidence",
    "payload_json",
    "schema_version",
    "position_reference",
)
"""The legacy ``accounting_events`` columns, in ``SELECT *`` order."""


class AccountingProjection(Projection):
    name = "accounting"
    version = 1
    handles = (AccountingEventRecorded,)
    tables = (
        Table(
            "accounting_events",
            """deployment_id TEXT NOT NULL,
            accounting_event_id TEXT NOT NULL,
            cycle_id TEXT NOT NULL,
            execution_mode TEXT NOT NULL,
            ts BIGINT NOT NULL,
            chain TEXT NOT NULL,
            protocol TEXT NOT NULL,
            wallet_address TEXT NOT NULL,
            accounting_event_type TEXT NOT NULL,
            position_key TEXT NOT NULL,
            ledger_entry_id TEXT,
            tx_hash TEXT,
            confidence TEXT NOT NULL,
            payload TEXT NOT NULL,
            payload_schema_version BIGINT NOT NULL,
            position_reference TEXT,
            PRIMARY KEY (deployment_id, accounting_event_id)""",
            (
                Index(
                    "by_time", "INDEX {name} ON {table} (deployment_id, ts, accounting_event_id)"
                ),
                Index(
                    "by_position",
                    "INDEX {name} ON {table} "
                    "(deployment_id, position_key, ts, accounting_event_id)",
                ),
            ),
        ),
    )

    def prepare(self) -> None:
        table = self.t["accounting_events"]
        columns = _COLUMNS.replace(" ", "").split(",")
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        updates = ", ".join(
            f"{column} = excluded.{column}"
            for column in columns
            if column not in ("deployment_id", "accounting_event_id")
        )
        self._upsert = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (deployment_id, accounting_event_id) DO UPDATE SET {updates}"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table} WHERE deployment_id = $1"

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        if isinstance(event, AccountingEventRecorded):
            return (event.deployment_id, event.accounting_event_id)
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, AccountingEventRecorded):
            yield Statement(
                self._upsert,
                (
                    event.accounting_event_id,
                    event.deployment_id,
                    event.cycle_id,
                    event.execution_mode,
                    ts(event.timestamp),
                    event.chain,
                    event.protocol,
                    event.wallet_address,
                    event.accounting_event_type,
                    event.position_key,
                    event.ledger_entry_id,
                    event.tx_hash,
                    event.confidence,
                    to_json(event.payload),
                    event.payload_schema_version,
                    None if event.position_reference is None else to_json(event.position_reference),
                ),
            )

    # -- queries ----------------------------------------------------------------------

    async def _rows(
        self, store: EventStore, deployment_id: str, position_key: str | None
    ) -> list[Any]:
        sql = self._select
        params: list[Any] = [deployment_id]
        if position_key is not None:
            params.append(position_key)
            sql += " AND position_key = $2"
        return await store.query(f"{sql} ORDER BY ts, accounting_event_id", params)

    async def events(
        self, store: EventStore, deployment_id: str, position_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows shaped like ``get_accounting_events_sync``: oldest first (ties: lower id first).

        Keys and their order are the legacy table's ``SELECT *``: ``timestamp``
        is ISO text, ``payload_json`` and ``position_reference`` are JSON text
        (``position_reference`` ``None`` where the event has none). A
        ``position_key`` of ``""`` filters for the events filed under the empty
        key (production swaps), as the reference's ``is not None`` test does;
        only ``None`` lists every key. The dashboard read takes these same rows:
        the reference prefers this read wherever the backend has it.
        """
        return [
            dict(zip(_ROW_KEYS, _legacy_values(row), strict=True))
            for row in await self._rows(store, deployment_id, position_key)
        ]

    async def records(
        self, store: EventStore, deployment_id: str, position_key: str | None = None
    ) -> list[AccountingEventRecorded]:
        """The same events as :meth:`events`, same order and filter, as typed records.

        ``legacy`` is not kept in the table, so it is always ``None`` here.
        """
        return [_record(row) for row in await self._rows(store, deployment_id, position_key)]


def _legacy_values(row: Any) -> tuple[Any, ...]:
    moment = unts(row[4])
    return (
        row[0],
        row[1],
        row[2],
        row[3],
        None if moment is None else moment.isoformat(),
        *row[5:14],
        int(row[14]),
        row[15],
    )


def _record(row: Any) -> AccountingEventRecorded:
    return AccountingEventRecorded(
        accounting_event_id=row[0],
        deployment_id=row[1],
        cycle_id=row[2],
        execution_mode=row[3],
        timestamp=unts(row[4]),  # type: ignore[arg-type]
        chain=row[5],
        protocol=row[6],
        wallet_address=row[7],
        accounting_event_type=row[8],
        position_key=row[9],
        ledger_entry_id=row[10],
        tx_hash=row[11],
        confidence=row[12],
        payload=from_json(row[13]),
        payload_schema_version=int(row[14]),
        position_reference=from_json(row[15]),
    )

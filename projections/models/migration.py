"""Registry-cutover progress: one ``migration_state`` row per (deployment, primitive, cutover).

The boot guard trusts ``position_registry_backfill_complete``, so nothing here
ever sets it back to 0: the baseline insert leaves an existing row untouched,
progress updates never touch the flag, and only the completion event sets it.
Updates and completions for a row that was never created change nothing, as
the legacy ``UPDATE ... WHERE`` matched nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from eventstore import EventStore, Placement, Statement

from ..events import (
    DomainEvent,
    MigrationBackfillMarkedComplete,
    MigrationStateUpdated,
    MigrationStateUpserted,
)
from ..projection import Projection, Table, from_json, to_json, ts, unts

DEFAULT_SOURCE_TABLE = "position_events"
DEFAULT_READER_VERSION = 1


class MigrationState(msgspec.Struct, frozen=True):
    """A ``migration_state`` row, every column, with times as UTC datetimes."""

    deployment_id: str
    primitive: str
    cutover_key: str
    position_registry_backfill_complete: bool
    backfill_started_at: datetime | None
    backfill_completed_at: datetime | None
    backfill_source_table: str
    backfill_reader_version: int
    rows_synthesized: int
    rows_skipped_already_present: int
    notes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "deployment_id, primitive, cutover_key, position_registry_backfill_complete, "
    "backfill_started_at, backfill_completed_at, backfill_source_table, "
    "backfill_reader_version, rows_synthesized, rows_skipped_already_present, notes, "
    "created_at, updated_at"
)
_KEY = "deployment_id = $1 AND primitive = $2 AND cutover_key = $3"


class MigrationProjection(Projection):
    name = "migration"
    version = 1
    handles = (MigrationStateUpserted, MigrationStateUpdated, MigrationBackfillMarkedComplete)
    tables = (
        Table(
            "migration_state",
            """deployment_id TEXT NOT NULL,
            primitive TEXT NOT NULL,
            cutover_key TEXT NOT NULL,
            position_registry_backfill_complete BIGINT NOT NULL,
            backfill_started_at BIGINT,
            backfill_completed_at BIGINT,
            backfill_source_table TEXT NOT NULL,
            backfill_reader_version BIGINT NOT NULL,
            rows_synthesized BIGINT NOT NULL,
            rows_skipped_already_present BIGINT NOT NULL,
            notes TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (deployment_id, primitive, cutover_key)""",
        ),
    )

    def prepare(self) -> None:
        table = self.t["migration_state"]
        self._insert = (
            f"INSERT INTO {table} ({_COLUMNS}) "
            "VALUES ($1, $2, $3, 0, NULL, NULL, $4, $5, 0, 0, $6, $7, $7) "
            "ON CONFLICT (deployment_id, primitive, cutover_key) DO NOTHING"
        )
        self._update = (
            f"UPDATE {table} SET updated_at = $4, "
            "backfill_started_at = coalesce($5, backfill_started_at), "
            "backfill_source_table = coalesce($6, backfill_source_table), "
            "backfill_reader_version = coalesce($7, backfill_reader_version), "
            "rows_synthesized = coalesce($8, rows_synthesized), "
            "rows_skipped_already_present = coalesce($9, rows_skipped_already_present), "
            f"notes = coalesce($10, notes) WHERE {_KEY}"
        )
        self._complete = (
            f"UPDATE {table} SET position_registry_backfill_complete = 1, "
            "backfill_completed_at = $4, rows_synthesized = $5, "
            f"rows_skipped_already_present = $6, updated_at = $7 WHERE {_KEY}"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table}"

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, MigrationStateUpserted):
            yield Statement(
                self._insert,
                (
                    event.deployment_id,
                    event.primitive,
                    event.cutover_key,
                    DEFAULT_SOURCE_TABLE,
                    DEFAULT_READER_VERSION,
                    "{}",
                    ts(event.created_at),
                ),
            )
        elif isinstance(event, MigrationStateUpdated):
            yield Statement(
                self._update,
                (
                    event.deployment_id,
                    event.primitive,
                    event.cutover_key,
                    ts(event.updated_at),
                    ts(event.backfill_started_at),
                    event.backfill_source_table,
                    event.backfill_reader_version,
                    event.rows_synthesized,
                    event.rows_skipped_already_present,
                    None if event.notes is None else to_json(event.notes),
                ),
            )
        elif isinstance(event, MigrationBackfillMarkedComplete):
            # the counts and times of a repeated completion overwrite the first, as the
            # legacy UPDATE did; the flag was 1 already and stays 1
            yield Statement(
                self._complete,
                (
                    event.deployment_id,
                    event.primitive,
                    event.cutover_key,
                    ts(event.completed_at),
                    event.rows_synthesized,
                    event.rows_skipped_already_present,
                    ts(event.updated_at),
                ),
            )

    # -- queries ----------------------------------------------------------------------

    async def get(
        self, store: EventStore, deployment_id: str, primitive: str, cutover_key: str
    ) -> MigrationState | None:
        """The row, or ``None``; read like the reference ``get_migration_state``.

        An empty source table reads as ``position_events`` and a reader version
        of 0 as 1, and notes that are not a JSON object read as ``{}``.
        """
        rows = await store.query(
            f"{self._select} WHERE {_KEY}", (deployment_id, primitive, cutover_key)
        )
        return _state(rows[0]) if rows else None

    async def for_deployment(self, store: EventStore, deployment_id: str) -> list[MigrationState]:
        """Every cutover of a deployment, by primitive then cutover key."""
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 ORDER BY primitive, cutover_key",
            (deployment_id,),
        )
        return [_state(row) for row in rows]


def _state(row: Any) -> MigrationState:
    notes = from_json(row[10])
    return MigrationState(
        deployment_id=row[0],
        primitive=row[1],
        cutover_key=row[2],
        position_registry_backfill_complete=bool(row[3]),
        backfill_started_at=unts(row[4]),
        backfill_completed_at=unts(row[5]),
        backfill_source_table=row[6] or DEFAULT_SOURCE_TABLE,
        backfill_reader_version=int(row[7]) or DEFAULT_READER_VERSION,
        rows_synthesized=int(row[8]),
        rows_skipped_already_present=int(row[9]),
        notes=notes if isinstance(notes, dict) else {},
        created_at=unts(row[11]),  # type: ignore[arg-type]
        updated_at=unts(row[12]),  # type: ignore[arg-type]
    )

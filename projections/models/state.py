"""Current state: the latest ``StateData`` of each deployment.

The log keeps every version; this table keeps the newest, so ``load_state``
is one primary-key lookup. A deletion removes the row (the versions before it
stay in the log, readable with ``chronicle replay``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Any

import msgspec

from eventstore import EventStore, Placement, Statement

from ..events import DomainEvent, StateDeleted, StateSaved
from ..projection import Projection, Table, from_json, to_json, ts, unts


class CurrentState(msgspec.Struct, frozen=True):
    deployment_id: str
    version: int
    state: dict[str, Any]
    schema_version: int
    checksum: str
    created_at: datetime | None
    updated_at: datetime | None
    stream_version: int
    """The ``state`` stream's version at this save: what the next save must expect."""


class StateProjection(Projection):
    name = "state"
    version = 2  # 2: the row records the state stream's version
    handles = (StateSaved, StateDeleted)
    tables = (
        Table(
            "state",
            """deployment_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            state TEXT NOT NULL,
            schema_version BIGINT NOT NULL,
            checksum TEXT NOT NULL,
            created_at BIGINT,
            updated_at BIGINT,
            stream_version BIGINT NOT NULL""",
        ),
    )

    def prepare(self) -> None:
        table = self.t["state"]
        self._upsert = (
            f"INSERT INTO {table} (deployment_id, version, state, schema_version, checksum, "
            "created_at, updated_at, stream_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (deployment_id) DO UPDATE SET version = excluded.version, "
            "state = excluded.state, schema_version = excluded.schema_version, "
            "checksum = excluded.checksum, updated_at = excluded.updated_at, "
            "stream_version = excluded.stream_version, "
            f"created_at = coalesce({table}.created_at, excluded.created_at)"
        )
        self._delete = f"DELETE FROM {table} WHERE deployment_id = $1"
        self._select = (
            "SELECT deployment_id, version, state, schema_version, checksum, created_at, "
            f"updated_at, stream_version FROM {table}"
        )

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        return event.deployment_id if isinstance(event, (StateSaved, StateDeleted)) else None

    def fold(self, earlier: Statement, later: Statement) -> Statement | None:
        """A save then a save: the later one, keeping the first ``created_at``
        (the upsert keeps a row's first one). Anything then a delete: the delete."""
        if later.sql == self._delete:
            return later
        if earlier.sql == self._upsert and later.sql == self._upsert:
            created = earlier.params[5] if earlier.params[5] is not None else later.params[5]
            return Statement(self._upsert, (*later.params[:5], created, *later.params[6:]))
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, StateSaved):
            first = event.first_created_at or event.created_at
            yield Statement(
                self._upsert,
                (
                    event.deployment_id,
                    event.version,
                    to_json(event.state),
                    event.state_schema_version,
                    event.checksum,
                    ts(first),
                    ts(event.created_at),
                    recorded.stream_version,
                ),
            )
        elif isinstance(event, StateDeleted):
            yield Statement(self._delete, (event.deployment_id,))

    async def get(self, store: EventStore, deployment_id: str) -> CurrentState | None:
        rows = await store.query(f"{self._select} WHERE deployment_id = $1", (deployment_id,))
        return _row(rows[0]) if rows else None

    async def all(self, store: EventStore) -> list[CurrentState]:
        rows = await store.query(f"{self._select} ORDER BY deployment_id")
        return [_row(row) for row in rows]


def _row(row: Any) -> CurrentState:
    return CurrentState(
        row[0], row[1], from_json(row[2]), row[3], row[4], unts(row[5]), unts(row[6]), row[7]
    )

"""What a store holds: deployments, events per type, read models and how far behind they are.

A projection's catalog checkpoint is the last global position its projector
applied. Only projections run behind the log (``run_async``) have a projector;
inline ones commit with their events and leave the checkpoint where their last
rebuild put it. The catalog does not say which is which, so the operator names
the asynchronous ones; for them ``lag`` counts the events of their types past
the checkpoint. For inline ones it is ``None``: they cannot lag.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from eventstore import EventStore
from eventstore.encoding import micros_to_datetime
from projections.engine import CATALOG, ProjectionEngine
from projections.models import ALL_PROJECTIONS

from .source import EVENTS_TABLE, AuditInputError, events_per_type, table_exists


class DeploymentStats(msgspec.Struct, frozen=True):
    deployment_id: str
    events: int
    first_recorded_at: datetime
    last_recorded_at: datetime


class ProjectionStats(msgspec.Struct, frozen=True):
    name: str
    mode: str
    """``inline`` or ``async`` (as the operator said)."""
    stored_version: int | None
    code_version: int
    status: str | None
    checkpoint: int | None
    lag: int | None
    """Events of its types after its checkpoint (asynchronous projections only)."""
    error: str | None = None


class StoreStats(msgspec.Struct, frozen=True):
    backend: str
    events: int
    head_position: int
    readable_below: int
    held_back: int
    """Committed events global readers cannot see yet (PostgreSQL: an older transaction is open)."""
    deployments: list[DeploymentStats]
    events_per_type: dict[str, int]
    unhandled_types: list[str]
    """Types in the log that no read model handles (counted, never applied)."""
    projections: list[ProjectionStats]


async def gather(store: EventStore, async_projections: Sequence[str] = ()) -> StoreStats:
    known = {cls.name for cls in ALL_PROJECTIONS}
    unknown = sorted(set(async_projections) - known)
    if unknown:
        raise AuditInputError(
            f"unknown projection(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    rows = await store.query(
        f"SELECT deployment_id, count(*), min(recorded_at), max(recorded_at) FROM {EVENTS_TABLE} "
        "GROUP BY deployment_id"
    )
    deployments = sorted(
        (DeploymentStats(r[0], int(r[1]), _instant(r[2]), _instant(r[3])) for r in rows),
        key=lambda d: d.deployment_id,
    )
    per_type = await events_per_type(store)
    handled = {t for cls in ALL_PROJECTIONS for t in cls.event_types()}
    horizon = await store.horizon()
    return StoreStats(
        backend=store.backend,
        events=sum(d.events for d in deployments),
        head_position=horizon.head_position,
        readable_below=horizon.readable_below,
        held_back=horizon.held_back,
        deployments=deployments,
        events_per_type=dict(sorted(per_type.items())),
        unhandled_types=sorted(set(per_type) - handled),
        projections=await _projections(store, set(async_projections)),
    )


def _instant(stored: Any) -> datetime:
    """``recorded_at`` as a backend holds it: microseconds (SQLite) or timestamptz."""
    if isinstance(stored, datetime):
        return stored.astimezone(UTC)
    return micros_to_datetime(int(stored))


async def _projections(store: EventStore, async_names: set[str]) -> list[ProjectionStats]:
    catalog = {}
    if await table_exists(store, CATALOG):
        catalog = await ProjectionEngine(store, ALL_PROJECTIONS).catalog()
    out = []
    for cls in ALL_PROJECTIONS:
        row = catalog.get(cls.name)
        mode = "async" if cls.name in async_names else "inline"
        lag = None
        if row is not None and mode == "async":
            types = cls.event_types()
            marks = ", ".join(f"${i}" for i in range(2, len(types) + 2))
            counted = await store.query(
                f"SELECT count(*) FROM {EVENTS_TABLE} WHERE position > $1 AND type IN ({marks})",
                (row.checkpoint, *types),
            )
            lag = int(counted[0][0])
        out.append(
            ProjectionStats(
                name=cls.name,
                mode=mode,
                stored_version=None if row is None else row.version,
                code_version=cls.version,
                status=None if row is None else row.status,
                checkpoint=None if row is None else row.checkpoint,
                lag=lag,
                error=None if row is None else row.error,
            )
        )
    return out

"""The NAV series: portfolio snapshots, one per deployment and timestamp.

Readers page the series by ``(timestamp, id)`` and ask for its ends, a window or
the point at a time, so the table is ordered by ``(deployment_id, ts,
snapshot_id)`` and every bounded read is an index range: nothing reads the whole
series unless the caller asks for it (``nav_series`` in full mode,
``in_window`` without bounds).

Re-recording a timestamp overwrites the values and keeps the row's id, as the
reference's newest writer does (``ON CONFLICT (deployment_id, timestamp) DO
UPDATE ... RETURNING id``): a nav-series cursor already past that ``(timestamp,
id)`` does not see the point again. ``cycle_id`` and ``execution_mode`` only
fill blanks, so a non-empty identity survives, and ``created_at`` moves to the
new write time, which is what retention compares.

Ids are per deployment and unique within it (a second timestamp claiming an id
is refused). The event's ``snapshot_id`` is used as given, so imported legacy
rows keep theirs (``position_state_snapshots`` and nav cursors refer to them).
The writer always assigns one (``max_snapshot_id`` + 1); an event without one
gets its ``deployment_seq``, which the log fixes, so a rebuild assigns the same
id. Either way an id is at most its event's ``deployment_seq``, so the two
never collide; an imported legacy id can be larger, and if a fallback id meets
one, the unique index refuses the write.

The raw rows of ``in_window`` and ``nav_series`` carry the stored text:
decimals exactly as written, and ``positions_json`` as this model's compact
JSON of the parsed document (the same document, not the legacy writer's bytes:
parse it, never compare it as text).

A stats row per deployment keeps the highest id ever stored (like the legacy
``sqlite_sequence``: retention never brings an id back) and the number of
snapshots, so ``max_snapshot_id`` and ``count`` are primary-key lookups.

Retention: the reference deleted ``created_at < now - retention_days`` across
every deployment of the file in one statement. Here each deployment's log gets
its own ``SnapshotRetentionApplied`` carrying the cutoff the writer computed;
a writer that emits one per deployment with the same cutoff deletes the same
rows the global statement did (a legacy file holds one deployment, so its
cleanup is one event). Applied in log order, a retention event never removes a
snapshot recorded after it, whatever its ``created_at``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from eventstore import EventStore, InlineStepFailed, Placement, Statement
from eventstore.encoding import micros_to_datetime

from ..errors import ProjectionWriteRefused
from ..events import (
    DomainEvent,
    PortfolioSnapshotRecorded,
    SnapshotRetentionApplied,
    ValueConfidence,
)
from ..projection import Index, Projection, Table, dec, from_json, to_json, ts, unts


class Snapshot(msgspec.Struct, frozen=True):
    """A ``portfolio_snapshots`` row: decimals exact, times aware UTC, JSON parsed."""

    deployment_id: str
    snapshot_id: int
    cycle_id: str
    execution_mode: str
    timestamp: datetime
    iteration_number: int
    total_value_usd: Decimal
    available_cash_usd: Decimal
    deployed_capital_usd: Decimal
    wallet_total_value_usd: Decimal
    value_confidence: ValueConfidence
    positions: dict[str, Any] | list[Any]
    token_prices: dict[str, Any]
    wallet_balances: list[Any]
    chain: str | None
    created_at: datetime


WindowRow = tuple[datetime, str, str, str]
"""``(timestamp, total_value_usd, value_confidence, positions_json)``, raw stored text.

The reference types the texts ``str | None`` (``''``/``None``: unmeasured); the
events always carry these values, so here they are always text."""

NavRow = tuple[datetime, str, str, int, str, str]
"""``(timestamp, total_value_usd, available_cash_usd, id, positions_json,
value_confidence)``, raw stored text (always text, as for :data:`WindowRow`)."""


class SnapshotIdConflict(ProjectionWriteRefused):
    """A snapshot id already names another timestamp of the same deployment."""


_COLUMNS = (
    "deployment_id, snapshot_id, cycle_id, execution_mode, ts, iteration_number, "
    "total_value_usd, available_cash_usd, deployed_capital_usd, wallet_total_value_usd, "
    "value_confidence, positions, token_prices, wallet_balances, chain, created_at"
)
_OVERWRITTEN = (
    "iteration_number",
    "total_value_usd",
    "available_cash_usd",
    "deployed_capital_usd",
    "wallet_total_value_usd",
    "value_confidence",
    "positions",
    "token_prices",
    "wallet_balances",
    "chain",
    "created_at",
)


class NavProjection(Projection):
    name = "nav"
    version = 1
    handles = (PortfolioSnapshotRecorded, SnapshotRetentionApplied)
    tables = (
        Table(
            "portfolio_snapshots",
            """deployment_id TEXT NOT NULL,
            snapshot_id BIGINT NOT NULL,
            cycle_id TEXT NOT NULL,
            execution_mode TEXT NOT NULL,
            ts BIGINT NOT NULL,
            iteration_number BIGINT NOT NULL,
            total_value_usd TEXT NOT NULL,
            available_cash_usd TEXT NOT NULL,
            deployed_capital_usd TEXT NOT NULL,
            wallet_total_value_usd TEXT NOT NULL,
            value_confidence TEXT NOT NULL,
            positions TEXT NOT NULL,
            token_prices TEXT NOT NULL,
            wallet_balances TEXT NOT NULL,
            chain TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (deployment_id, ts)""",
            (
                Index("by_time", "INDEX {name} ON {table} (deployment_id, ts, snapshot_id)"),
                Index("ids", "UNIQUE INDEX {name} ON {table} (deployment_id, snapshot_id)"),
                Index("by_created", "INDEX {name} ON {table} (deployment_id, created_at)"),
            ),
        ),
        Table(
            "portfolio_snapshot_stats",
            """deployment_id TEXT PRIMARY KEY,
            max_snapshot_id BIGINT NOT NULL,
            snapshot_count BIGINT NOT NULL""",
        ),
    )

    def prepare(self) -> None:
        snaps, stats = self.t["portfolio_snapshots"], self.t["portfolio_snapshot_stats"]
        marks = ", ".join(f"${i}" for i in range(1, 17))
        overwrite = ", ".join(f"{column} = excluded.{column}" for column in _OVERWRITTEN)
        keep_identity = ", ".join(
            f"{column} = CASE WHEN {snaps}.{column} = '' THEN excluded.{column} "
            f"ELSE {snaps}.{column} END"
            for column in ("cycle_id", "execution_mode")
        )
        self._upsert = (
            f"INSERT INTO {snaps} ({_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (deployment_id, ts) DO UPDATE SET {overwrite}, {keep_identity}"
        )
        # runs before the upsert: a re-recorded timestamp keeps its id and adds no row
        existing = f"FROM {snaps} WHERE deployment_id = $1 AND ts = $2"
        self._count_in = (
            f"INSERT INTO {stats} (deployment_id, max_snapshot_id, snapshot_count) "
            f"VALUES ($1, coalesce((SELECT snapshot_id {existing}), $3), "
            f"CASE WHEN EXISTS (SELECT 1 {existing}) THEN 0 ELSE 1 END) "
            f"ON CONFLICT (deployment_id) DO UPDATE SET "
            f"snapshot_count = {stats}.snapshot_count + excluded.snapshot_count, "
            f"max_snapshot_id = CASE WHEN excluded.max_snapshot_id > {stats}.max_snapshot_id "
            f"THEN excluded.max_snapshot_id ELSE {stats}.max_snapshot_id END"
        )
        self._count_out = (
            f"UPDATE {stats} SET snapshot_count = {stats}.snapshot_count - "
            f"(SELECT count(*) FROM {snaps} WHERE deployment_id = $1 AND created_at < $2) "
            f"WHERE {stats}.deployment_id = $1"
        )
        self._prune = f"DELETE FROM {snaps} WHERE deployment_id = $1 AND created_at < $2"
        self._select = f"SELECT {_COLUMNS} FROM {snaps} WHERE deployment_id = $1"
        self._window = (
            "SELECT ts, total_value_usd, value_confidence, positions "
            f"FROM {snaps} WHERE deployment_id = $1"
        )
        self._series = (
            "SELECT ts, total_value_usd, available_cash_usd, snapshot_id, positions, "
            f"value_confidence FROM {snaps} WHERE deployment_id = $1"
        )
        self._stats = (
            f"SELECT max_snapshot_id, snapshot_count FROM {stats} WHERE deployment_id = $1"
        )
        self._id_owner = f"SELECT ts FROM {snaps} WHERE deployment_id = $1 AND snapshot_id = $2"

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        """One timestamp's row; the stats row only counts and takes a maximum.
        A retention prune spans many rows: a barrier."""
        if isinstance(event, PortfolioSnapshotRecorded):
            return (event.deployment_id, event.timestamp)
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, PortfolioSnapshotRecorded):
            snapshot_id = _snapshot_id(event, recorded)
            at = ts(event.timestamp)
            yield Statement(self._count_in, (event.deployment_id, at, snapshot_id))
            yield Statement(self._upsert, _row(event, snapshot_id))
        elif isinstance(event, SnapshotRetentionApplied):
            cutoff = ts(event.cutoff)
            yield Statement(self._count_out, (event.deployment_id, cutoff))
            yield Statement(self._prune, (event.deployment_id, cutoff))

    async def explain(
        self, store: EventStore, failure: InlineStepFailed, event: DomainEvent
    ) -> Exception | None:
        """Name the snapshot whose id a refused snapshot tried to take."""
        if not isinstance(event, PortfolioSnapshotRecorded) or event.snapshot_id is None:
            return None
        # SQLite names the columns, PostgreSQL the index
        constraint = failure.constraint or ""
        if "snapshot_id" not in constraint and "_ids_g" not in constraint:
            return None
        rows = await store.query(self._id_owner, (event.deployment_id, event.snapshot_id))
        if not rows or rows[0][0] == ts(event.timestamp):
            return None
        return SnapshotIdConflict(
            f"snapshot id {event.snapshot_id} of deployment {event.deployment_id!r} already "
            f"belongs to the snapshot at {unts(rows[0][0])}; assign "
            "max_snapshot_id + 1 to a new timestamp. Nothing was written."
        )

    # -- queries ----------------------------------------------------------------------

    async def latest(self, store: EventStore, deployment_id: str) -> Snapshot | None:
        """The newest snapshot by timestamp (ties, impossible per deployment: higher id)."""
        rows = await store.query(
            f"{self._select} ORDER BY ts DESC, snapshot_id DESC LIMIT 1", (deployment_id,)
        )
        return _snapshot(rows[0]) if rows else None

    async def first(self, store: EventStore, deployment_id: str) -> Snapshot | None:
        """The oldest snapshot by timestamp, lower id first (the reference's order)."""
        rows = await store.query(
            f"{self._select} ORDER BY ts, snapshot_id LIMIT 1", (deployment_id,)
        )
        return _snapshot(rows[0]) if rows else None

    async def since(
        self, store: EventStore, deployment_id: str, since: datetime, limit: int = 168
    ) -> list[Snapshot]:
        """Snapshots at or after ``since`` (inclusive), oldest first, at most ``limit``.

        A ``limit`` of 0 or less gives ``[]`` (the PostgreSQL reference refuses a
        negative LIMIT, and its manager turns the error into ``[]``).
        """
        if limit <= 0:
            return []
        rows = await store.query(
            f"{self._select} AND ts >= $2 ORDER BY ts, snapshot_id LIMIT $3",
            (deployment_id, ts(since), limit),
        )
        return [_snapshot(row) for row in rows]

    async def recent(
        self, store: EventStore, deployment_id: str, limit: int = 168
    ) -> list[Snapshot]:
        """The newest ``limit`` snapshots, returned oldest first (``[-1]`` is the latest)."""
        if limit <= 0:
            return []
        rows = await store.query(
            f"{self._select} ORDER BY ts DESC, snapshot_id DESC LIMIT $2", (deployment_id, limit)
        )
        return [_snapshot(row) for row in reversed(rows)]

    async def in_window(
        self,
        store: EventStore,
        deployment_id: str,
        from_ts: datetime | None,
        to_ts: datetime | None,
        *,
        scan_cap: int = 200_000,
    ) -> tuple[list[WindowRow], bool]:
        """Rows with ``from_ts <= timestamp <= to_ts`` (``None``: that side open), oldest first.

        Reads newest first, ``(ts DESC, id DESC)``, at most ``scan_cap`` + 1 rows:
        ``truncated`` says older rows of the window were left out, the newest
        ``scan_cap`` are returned. Raises ``ValueError`` for a ``scan_cap`` below 1,
        as the reference backend does.
        """
        _check_cap(scan_cap)
        if from_ts is not None and to_ts is not None and from_ts > to_ts:
            return [], False
        sql = [self._window]
        params: list[Any] = [deployment_id]
        if from_ts is not None:
            params.append(ts(from_ts))
            sql.append(f"AND ts >= ${len(params)}")
        if to_ts is not None:
            params.append(ts(to_ts))
            sql.append(f"AND ts <= ${len(params)}")
        params.append(scan_cap + 1)
        sql.append(f"ORDER BY ts DESC, snapshot_id DESC LIMIT ${len(params)}")
        rows = await store.query(" ".join(sql), params)
        window = [(micros_to_datetime(r[0]), r[1], r[2], r[3]) for r in rows[:scan_cap]]
        return window[::-1], len(rows) > scan_cap

    async def nav_series(
        self,
        store: EventStore,
        deployment_id: str,
        *,
        since: tuple[datetime, int] | None = None,
        scan_cap: int = 200_000,
    ) -> tuple[list[NavRow], bool]:
        """The NAV series, oldest first, in the reference's two fetch modes.

        Full (``since=None``): the newest ``scan_cap`` rows; ``truncated`` means
        older history was dropped. Incremental (``since=(timestamp, id)``): rows
        strictly after that cursor in ``(timestamp, id)`` order, the oldest
        ``scan_cap`` of them; ``truncated`` means more remain, so call again from
        the last row's ``(timestamp, id)``. Rows are the newest reference's
        6-tuple (``value_confidence`` last; the first five are the seed's
        5-tuple). Raises ``ValueError`` for a ``scan_cap`` below 1, as the
        reference backend does (its manager turns that into ``([], False)``).
        """
        _check_cap(scan_cap)
        if since is None:
            rows = await store.query(
                f"{self._series} ORDER BY ts DESC, snapshot_id DESC LIMIT $2",
                (deployment_id, scan_cap + 1),
            )
            kept = list(reversed(rows[:scan_cap]))
        else:
            last_ts, last_id = since
            # ts is unique per deployment: the range starts at the cursor's
            # timestamp and only that one row needs the id comparison
            rows = await store.query(
                f"{self._series} AND ts >= $2 AND (ts > $2 OR snapshot_id > $3) "
                "ORDER BY ts, snapshot_id LIMIT $4",
                (deployment_id, ts(last_ts), last_id, scan_cap + 1),
            )
            kept = list(rows[:scan_cap])
        series = [(micros_to_datetime(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in kept]
        return series, len(rows) > scan_cap

    async def at(
        self, store: EventStore, deployment_id: str, timestamp: datetime
    ) -> Snapshot | None:
        """The snapshot closest at or before ``timestamp`` (never a later one)."""
        rows = await store.query(
            f"{self._select} AND ts <= $2 ORDER BY ts DESC, snapshot_id DESC LIMIT 1",
            (deployment_id, ts(timestamp)),
        )
        return _snapshot(rows[0]) if rows else None

    async def max_snapshot_id(self, store: EventStore, deployment_id: str) -> int:
        """The highest id the deployment ever stored (0 for none), pruned rows included."""
        rows = await store.query(self._stats, (deployment_id,))
        return int(rows[0][0]) if rows else 0

    async def count_created_before(
        self, store: EventStore, deployment_id: str, cutoff: datetime
    ) -> int:
        """How many snapshots a retention with this cutoff would remove."""
        rows = await store.query(
            f"SELECT count(*) FROM {self.t['portfolio_snapshots']} "
            "WHERE deployment_id = $1 AND created_at < $2",
            (deployment_id, ts(cutoff)),
        )
        return int(rows[0][0])

    async def count(self, store: EventStore, deployment_id: str) -> int:
        """Snapshots the deployment holds now; kept as rows come and go, never counted."""
        rows = await store.query(self._stats, (deployment_id,))
        return int(rows[0][1]) if rows else 0


def _check_cap(scan_cap: int) -> None:
    if scan_cap <= 0:
        raise ValueError(f"scan_cap must be positive, got {scan_cap}")


def _snapshot_id(event: PortfolioSnapshotRecorded, recorded: Placement) -> int:
    return event.snapshot_id if event.snapshot_id is not None else recorded.deployment_seq


def _row(event: PortfolioSnapshotRecorded, snapshot_id: int) -> tuple[Any, ...]:
    return (
        event.deployment_id,
        snapshot_id,
        event.cycle_id,
        event.execution_mode,
        ts(event.timestamp),
        event.iteration_number,
        dec(event.total_value_usd),
        dec(event.available_cash_usd),
        dec(event.deployed_capital_usd),
        dec(event.wallet_total_value_usd),
        event.value_confidence.value,
        to_json(event.positions),
        to_json(event.token_prices),
        to_json(event.wallet_balances),
        event.chain,
        ts(event.created_at),
    )


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        deployment_id=row[0],
        snapshot_id=row[1],
        cycle_id=row[2],
        execution_mode=row[3],
        timestamp=micros_to_datetime(row[4]),
        iteration_number=row[5],
        total_value_usd=Decimal(row[6]),
        available_cash_usd=Decimal(row[7]),
        deployed_capital_usd=Decimal(row[8]),
        wallet_total_value_usd=Decimal(row[9]),
        value_confidence=ValueConfidence(row[10]),
        positions=from_json(row[11]),
        token_prices=from_json(row[12]),
        wallet_balances=from_json(row[13]),
        chain=row[14],
        created_at=micros_to_datetime(row[15]),
    )

"""From legacy rows to the domain events that reproduce them, ids and order included.

Every row of every table becomes at least one event; nothing is skipped. The
typed tables become the events the runner API writes (``StateSaved``,
``LedgerEntryRecorded``, ...), so the read models rebuild the legacy tables; the
others become ``LegacyRowImported`` holding the row verbatim. Streams are the
StateManager's own (``state``, ``ledger``, ``positions/{id}``, ...) plus
``legacy/{table}`` for verbatim rows.

**Event ids** are UUIDv5 of ``(source digest, deployment, table, primary key,
sub-event)`` in :data:`IMPORT_NAMESPACE`: the same file imported again yields the
same ids and the same bytes, which the log records once (a re-import is a no-op
retry), while a different file, or the same file under another deployment id,
never collides with it. The file's name and path play no part, so a renamed
copy is the same import.

**Order.** The files carry no global write order: across tables it is unknown,
so the importer does not invent one. A deployment's events go table by table
(:data:`TABLE_ORDER`, a runner cycle's write order: registry state first, the
current state last), and within a table by the time the row's content was
written (:data:`ORDER_TIME`; business time where that is all a row has), then by
rowid (insertion order, which also breaks ties the way the legacy readers did),
then by sub-event. Rows with no usable time come after the timed ones of their
table. Consecutive events of one stream form one append (at most
:data:`BATCH_SIZE`), so a table on one stream (the ledger, the NAV series, the
accounting events, a verbatim table) goes in a few large appends, and a re-run
cuts exactly the same batches.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import eventstore
from eventstore import encoding
from eventstore.validation import DEFAULT_MAX_EVENT_BYTES, check_identifier
from projections.events import DomainEvent, LegacyRowImported, encode_event

from .cells import RowReader
from .errors import LegacyInputError, LegacyRowError
from .rows import MAPPERS
from .source import IDENTITY_COLUMNS, LegacyFile, Row, Table, read_legacy

IMPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:chronicle:legacy-import")
"""The UUIDv5 namespace of imported event ids (fixed: changing it re-imports everything)."""

BATCH_SIZE = 1000
"""Events per append at most: large enough that a table on one stream costs a few
commits, small enough to stay far below the log's 65,535 events per append."""

WRITER = "chronicle import"

TABLE_ORDER = (
    "migration_state",
    "position_registry",
    "transaction_ledger",
    "accounting_outbox",
    "position_events",
    "accounting_events",
    "portfolio_snapshots",
    "position_state_snapshots",
    "portfolio_metrics",
    "clob_orders",
    "strategy_state",
    "teardown_requests",
    "teardown_approvals",
    "teardown_execution_state",
    "timeline_events",
    "sqlite_sequence",
)
"""The order tables are imported in (unknown tables after these, by name)."""

ORDER_TIME: dict[str, tuple[str, ...]] = {
    "strategy_state": ("updated_at",),
    "transaction_ledger": ("timestamp",),
    "portfolio_snapshots": ("created_at", "timestamp"),
    "portfolio_metrics": ("updated_at",),
    "position_events": ("timestamp",),
    "accounting_events": ("timestamp",),
    "migration_state": ("created_at",),
    "clob_orders": ("updated_at", "submitted_at"),
    "accounting_outbox": ("created_at",),
    "position_state_snapshots": ("captured_at", "timestamp"),
    "teardown_requests": ("requested_at", "updated_at"),
    "teardown_approvals": ("created_at",),
    "teardown_execution_state": ("started_at", "updated_at"),
    "timeline_events": ("created_at",),
}
"""Where a row says when its content was written (the first parsable column wins)."""

OrderKey = tuple[int, str, int, int, int, int]


@dataclass(frozen=True)
class PlannedEvent:
    deployment_id: str
    stream: str
    event: DomainEvent
    event_id: uuid.UUID
    type: str
    data: bytes
    """The event as the log will store it, to recognise an earlier import of it."""
    table: str
    order: OrderKey


@dataclass(frozen=True)
class Batch:
    deployment_id: str
    stream: str
    events: tuple[PlannedEvent, ...]
    after_version: int
    """The stream's version before this batch: the append's expected version."""


@dataclass(frozen=True)
class ImportPlan:
    """Everything an import will write, computed and validated before touching a store."""

    source: LegacyFile
    deployment_override: str | None
    deployments: tuple[str, ...]
    events: tuple[PlannedEvent, ...]
    """In append order."""
    rows: dict[str, int]
    """Rows read, per table (every table of the file, empty ones included)."""
    batches: tuple[Batch, ...] = field(default=())
    metadata: dict[str, Any] = field(default_factory=dict)

    def events_of(self, table: str) -> int:
        return sum(1 for e in self.events if e.table == table)


def prepare_import(
    source: str | os.PathLike[str] | LegacyFile, *, deployment: str | None = None
) -> ImportPlan:
    """Read, validate and map a legacy file; raises :class:`LegacyInputError` on bad input.

    ``deployment`` imports the file's deployment under another id (the file must
    hold one), e.g. to keep files of one deployment apart in one store.
    """
    legacy = source if isinstance(source, LegacyFile) else read_legacy(source)
    resolve = deployment_resolver(legacy, deployment)
    planned: list[PlannedEvent] = []
    metadata = {"writer": WRITER, "source_digest": legacy.digest}
    metadata_bytes = len(encoding.encode_payload(metadata))
    for table in legacy.tables.values():
        for row in table.rows:
            planned.extend(_plan_row(legacy, table, row, resolve(table, row), metadata_bytes))
    planned.sort(key=lambda p: (p.deployment_id, p.order))
    events = tuple(planned)
    return ImportPlan(
        source=legacy,
        deployment_override=deployment,
        deployments=tuple(sorted({p.deployment_id for p in events})),
        events=events,
        rows={name: len(table.rows) for name, table in legacy.tables.items()},
        batches=_batches(events),
        metadata=metadata,
    )


def event_id(
    digest: str, deployment_id: str, table: str, key: dict[str, Any], sub: int
) -> uuid.UUID:
    """The id of the ``sub``-th event of a row; stable across runs, machines and file names."""
    name = "\x1f".join(
        (digest, deployment_id, table, json.dumps(key, sort_keys=True, separators=(",", ":")))
    )
    return uuid.uuid5(IMPORT_NAMESPACE, f"{name}\x1f{sub}")


# -- deployments ---------------------------------------------------------------------------


def row_identity(cells: dict[str, Any]) -> str | None:
    """The row's deployment: ``deployment_id`` when non-empty, else ``strategy_id``."""
    for column in IDENTITY_COLUMNS:
        value = cells.get(column)
        if isinstance(value, str) and value:
            return value
    return None


def deployment_resolver(legacy: LegacyFile, override: str | None) -> Callable[[Table, Row], str]:
    """How each row of the file finds its deployment (identity columns, else the file's)."""
    found = sorted(
        {
            identity
            for table in legacy.tables.values()
            for row in table.rows
            if (identity := row_identity(row.cells)) is not None
        }
    )
    if override is not None:
        try:
            check_identifier("deployment id", override)
        except eventstore.InvalidInput as exc:
            raise LegacyInputError(f"--deployment: {exc}") from exc
        if len(found) > 1:
            raise LegacyInputError(
                f"{legacy.path} holds {len(found)} deployments ({', '.join(found)}); "
                "--deployment renames a file's only deployment, so import without it"
            )
    for identity in found:
        try:
            check_identifier("deployment id", identity)
        except eventstore.InvalidInput as exc:
            raise LegacyRowError(
                f"{legacy.path}: deployment id {identity!r} cannot name a deployment ({exc}); "
                "import with --deployment NEW_ID"
            ) from exc
    default = override if override is not None else (found[0] if len(found) == 1 else None)

    def resolve(table: Table, row: Row) -> str:
        if override is not None:
            return override
        identity = row_identity(row.cells)
        if identity is not None:
            return identity
        if default is None:
            held = f"holds {len(found)} deployments" if found else "names no deployment"
            raise LegacyInputError(
                f"{legacy.path}: row {table.key(row)} of {table.name} names no deployment "
                f"and the file {held}; import with --deployment ID"
            )
        return default

    return resolve


# -- rows to events ------------------------------------------------------------------------


def _plan_row(
    legacy: LegacyFile, table: Table, row: Row, deployment_id: str, metadata_bytes: int
) -> list[PlannedEvent]:
    key = table.key(row)
    reader = RowReader(table.name, key, row.cells, deployment_id)
    mapper = MAPPERS.get(table.name)
    if mapper is None:
        stream = f"legacy/{table.name}"
        events: list[DomainEvent] = [
            LegacyRowImported(
                deployment_id=deployment_id,
                source_digest=legacy.digest,
                table=table.name,
                primary_key=key,
                row=dict(row.cells),
            )
        ]
    else:
        stream, events = mapper(reader, legacy.digest)
    try:
        check_identifier("stream", stream)
    except eventstore.InvalidInput as exc:
        raise reader.refuse("key", f"makes stream name {stream!r} unusable ({exc})") from exc
    order = _order_key(table, row)
    planned = []
    for sub, event in enumerate(events):
        kind, _, data = encode_event(event)
        if len(data) + metadata_bytes > DEFAULT_MAX_EVENT_BYTES:
            raise reader.refuse(
                "*",
                f"makes a {len(data)}-byte event, over the log's {DEFAULT_MAX_EVENT_BYTES}-byte "
                "limit",
            )
        planned.append(
            PlannedEvent(
                deployment_id=deployment_id,
                stream=stream,
                event=event,
                event_id=event_id(legacy.digest, deployment_id, table.name, key, sub),
                type=kind,
                data=data,
                table=table.name,
                order=(*order[:-1], sub),
            )
        )
    return planned


def _order_key(table: Table, row: Row) -> OrderKey:
    rank = TABLE_ORDER.index(table.name) if table.name in TABLE_ORDER else len(TABLE_ORDER)
    for column in ORDER_TIME.get(table.name, ()):
        moment = _instant(row.cells.get(column))
        if moment is not None:
            return (rank, table.name, 0, encoding.datetime_to_micros(moment), row.rowid, 0)
    return (rank, table.name, 1, 0, row.rowid, 0)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


def _batches(events: Iterable[PlannedEvent]) -> tuple[Batch, ...]:
    batches: list[Batch] = []
    versions: dict[tuple[str, str], int] = {}
    current: list[PlannedEvent] = []

    def close() -> None:
        if current:
            where = (current[0].deployment_id, current[0].stream)
            before = versions.get(where, 0)
            batches.append(Batch(where[0], where[1], tuple(current), before))
            versions[where] = before + len(current)
            current.clear()

    for event in events:
        if current and (
            (event.deployment_id, event.stream) != (current[0].deployment_id, current[0].stream)
            or len(current) >= BATCH_SIZE
        ):
            close()
        current.append(event)
    close()
    return tuple(batches)

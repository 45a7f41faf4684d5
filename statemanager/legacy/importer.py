"""Writing a prepared import into a store, through the projection engine, idempotently.

Before the first append, each target deployment is looked at once:

* no events at all: a fresh import;
* every stream the file writes begins with exactly the file's events (same ids,
  same bytes): an earlier import of this file, complete or cut short; what is
  missing is appended, what is there is counted as already present;
* anything else (events of another file, of a live runner, or the file's ids
  with other bytes): :class:`ImportConflict`, and nothing is written.

Each batch is appended with the exact expected version of its stream, so a
writer that slips in during the import stops it (run it again to finish: the
batches already in are recognised and skipped).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import eventstore
from eventstore import EventStore
from projections.engine import ProjectionEngine

from .errors import ImportConflict
from .mapping import ImportPlan, PlannedEvent
from .report import ImportReport, TableCount

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(events_done, events_total)`` after each batch."""


async def import_legacy(
    engine: ProjectionEngine, plan: ImportPlan, *, progress: ProgressCallback | None = None
) -> ImportReport:
    """Append the plan's events (skipping those an earlier run wrote); report per table.

    Raises :class:`ImportConflict` before writing anything when a target
    deployment holds events that are not this file's.
    """
    started = time.perf_counter()
    present = await already_imported(engine.store, plan)
    written: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    done, total = 0, len(plan.events)
    # Tables go in one after another; a read model's statements were planned
    # while its tables were empty, which on PostgreSQL picks an arbitrary index
    # and scans a growing table per row. Statistics refreshed after a table's
    # first 200 rows (then at each tenfold) make the server plan them again.
    analyzed: dict[str, int] = {}
    for batch in plan.batches:
        # an earlier run wrote a prefix of each stream: skip it, append the rest
        missing = [e for e in batch.events if e.event_id not in present]
        kept.update(e.table for e in batch.events if e.event_id in present)
        if missing:
            try:
                result = await engine.append(
                    batch.deployment_id,
                    batch.stream,
                    [e.event for e in missing],
                    expected_version=batch.after_version + len(batch.events) - len(missing),
                    metadata=plan.metadata,
                    event_ids=[e.event_id for e in missing],
                )
            except (eventstore.WrongExpectedVersion, eventstore.DuplicateEventId) as exc:
                raise ImportConflict(
                    batch.deployment_id,
                    f"stream {batch.stream!r} of deployment {batch.deployment_id!r} changed "
                    f"while importing ({exc}); {done} of {total} events are in. Stop the other "
                    "writer and run the same import again: it resumes where this one stopped",
                ) from exc
            (kept if result.replayed else written).update(e.table for e in missing)
        done += len(batch.events)
        grown = [t for t in {e.table for e in missing} if written[t] >= analyzed.get(t, 200)]
        if grown:
            await engine.analyze()
            analyzed.update({t: written[t] * 10 for t in grown})
        if progress is not None:
            progress(done, total)
    counts = tuple(
        TableCount(
            table=name,
            rows=rows,
            events=plan.events_of(name),
            written=written[name],
            already_present=kept[name],
        )
        for name, rows in sorted(plan.rows.items())
    )
    return ImportReport(
        source=str(plan.source.path),
        source_digest=plan.source.digest,
        generation=plan.source.generation,
        deployments=plan.deployments,
        tables=counts,
        seconds=time.perf_counter() - started,
    )


async def already_imported(store: EventStore, plan: ImportPlan) -> set[uuid.UUID]:
    """Ids of the plan's events the store holds already; refuses a deployment held by others."""
    streams: dict[str, dict[str, list[PlannedEvent]]] = defaultdict(lambda: defaultdict(list))
    for event in plan.events:
        streams[event.deployment_id][event.stream].append(event)
    present: set[uuid.UUID] = set()
    for deployment_id, by_stream in streams.items():
        first = await store.read_deployment(deployment_id, 1, 1)
        if not first:
            continue
        found = 0
        for stream, events in by_stream.items():
            stored = await store.read_stream(deployment_id, stream, 1, len(events))
            for ours, theirs in zip(events, stored, strict=False):
                if theirs.event_id != ours.event_id:
                    raise _held_by_others(plan, deployment_id, theirs.stream, theirs.type)
                if theirs.type != ours.type or theirs.raw_data != ours.data:
                    raise ImportConflict(
                        deployment_id,
                        f"deployment {deployment_id!r} holds event {ours.event_id} of this file "
                        f"(stream {stream!r}) with other content, written by another version "
                        "of the importer; nothing was written. Import into a fresh store, or "
                        "under another id with --deployment NEW_ID",
                    )
                present.add(ours.event_id)
                found += 1
        if not found:
            raise _held_by_others(plan, deployment_id, first[0].stream, first[0].type)
    return present


def _held_by_others(plan: ImportPlan, deployment_id: str, stream: str, kind: str) -> ImportConflict:
    return ImportConflict(
        deployment_id,
        f"deployment {deployment_id!r} already holds events that did not come from "
        f"{plan.source.path.name} (sha256 {plan.source.digest[:12]}...), e.g. a {kind} in "
        f"stream {stream!r}; importing would mix two histories, so nothing was written. "
        "Import into another store, or under another id with --deployment NEW_ID",
    )

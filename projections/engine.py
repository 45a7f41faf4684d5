"""Running projections: inline with appends, asynchronously behind the log, and rebuilds.

The catalog table ``chronicle_projections`` holds, per projection, the version
and table generation that are live, the checkpoint (last global position
applied, for projections the projector runs) and the state of a rebuild in
progress. Every change to a projection's rows commits in the same transaction
as the catalog change that accounts for it, so a crash can neither lose an event
nor apply one twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar

import msgspec

import eventstore
from eventstore import (
    AppendResult,
    EventStore,
    ExpectedVersion,
    InlineStepFailed,
    NewEvent,
    Placement,
    RecordedEvent,
    ReplayedEvent,
    Statement,
)
from eventstore.encoding import now_micros

from . import parallel
from .errors import ProjectionFailed, ProjectionOutdated, ProjectionWriteRefused
from .events import DomainEvent, decode_event, encode_event
from .projection import Projection, marks
from .replay import replay_statements
from .shadow import Progress, ShadowPlan, checkpoint_of, fewer_collections, replay_batch

CATALOG = "chronicle_projections"
_P = TypeVar("_P", bound=Placement)
_FIRST_ANALYZE = 10_000
"""Events replayed before a rebuild first analyzes its shadow tables (PostgreSQL)."""
_CATALOG_DDL = f"""CREATE TABLE IF NOT EXISTS {CATALOG} (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    checkpoint BIGINT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    shadow_version BIGINT,
    shadow_generation BIGINT,
    shadow_checkpoint BIGINT,
    shadow_scope TEXT,
    updated_at BIGINT NOT NULL
)"""
_CATALOG_COLUMNS = (
    "name, version, generation, checkpoint, status, error, shadow_version, "
    "shadow_generation, shadow_checkpoint, shadow_scope"
)


class CatalogRow(msgspec.Struct, frozen=True):
    name: str
    version: int
    generation: int
    checkpoint: int
    status: str
    error: str | None
    shadow_version: int | None
    shadow_generation: int | None
    shadow_checkpoint: int | None
    shadow_scope: str | None


class RebuildReport(msgspec.Struct, frozen=True):
    projection: str
    events: int
    """Events applied to this projection (its types), the swap's tail included."""
    seconds: float
    """From the rebuild's start to this projection's swap."""
    resumed_from: int
    deployment_id: str | None = None
    log_events: int = 0
    """Events the shared pass read from the log, each once however many projections
    it fed (the same for every report of one rebuild)."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ProjectionEngine:
    """Keeps a store's read models in step with its log.

    Writers append domain events through :meth:`append`; inline projections
    apply them in the same transaction. Projections named in ``run_async`` are
    applied by :meth:`run_projector` / :meth:`catch_up` instead.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[type[Projection]],
        *,
        run_async: Iterable[str] = (),
        on_version_change: Literal["rebuild", "refuse"] = "rebuild",
    ) -> None:
        self.store = store
        self._classes = {cls.name: cls for cls in projections}
        if len(self._classes) != len(projections):
            raise ValueError("two projections share a name")
        tables = [table.name for cls in projections for table in cls.tables]
        if len(set(tables)) != len(tables):
            raise ValueError("two projections share a table name")
        self._async = frozenset(run_async)
        unknown = self._async - self._classes.keys()
        if unknown:
            raise ValueError(f"unknown projections to run asynchronously: {sorted(unknown)}")
        self._on_version_change = on_version_change
        self._live = {name: cls() for name, cls in self._classes.items()}
        self._inline_by_type: dict[str, list[Projection]] = defaultdict(list)
        for name, projection in self._live.items():
            if name not in self._async:
                for event_type in projection.event_types():
                    self._inline_by_type[event_type].append(projection)
        self._outdated: dict[str, str] = {}
        self.unhandled_skipped = 0

    # -- start-up -----------------------------------------------------------------

    async def start(self) -> None:
        """Create what is missing; rebuild (or refuse) projections whose version changed.

        A projection new to a store whose log already holds its events starts in
        status ``new`` and is built from the log here (a first build cut short is
        finished by the next start); one that comes with an empty log starts live
        and stays in step inline from the first append.
        """
        async with self.store.transaction() as tx:
            if self.store.backend == "postgresql":  # concurrent first starts
                await tx.query("SELECT pg_advisory_xact_lock(hashtext('chronicle-projections'))")
            await tx.execute([Statement(_CATALOG_DDL), Statement(parallel.PROGRESS_DDL)])
            catalog = await _catalog(tx)
            for name, cls in self._classes.items():
                if name in catalog:
                    continue
                statements = [s for t in cls.tables for s in t.create(t.physical(), 1)]
                status = "new" if await _log_has(tx, cls) else "live"
                statements.append(_insert_catalog(name, cls.version, status))
                await tx.execute(statements)
        catalog = await self.catalog()
        for name, cls in self._classes.items():
            row = catalog[name]
            stale = row.version != cls.version
            # never built from the log yet (its first build may have been cut short)
            unbuilt = row.generation == 1 and row.status in ("new", "rebuilding")
            if not (stale or unbuilt):
                continue
            if stale and self._on_version_change == "refuse":
                self._outdated[name] = (
                    f"projection {name!r} holds version {row.version} but this code builds "
                    f"version {cls.version}; run `chronicle rebuild --projection {name}`"
                )
                continue
            await self.rebuild(name)

    async def catalog(self) -> dict[str, CatalogRow]:
        return await _catalog(self.store)

    def live(self, name: str) -> Projection:
        """The live projection ``name``, for its queries; refuses an outdated one."""
        reason = self._outdated.get(name)
        if reason is not None:
            raise ProjectionOutdated(reason)
        return self._live[name]

    # -- writing ------------------------------------------------------------------

    async def append(
        self,
        deployment_id: str,
        stream: str,
        events: Sequence[DomainEvent],
        *,
        expected_version: ExpectedVersion | int = ExpectedVersion.ANY,
        metadata: dict[str, Any] | None = None,
        event_ids: Sequence[Any] | None = None,
    ) -> AppendResult:
        """Append domain events; inline projections apply them in the same commit."""
        new_events = []
        for index, event in enumerate(events):
            event_type, schema_version, data = encode_event(event)
            new_events.append(
                NewEvent(
                    event_type,
                    msgspec.Raw(data),
                    metadata=metadata,
                    schema_version=schema_version,
                    event_id=None if event_ids is None else event_ids[index],
                )
            )
        inline = {
            projection.name
            for event in events
            for projection in self._inline_by_type.get(type(event).event_type, ())
        }
        for name in inline:
            self.live(name)  # an outdated inline projection must not take writes
        step: _InlineStep | None = _InlineStep(self, events) if inline else None
        try:
            return await self.store.append(
                deployment_id, stream, new_events, expected_version=expected_version, inline=step
            )
        except InlineStepFailed as failure:
            raise await self._explain(failure, events) from failure

    def _inline_statements(
        self, events: Sequence[DomainEvent], recorded: Sequence[RecordedEvent]
    ) -> list[Statement]:
        if len(events) == 1:  # a runner's usual write
            return [
                statement
                for projection in self._inline_by_type.get(recorded[0].type, ())
                for statement in projection.apply(events[0], recorded[0])
            ]
        # many events in one commit (a batch, an import): grouped and folded as a
        # replay is, the same rows in far fewer driver calls; the append is still
        # all or nothing, so an invariant a row breaks is refused either way
        items: dict[str, tuple[Projection, list[tuple[DomainEvent, Placement]]]] = {}
        for event, record in zip(events, recorded, strict=True):
            for projection in self._inline_by_type.get(record.type, ()):
                items.setdefault(projection.name, (projection, []))[1].append((event, record))
        statements: list[Statement] = []
        for projection, taken in items.values():
            statements.extend(replay_statements(projection, taken))
        return statements

    async def _explain(self, failure: InlineStepFailed, events: Sequence[DomainEvent]) -> Exception:
        for event in events:
            for projection in self._inline_by_type.get(type(event).event_type, ()):
                explain = getattr(projection, "explain", None)
                if explain is not None:
                    error = await explain(self.store, failure, event)
                    if error is not None:
                        return error  # type: ignore[no-any-return]
        return ProjectionWriteRefused(
            f"a read model refused the write ({failure.cause}); nothing was written"
        )

    # -- the projector (asynchronous projections) -----------------------------------

    async def catch_up(self, batch_size: int = 1000) -> int:
        """Apply everything readable to the asynchronous projections; events applied."""
        total = 0
        for name in sorted(self._async):
            total += await self._follow(name, batch_size, forever=False, idle=0.0)
        return total

    async def run_projector(self, *, batch_size: int = 1000, idle_timeout: float = 0.5) -> None:
        """Follow the log forever, one task per asynchronous projection.

        A projection whose event fails to apply stops (marked ``failed`` in the
        catalog, with the event's position and type); the others go on.
        """
        tasks = [
            asyncio.create_task(self._follow(name, batch_size, forever=True, idle=idle_timeout))
            for name in sorted(self._async)
        ]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()

    async def _follow(self, name: str, batch_size: int, *, forever: bool, idle: float) -> int:
        projection = self._live[name]
        types = projection.event_types()
        applied = 0
        while True:
            row = (await self.catalog())[name]
            if row.status == "failed":
                return applied
            if row.status != "live":  # a rebuild owns the rows until its swap
                if not forever:
                    return applied
                await asyncio.sleep(idle)
                continue
            batch = await self.store.read_all(row.checkpoint, batch_size, types=types)
            if batch:
                try:
                    applied += await self._apply_batch(projection, row, batch)
                except ProjectionFailed:
                    return applied
                continue
            if not forever:
                return applied
            await asyncio.sleep(idle)

    async def _apply_batch(
        self, projection: Projection, row: CatalogRow, batch: Sequence[RecordedEvent]
    ) -> int:
        try:
            await self._commit_batch(projection, row, batch)
            return len(batch)
        except _CheckpointMoved:
            return 0
        except Exception:
            if len(batch) == 1:
                raise
        # find the event that fails: commit the good ones before it, one by one
        for index, record in enumerate(batch):
            current = (await self.catalog())[projection.name]
            try:
                await self._commit_batch(projection, current, [record])
            except _CheckpointMoved:
                return index
            except Exception as exc:
                await self._mark_failed(projection.name, record, exc)
                raise ProjectionFailed(_failure_text(projection.name, record, exc)) from exc
        return len(batch)

    async def _commit_batch(
        self, projection: Projection, row: CatalogRow, batch: Sequence[RecordedEvent]
    ) -> None:
        statements = _replay_statements(projection, batch, projection.event_types())
        async with self.store.transaction() as tx:
            moved = await tx.query(
                f"UPDATE {CATALOG} SET checkpoint = $1, updated_at = $2 "
                "WHERE name = $3 AND checkpoint = $4 AND generation = $5 AND status = 'live' "
                "RETURNING name",
                (batch[-1].position, now_micros(), projection.name, row.checkpoint, row.generation),
            )
            if not moved:
                raise _CheckpointMoved
            await tx.execute(statements)

    async def _mark_failed(self, name: str, record: RecordedEvent, exc: BaseException) -> None:
        await self.store.execute(
            [
                Statement(
                    f"UPDATE {CATALOG} SET status = 'failed', error = $1, updated_at = $2 "
                    "WHERE name = $3",
                    (_failure_text(name, record, exc), now_micros(), name),
                )
            ]
        )

    async def reset_failed(self, name: str) -> None:
        """Let a failed projection run again (after the cause was fixed)."""
        await self.store.execute(
            [
                Statement(
                    f"UPDATE {CATALOG} SET status = 'live', error = NULL, updated_at = $1 "
                    "WHERE name = $2 AND status = 'failed'",
                    (now_micros(), name),
                )
            ]
        )

    # -- rebuilding -----------------------------------------------------------------

    async def rebuild(
        self,
        name: str | None = None,
        *,
        deployment_id: str | None = None,
        batch_size: int = 5000,
        progress: Progress | None = None,
        jobs: int = 1,
    ) -> list[RebuildReport]:
        """Rebuild one projection (or all) into shadow tables, then swap them in.

        Projections rebuilt together share one pass over the log: each batch is
        read and decoded once and committed, for all of them, in one transaction.
        Live tables keep answering until each projection's swap, which is one
        transaction. An interrupted rebuild resumes from its last committed batch
        when called again with the same projections, version and scope.

        ``jobs`` > 1 splits a whole-log rebuild's deployments between that many
        worker processes (:mod:`projections.parallel`), which import the
        projection classes; it gains where there are cores to spare.
        """
        names = [name] if name is not None else sorted(self._classes)
        for each in names:
            if each not in self._classes:
                raise KeyError(f"unknown projection {each!r}; known: {sorted(self._classes)}")
        if deployment_id is not None:
            eventstore.validation.check_identifier("deployment_id", deployment_id)
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive int, got {jobs!r}")
        if jobs > 1:
            for each in names:
                parallel.class_path(self._classes[each])  # refuse before any work
        started = time.perf_counter()
        await self._analyze_log_if_stale()
        await self.store.execute([Statement(parallel.PROGRESS_DDL)])
        plans = [await self._shadow_plan(each, deployment_id) for each in names]
        if deployment_id is None and (jobs > 1 or await parallel.has_progress(self.store, names)):
            log_events = await self._replay_in_parallel(plans, jobs, batch_size, progress)
        else:
            log_events = await self._replay_into(plans, deployment_id, batch_size, progress)
        reports = []
        for plan in plans:
            plan.replayed += await self._swap(
                plan.cls, plan.shadow, deployment_id, plan.checkpoint, plan.types
            )
            self._outdated.pop(plan.cls.name, None)
            reports.append(
                RebuildReport(
                    plan.cls.name,
                    plan.replayed,
                    time.perf_counter() - started,
                    plan.resumed_from,
                    deployment_id,
                    log_events,
                )
            )
        return reports

    async def _shadow_plan(self, name: str, deployment_id: str | None) -> ShadowPlan:
        """Shadow tables for ``name``: those of an interrupted rebuild, or new ones."""
        cls = self._classes[name]
        scope = deployment_id or ""
        row = (await self.catalog())[name]
        if (
            row.status == "rebuilding"
            and row.shadow_version == cls.version
            and row.shadow_scope == scope
            and row.shadow_generation is not None
        ):
            checkpoint = row.shadow_checkpoint or 0
        else:
            checkpoint = 0
            generation = max(row.generation, row.shadow_generation or 0) + 1
            statements = [Statement(f"DROP TABLE IF EXISTS {t.physical(True)}") for t in cls.tables]
            # a parallel rebuild's progress belongs to the shadow tables dropped here
            statements.append(
                Statement(f"DELETE FROM {parallel.PROGRESS} WHERE name = $1", (name,))
            )
            for table in cls.tables:
                statements.extend(table.create(table.physical(True), generation))
            statements.append(
                Statement(
                    f"UPDATE {CATALOG} SET status = 'rebuilding', shadow_version = $1, "
                    "shadow_generation = $2, shadow_checkpoint = 0, shadow_scope = $3, "
                    "updated_at = $4 WHERE name = $5",
                    (cls.version, generation, scope, now_micros(), name),
                )
            )
            await self.store.execute(statements)
        # an asynchronous projection's rows for one deployment may not run ahead of
        # the projector, or it would apply those events a second time
        limit = row.checkpoint if deployment_id is not None and name in self._async else None
        return ShadowPlan(cls, cls(shadow=True), frozenset(cls.event_types()), checkpoint, limit)

    async def _replay_in_parallel(
        self, plans: Sequence[ShadowPlan], jobs: int, batch_size: int, progress: Progress | None
    ) -> int:
        """The parallel replay, then every plan's checkpoint moved past it, its
        per-deployment progress dropped, in one transaction; the events read."""
        statistics = _ShadowStatistics(self, plans)
        read_events, last = await parallel.replay_in_parallel(
            self.store, plans, jobs, batch_size, progress, statistics.grown
        )
        names = tuple(plan.cls.name for plan in plans)
        await self.store.execute(
            [
                Statement(
                    f"UPDATE {CATALOG} SET shadow_checkpoint = $1, updated_at = $2 "
                    f"WHERE name IN ({marks(3, len(names))})",
                    (last, now_micros(), *names),
                ),
                Statement(
                    f"DELETE FROM {parallel.PROGRESS} WHERE name IN ({marks(1, len(names))})",
                    names,
                ),
            ]
        )
        for plan in plans:
            plan.checkpoint = last
        return read_events

    async def _replay_into(
        self,
        plans: Sequence[ShadowPlan],
        deployment_id: str | None,
        batch_size: int,
        progress: Progress | None,
    ) -> int:
        """Replay the log into the plans' shadow tables, batch by batch, each batch
        committed together with every plan's checkpoint; the events read.

        Three batches are in flight: the next one is read and this one decoded
        while the previous one commits. On PostgreSQL the read, the commit and
        this process's decoding overlap (two connections, the server's own
        process); on SQLite they take turns on the loop's thread, in order.
        A batch's statements start only after the previous batch committed.
        """
        if not plans:
            return 0
        types = sorted(set().union(*(plan.types for plan in plans)))
        read_events = 0

        def read(after: int) -> asyncio.Future[list[ReplayedEvent]]:
            return asyncio.ensure_future(
                self.store.read_for_replay(
                    after, batch_size, types=types, deployment_id=deployment_id
                )
            )

        def report(counts: dict[str, int]) -> None:
            if progress is not None:
                for name, replayed in counts.items():
                    progress(name, replayed)

        with fewer_collections():
            reading = read(min(plan.checkpoint for plan in plans))
            writing: asyncio.Future[None] | None = None
            written: dict[str, int] = {}
            statistics = _ShadowStatistics(self, plans)
            try:
                while True:
                    batch = await reading
                    if not batch:
                        break
                    read_events += len(batch)
                    full = len(batch) == batch_size
                    if full:
                        reading = read(checkpoint_of(batch, deployment_id))
                    statements = await replay_batch(plans, batch, deployment_id)
                    statements.extend(
                        Statement(
                            f"UPDATE {CATALOG} SET shadow_checkpoint = $1, updated_at = $2 "
                            "WHERE name = $3",
                            (plan.checkpoint, now_micros(), plan.cls.name),
                        )
                        for plan in plans
                    )
                    if writing is not None:
                        await writing
                        report(written)
                        await statistics.grown(sum(written.values()))
                    written = {plan.cls.name: plan.replayed for plan in plans}
                    writing = asyncio.ensure_future(self.store.execute(statements))
                    if not full:
                        break
                if writing is not None:
                    await writing
                    report(written)
                return read_events
            finally:
                unfinished = [f for f in (reading, writing) if f is not None and not f.done()]
                for future in unfinished:
                    future.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)

    async def analyze(self) -> None:
        """Refresh PostgreSQL's statistics of the live read-model tables (SQLite: nothing).

        For a bulk load through :meth:`append` (an import): tables that were empty
        when their statements were first planned keep plans that scan them, which
        turns quadratic as they grow; autovacuum catches up only a minute later.
        Analyzing makes the server plan those statements again.
        """
        await self._analyze([t.physical() for cls in self._classes.values() for t in cls.tables])

    async def _analyze_shadows(self, plans: Sequence[ShadowPlan]) -> None:
        """Give PostgreSQL's planner the shadow tables' size as they grow.

        A table created for the rebuild has no statistics, so the plans of the
        statements that look rows up (a ledger entry's old contribution, whether
        a snapshot's timestamp is taken) took it for tiny and scanned it: fine at
        10k rows, quadratic at 1M (a 1M-event rebuild ran at 14k events/s).
        Analyzed at 10k events replayed and again each time the count has grown
        sixteenfold (ANALYZE samples the tables, which costs seconds once they are
        large), so cached plans are made again for the size the tables reached.
        """
        await self._analyze([t.physical(True) for plan in plans for t in plan.cls.tables])

    async def _analyze_log_if_stale(self) -> None:
        """Analyze the log (PostgreSQL) when its statistics lag far behind it.

        A rebuild reads the log in position order, a page at a time. Planned without
        statistics (a log just imported or generated, which autovacuum has not
        reached yet), that read took the type filter for selective and sorted every
        later event for each page: 180 ms a page instead of 2 ms at 200k events.
        """
        if self.store.backend != "postgresql":
            return
        rows = await self.store.query(
            "SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables "
            "WHERE relid = 'chronicle_events'::regclass"
        )
        if rows and rows[0][1] > max(1000, rows[0][0] // 10):
            await self._analyze(["chronicle_events"])

    async def _analyze(self, tables: Sequence[str]) -> None:
        if self.store.backend == "postgresql" and tables:
            await self.store.execute([Statement(f"ANALYZE {', '.join(tables)}")])

    async def _swap(
        self,
        cls: type[Projection],
        shadow: Projection,
        deployment_id: str | None,
        checkpoint: int,
        types: Iterable[str],
    ) -> int:
        """Apply the log's tail and put the shadow tables in place, in one transaction."""
        name = cls.name
        live_tables = [t.physical() for t in cls.tables]
        tail = 0
        async with self.store.transaction() as tx:
            if self.store.backend == "postgresql":
                # writers wait here; whatever they committed before is in the tail below
                await tx.query(f"LOCK TABLE {', '.join(live_tables)} IN ACCESS EXCLUSIVE MODE")
            row = (await _catalog(tx))[name]
            last_position = checkpoint
            # An asynchronous projection takes no tail here: an append still open at
            # a lower position would commit after the swap, behind a checkpoint read
            # past it. The projector applies everything after ``checkpoint`` instead.
            while deployment_id is not None or name not in self._async:
                if deployment_id is None:
                    batch = await tx.read_all(checkpoint, 5000, sorted(types))
                else:
                    batch = await tx.read_deployment(deployment_id, checkpoint + 1, 5000)
                    if name in self._async:  # the projector has not seen past its checkpoint
                        batch = _up_to(batch, row.checkpoint)
                if not batch:
                    break
                await tx.execute(_replay_statements(shadow, batch, types))
                checkpoint = checkpoint_of(batch, deployment_id)
                if deployment_id is None:
                    last_position = checkpoint
                tail += sum(1 for e in batch if e.type in types)
                if deployment_id is not None and len(batch) < 5000:
                    break
            statements: list[Statement] = []
            if deployment_id is None:
                for table in cls.tables:
                    live, staged = table.physical(), table.physical(True)
                    statements.append(Statement(f"DROP TABLE IF EXISTS {live}"))
                    statements.append(Statement(f"ALTER TABLE {staged} RENAME TO {live}"))
                statements.append(
                    Statement(
                        f"UPDATE {CATALOG} SET version = shadow_version, "
                        "generation = shadow_generation, checkpoint = $1, status = 'live', "
                        "error = NULL, shadow_version = NULL, shadow_generation = NULL, "
                        "shadow_checkpoint = NULL, shadow_scope = NULL, updated_at = $2 "
                        "WHERE name = $3",
                        (last_position, now_micros(), name),
                    )
                )
            else:
                for table in cls.tables:
                    live, staged = table.physical(), table.physical(True)
                    statements += [
                        Statement(f"DELETE FROM {live} WHERE deployment_id = $1", (deployment_id,)),
                        Statement(f"INSERT INTO {live} SELECT * FROM {staged}"),
                        Statement(f"DROP TABLE {staged}"),
                    ]
                statements.append(
                    Statement(
                        f"UPDATE {CATALOG} SET status = 'live', shadow_version = NULL, "
                        "shadow_generation = NULL, shadow_checkpoint = NULL, shadow_scope = NULL, "
                        "updated_at = $1 WHERE name = $2",
                        (now_micros(), name),
                    )
                )
            await tx.execute(statements)
        return tail

    # -- reporting ------------------------------------------------------------------

    async def unhandled_counts(self) -> dict[str, int]:
        """Events in the log of types no projection handles: counted, never applied."""
        handled = sorted({t for cls in self._classes.values() for t in cls.event_types()})
        rows = await self.store.query(
            "SELECT type, count(*) FROM chronicle_events "
            f"WHERE type NOT IN ({marks(1, len(handled))}) GROUP BY type ORDER BY type",
            handled,
        )
        return {row[0]: int(row[1]) for row in rows}


class _InlineStep:
    """The inline projections' statements for one append.

    Read models never use global positions (a rebuild must give the same rows),
    so the step declares it: PostgreSQL may then fuse a single statement into the
    append's insert.
    """

    needs_positions = False

    def __init__(self, engine: ProjectionEngine, events: Sequence[DomainEvent]) -> None:
        self._engine = engine
        self._events = events

    def __call__(self, recorded: Sequence[RecordedEvent]) -> list[Statement]:
        return self._engine._inline_statements(self._events, recorded)


class _ShadowStatistics:
    """When a rebuild analyzes its shadow tables: at :data:`_FIRST_ANALYZE` events
    replayed, then each time the count has grown sixteenfold (see
    :meth:`ProjectionEngine._analyze_shadows`)."""

    def __init__(self, engine: ProjectionEngine, plans: Sequence[ShadowPlan]) -> None:
        self._engine = engine
        self._plans = plans
        self._next = _FIRST_ANALYZE

    async def grown(self, replayed: int) -> None:
        if replayed >= self._next:
            self._next = replayed * 16
            await self._engine._analyze_shadows(self._plans)


class _CheckpointMoved(Exception):
    """Another projector (or a rebuild's swap) moved the checkpoint first."""


def _replay_statements(
    projection: Projection, batch: Sequence[Placement], types: Iterable[str]
) -> list[Statement]:
    wanted = set(types)
    items = [
        (decode_event(r.type, r.schema_version, r.raw_data, trusted=True), r)
        for r in batch
        if r.type in wanted
    ]
    return replay_statements(projection, items)


def _up_to(batch: Sequence[_P], position: int) -> list[_P]:
    """The leading events of a deployment-ordered batch at or below ``position``."""
    kept = []
    for event in batch:
        if event.position > position:
            break
        kept.append(event)
    return kept


def _failure_text(name: str, record: RecordedEvent, exc: BaseException) -> str:
    return (
        f"projection {name!r} stopped at position {record.position} "
        f"({record.type}, deployment {record.deployment_id!r} #{record.deployment_seq}): "
        f"{type(exc).__name__}: {exc}"
    )


def _insert_catalog(name: str, version: int, status: str) -> Statement:
    return Statement(
        f"INSERT INTO {CATALOG} (name, version, generation, checkpoint, status, updated_at) "
        "VALUES ($1, $2, 1, 0, $3, $4) ON CONFLICT (name) DO NOTHING",
        (name, version, status, now_micros()),
    )


async def _log_has(source: Any, cls: type[Projection]) -> bool:
    """Whether the log holds an event ``cls`` handles.

    Not ``read_all``: a transaction open elsewhere on the server may hold it back,
    and a projection must not start empty because of that.
    """
    types = cls.event_types()
    rows = await source.query(
        f"SELECT 1 FROM chronicle_events WHERE type IN ({marks(1, len(types))}) LIMIT 1", types
    )
    return bool(rows)


async def _catalog(source: Any) -> dict[str, CatalogRow]:
    rows = await source.query(f"SELECT {_CATALOG_COLUMNS} FROM {CATALOG}")
    return {row[0]: CatalogRow(*row) for row in rows}

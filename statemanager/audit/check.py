"""Verifying a live store: each deployment's hash chain, then its read models against a replay.

One pass per deployment reads the log once: every event is checked against the
chain (eventstore's own ``chain_fault``) and applied to scratch read models;
then every table of every read model is compared row for row with the stored
one. The store being verified is only read.

Projections run behind the log (``ProjectionEngine(run_async=...)``) hold only
what their projector applied, up to their checkpoint. The catalog does not
record which projections a deployment runs that way, so the operator names them
(``async_projections``); for those, the replay takes only the events at or below
the checkpoint, which is what the projector applied, so a projector that lags is
not reported as a difference. Every other projection is inline: its rows commit
with their events.

A deployment written to while it is being compared can show a difference that
is only the race; when its log (or a checkpoint) moved during the comparison
and differences were found, it is replayed and compared again (up to
``ATTEMPTS`` times) before the differences are reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack

import msgspec

from eventstore import EventStore, RecordedEvent
from projections.engine import CATALOG, CatalogRow, ProjectionEngine
from projections.models import ALL_PROJECTIONS
from projections.projection import Projection

from .compare import Difference, compare_table, deployments_with_rows, layouts
from .replay import ChainCheck, ReplayRefused, Scratch, walk
from .source import (
    AuditInputError,
    deployment_length,
    deployment_lengths,
    require_deployment,
    table_exists,
)

ATTEMPTS = 3

Progress = Callable[[int], None]
"""Called with the number of events checked so far."""


class ProjectionCheck(msgspec.Struct, frozen=True):
    """How one read model took part in the comparison."""

    name: str
    compared: bool
    mode: str
    """``inline``, or ``async``: compared up to its ``checkpoint``."""
    status: str | None = None
    checkpoint: int | None = None
    outdated: bool = False
    """Built by another version of the projection: not comparable, so the check fails."""
    note: str | None = None


class AuditReport(msgspec.Struct, frozen=True):
    """What verifying found. The first seven fields are ``eventstore.VerifyReport``'s."""

    ok: bool
    deployments_checked: int
    events_checked: int
    first_bad_position: int | None
    first_bad_deployment_id: str | None
    first_bad_deployment_seq: int | None
    reason: str | None
    chain_ok: bool
    projections_ok: bool | None
    """``None`` when no read model was compared (chain only, or none built)."""
    rows_compared: int
    differing_rows: int
    differences: list[Difference]
    """The first difference of each table of each deployment that has one."""
    projections: list[ProjectionCheck]
    seconds: float
    broken_deployments: list[str] = []
    """Deployments whose chain fails: their read models are not compared."""


async def verify_store(
    store: EventStore,
    deployment_id: str | None = None,
    *,
    compare: bool = True,
    async_projections: Sequence[str] = (),
    progress: Progress | None = None,
) -> AuditReport:
    """Check the chains (and, with ``compare``, the read models) of one deployment or all.

    Checks every deployment's chain; read models built from a log that fails
    verification prove nothing.
    """
    started = time.perf_counter()
    known = sorted(cls.name for cls in ALL_PROJECTIONS)
    unknown = sorted(set(async_projections) - set(known))
    if unknown:
        raise AuditInputError(
            f"unknown projection(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    if deployment_id is not None:
        lengths = {deployment_id: await require_deployment(store, deployment_id)}
    else:
        lengths = await deployment_lengths(store)
    checks, models = await _comparable(store, set(async_projections)) if compare else ([], [])
    outdated = any(c.outdated for c in checks)
    verifier = _Verifier(store, models, checks, progress)
    first_fault: tuple[str, RecordedEvent, str] | None = None
    broken: list[str] = []
    async with AsyncExitStack() as stack:
        scratch = await stack.enter_async_context(Scratch()) if models else None
        for dep, length in lengths.items():
            chain = await verifier.deployment(dep, length, scratch)
            if chain.fault is not None:
                # read models built from a log that fails its chain prove nothing: that
                # deployment is not compared, and the others are still checked
                broken.append(dep)
                if first_fault is None:
                    assert chain.fault_event is not None
                    first_fault = (dep, chain.fault_event, chain.fault)
    if models and deployment_id is None:
        await verifier.orphans(set(lengths))
    projections_ok: bool | None = None
    if models or outdated:
        projections_ok = not verifier.differences and not outdated
    bad_dep, bad, reason = first_fault if first_fault is not None else (None, None, None)
    return AuditReport(
        ok=first_fault is None and projections_ok is not False,
        deployments_checked=len(lengths),
        events_checked=verifier.events,
        first_bad_position=None if bad is None else bad.position,
        first_bad_deployment_id=bad_dep,
        first_bad_deployment_seq=None if bad is None else bad.deployment_seq,
        reason=reason,
        chain_ok=first_fault is None,
        projections_ok=projections_ok,
        rows_compared=verifier.rows,
        differing_rows=verifier.differing,
        differences=verifier.differences,
        projections=checks,
        seconds=time.perf_counter() - started,
        broken_deployments=broken,
    )


class _Verifier:
    """Running totals over the deployments of one verification."""

    def __init__(
        self,
        store: EventStore,
        models: Sequence[Projection],
        checks: Sequence[ProjectionCheck],
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.models = models
        self.checks = checks
        self.progress = progress
        self.events = 0
        self.rows = 0
        self.differing = 0
        self.differences: list[Difference] = []

    async def deployment(self, dep: str, length: int, scratch: Scratch | None) -> ChainCheck:
        """Chain-check (and replay and compare) one deployment; its chain's verdict."""
        limits = await self._limits()
        for attempt in range(1, ATTEMPTS + 1):
            chain, seen, refusal = await self._read(dep, length, scratch, limits)
            if chain.fault is not None or scratch is None:
                if scratch is not None:
                    await scratch.forget(dep)  # what was replayed before the fault
                self.events += seen
                return chain
            if refusal is None:
                found, rows, differing = await self._compare(scratch, dep)
            else:  # the replay stopped at that event: its rows would differ for no news
                found, rows, differing = [refusal], 0, 1
            await scratch.forget(dep)
            if found and attempt < ATTEMPTS:
                now_length, now_limits = (
                    await deployment_length(self.store, dep),
                    await self._limits(),
                )
                if (now_length, now_limits) != (length, limits):  # written meanwhile
                    length, limits = now_length, now_limits
                    continue
            self.events += seen
            self.rows += rows
            self.differing += differing
            self.differences.extend(found)
            return chain
        raise AssertionError("unreachable: the last attempt always returns")

    async def _read(
        self, dep: str, length: int, scratch: Scratch | None, limits: Mapping[str, int]
    ) -> tuple[ChainCheck, int, Difference | None]:
        """Read the deployment once: chain-check every event, apply it to the scratch models."""
        chain = ChainCheck()
        seen = 0
        refusal: Difference | None = None
        async for batch in walk(self.store, dep, length):
            for event in batch:
                seen += 1
                if not chain.check(event):
                    return chain, seen, None
            if scratch is not None and refusal is None:
                try:
                    await scratch.apply(batch, limits)
                except ReplayRefused as exc:
                    refusal = Difference(
                        dep,
                        "*",
                        "chronicle_events",
                        {"deployment_id": dep, "deployment_seq": exc.record.deployment_seq},
                        "refused",
                        replayed=str(exc),
                    )
            if self.progress is not None:
                self.progress(self.events + seen)
        return chain, seen, refusal

    async def _compare(self, scratch: Scratch, dep: str) -> tuple[list[Difference], int, int]:
        found: list[Difference] = []
        rows = differing = 0
        for projection in self.models:
            for layout in layouts(projection):
                result = await compare_table(self.store, scratch.store, layout, dep)
                rows += max(result.rows_stored, result.rows_replayed)
                differing += result.differing_rows
                if result.first is not None:
                    found.append(result.first)
        return found, rows, differing

    async def _limits(self) -> dict[str, int]:
        """The current checkpoint of each compared asynchronous projection."""
        wanted = [c.name for c in self.checks if c.compared and c.mode == "async"]
        if not wanted:
            return {}
        catalog = await ProjectionEngine(self.store, ALL_PROJECTIONS).catalog()
        return {name: catalog[name].checkpoint for name in wanted}

    async def orphans(self, deployments: set[str]) -> None:
        """Rows of deployments without a single event: no replay can produce them."""
        for projection in self.models:
            for layout in layouts(projection):
                for dep in sorted(await deployments_with_rows(self.store, layout) - deployments):
                    self.differing += 1
                    self.differences.append(
                        Difference(
                            dep,
                            layout.projection,
                            layout.table,
                            {layout.deployment_column: dep},
                            "extra",
                            stored="rows of a deployment that has no events in the log",
                        )
                    )


async def _comparable(
    store: EventStore, async_names: set[str]
) -> tuple[list[ProjectionCheck], list[Projection]]:
    """Which read models can be compared, with an entry per model saying how, or why not.

    A read model whose stored version differs from this code's is not compared
    (its tables may have another layout) and fails the check: rebuild it first.
    """
    checks: list[ProjectionCheck] = []
    models: list[Projection] = []
    catalog: Mapping[str, CatalogRow] = {}
    if await table_exists(store, CATALOG):
        catalog = await ProjectionEngine(store, ALL_PROJECTIONS).catalog()
    for cls in ALL_PROJECTIONS:
        mode = "async" if cls.name in async_names else "inline"
        row = catalog.get(cls.name)
        if row is None:
            checks.append(ProjectionCheck(cls.name, False, mode, note="not built in this store"))
            continue
        checkpoint = row.checkpoint if mode == "async" else None
        if row.version != cls.version:
            rebuild = (
                f"stored version {row.version}, this code builds {cls.version}: run "
                f"`chronicle rebuild --projection {cls.name}`"
            )
            checks.append(
                ProjectionCheck(cls.name, False, mode, row.status, checkpoint, True, rebuild)
            )
            continue
        failed = row.error if row.status == "failed" else None
        checks.append(ProjectionCheck(cls.name, True, mode, row.status, checkpoint, note=failed))
        models.append(cls())
    return checks, models


__all__ = ["AuditReport", "ProjectionCheck", "verify_store"]

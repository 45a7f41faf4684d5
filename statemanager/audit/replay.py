"""A deployment as it stood at an earlier point, computed from its log alone.

The log's events up to the point are folded into the nine read models in a
scratch SQLite store in a temporary directory, by the projections' own ``apply``
(the code that builds the live rows inline), with the statements grouped as a
rebuild groups them (``projections.replay.replay_statements``), and then asked
the questions with the read models' own query methods. So there is no second
fold to keep in step with the first, a comparison with the stored rows checks
the rebuild path against the live one, and the store inspected is only read.

The events are applied straight into the scratch read models, not appended to a
scratch log first: read models depend on an event's deployment sequence and
stream version (which the source log supplies) and never on global positions,
so a second copy of the log would only cost a hash, an index update and a
trigger per event (runner logs interleave streams, so it would be appended
about one event per call).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

import eventstore
from eventstore import EventStore, RecordedEvent, Statement, chain_fault
from eventstore.encoding import GENESIS_HASH
from projections.engine import ProjectionEngine
from projections.events import DomainEvent, EventCodecError, decode_event
from projections.models import ALL_PROJECTIONS
from projections.models.ledger import LedgerProjection, LedgerQuantStats
from projections.models.metrics import MetricsProjection, PortfolioMetrics
from projections.models.nav import NavProjection
from projections.models.orders import ClobOrder, OrdersProjection
from projections.models.registry import RegistryProjection
from projections.models.state import CurrentState, StateProjection
from projections.projection import Projection, from_json
from projections.replay import replay_statements

from .source import AuditInputError, deployment_length, require_deployment

BATCH = 5000
"""Events read, and applied in one scratch transaction, at a time (the rebuild's batch)."""

Progress = Callable[[int], None]
"""Called with the number of events handled so far."""


class ReplayRefused(Exception):
    """The read models cannot take an event of the log (undecodable, or refused by a table)."""

    def __init__(self, record: RecordedEvent, cause: BaseException) -> None:
        super().__init__(
            f"event #{record.deployment_seq} of deployment {record.deployment_id!r} "
            f"({record.type} v{record.schema_version}, position {record.position}) "
            f"cannot be applied to the read models: {type(cause).__name__}: {cause}"
        )
        self.record = record
        self.cause = cause


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with an explicit offset, as aware UTC.

    A time without an offset is refused rather than guessed: "14:05 on the 3rd"
    is a different instant in every office that might ask.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise AuditInputError(
            f"{text!r} is not an ISO 8601 time; write e.g. 2026-11-03T14:05:00Z"
        ) from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise AuditInputError(
            f"{text!r} has no UTC offset; add one, e.g. {text.strip()}Z or {text.strip()}+01:00"
        )
    return moment.astimezone(UTC)


# -- the hash chain, checked as the log is read --------------------------------------


class ChainCheck:
    """Follows one deployment's chain with eventstore's own check; keeps the first fault."""

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.expected_seq = 1
        self.fault: str | None = None
        self.fault_event: RecordedEvent | None = None

    def check(self, event: RecordedEvent) -> bool:
        """False (and the fault kept) when ``event`` does not continue the chain."""
        if self.fault is None:
            reason = chain_fault(event, self.prev, self.expected_seq)
            if reason is not None:
                self.fault, self.fault_event = reason, event
        self.prev = event.hash
        self.expected_seq = event.deployment_seq + 1
        return self.fault is None


async def walk(
    store: EventStore, deployment_id: str, upto_seq: int, *, from_seq: int = 1
) -> AsyncIterator[list[RecordedEvent]]:
    """The deployment's events ``from_seq..upto_seq``, in deployment order, in batches."""
    seq = from_seq
    while seq <= upto_seq:
        batch = await store.read_deployment(deployment_id, seq, min(BATCH, upto_seq - seq + 1))
        if not batch:
            return
        yield batch
        seq = batch[-1].deployment_seq + 1


# -- the scratch store ----------------------------------------------------------------


class Scratch:
    """Read models in a throwaway SQLite store, filled from another store's events.

    ``async with Scratch() as scratch``: the temporary directory and everything
    in it is removed on exit.
    """

    def __init__(self, projections: Sequence[type[Projection]] = ALL_PROJECTIONS) -> None:
        self._classes = projections
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._store: EventStore | None = None
        self.models: dict[str, Projection] = {}
        self._by_type: dict[str, list[Projection]] = {}

    async def __aenter__(self) -> Scratch:
        self._dir = tempfile.TemporaryDirectory(prefix="chronicle-replay-")
        try:
            path = Path(self._dir.name) / "replay.db"
            # a crash loses a throwaway file: no fsync per commit
            self._store = await eventstore.connect(f"sqlite:///{path}?synchronous=normal")
            engine = ProjectionEngine(self._store, self._classes)
            await engine.start()  # creates the tables; the scratch log stays empty
        except BaseException:
            await self.close()
            raise
        self.models = {cls.name: engine.live(cls.name) for cls in self._classes}
        for projection in self.models.values():
            for event_type in projection.event_types():
                self._by_type.setdefault(event_type, []).append(projection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        store, self._store = self._store, None
        try:
            if store is not None:
                await store.close()
        finally:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    @property
    def store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError("the scratch store is not open; use `async with Scratch()`")
        return self._store

    def handles(self, event_type: str) -> bool:
        return event_type in self._by_type

    async def apply(
        self, batch: Sequence[RecordedEvent], limits: Mapping[str, int] | None = None
    ) -> None:
        """Apply ``batch`` (one deployment's events, in order) to every read model.

        ``limits`` maps a projection run behind the log to its checkpoint: it
        takes only events at or below that global position, as its projector did.
        One transaction per batch; when it fails, the events are applied one by
        one to name the event the read models refuse (:class:`ReplayRefused`).
        """
        limits = limits or {}
        statements = self._statements(batch, limits)
        try:
            await self.store.execute(statements)
        except Exception:
            for record in batch:  # the batch rolled back: apply it again, one event at a time
                try:
                    await self.store.execute(self._statements([record], limits))
                except Exception as exc:
                    raise ReplayRefused(record, exc) from exc

    def _statements(
        self, batch: Sequence[RecordedEvent], limits: Mapping[str, int]
    ) -> list[Statement]:
        """The batch's statements, built as a rebuild builds them (``replay_statements``).

        Tables are never shared between projections, so each projection's
        statements run as one block.
        """
        items: dict[str, list[tuple[DomainEvent, RecordedEvent]]] = {}
        for record in batch:
            handlers = self._by_type.get(record.type)
            if not handlers:
                continue
            try:
                # bytes read back from the log, as a rebuild decodes them
                event = decode_event(
                    record.type, record.schema_version, record.raw_data, trusted=True
                )
            except EventCodecError as exc:
                raise ReplayRefused(record, exc) from exc
            for projection in handlers:
                limit = limits.get(projection.name)
                if limit is None or record.position <= limit:
                    items.setdefault(projection.name, []).append((event, record))
        return [
            statement
            for name, taken in items.items()
            for statement in replay_statements(self.models[name], taken)
        ]

    async def forget(self, deployment_id: str) -> None:
        """Drop a deployment's rows, so it can be replayed again from its first event."""
        statements = [
            Statement(f"DELETE FROM {table} WHERE {column} = $1", (deployment_id,))
            for projection in self.models.values()
            for table, column in projection.deployment_filter().items()
        ]
        await self.store.execute(statements)


# -- what an auditor asks of a deployment ------------------------------------------------


class NavPoint(msgspec.Struct, frozen=True):
    """One point of the NAV series (``nav_series``' row, decimals and JSON parsed)."""

    timestamp: datetime
    snapshot_id: int
    total_value_usd: Decimal
    available_cash_usd: Decimal
    value_confidence: str
    positions: Any


class DeploymentView(msgspec.Struct, frozen=True):
    """A deployment as its read models answer: the same queries the runner API makes."""

    deployment_id: str
    state: CurrentState | None
    open_registry_rows: list[dict[str, Any]]
    open_orders: list[ClobOrder]
    nav_series: list[NavPoint]
    quant_stats: LedgerQuantStats
    metrics: PortfolioMetrics | None


_LIVE = {cls.name: cls() for cls in ALL_PROJECTIONS}


def _model(models: Mapping[str, Projection], kind: type[Any]) -> Any:
    return models[kind.name]


async def view_of(
    store: EventStore, deployment_id: str, models: Mapping[str, Projection] | None = None
) -> DeploymentView:
    """Ask the read models of ``store`` about one deployment.

    ``models`` defaults to projections bound to the live tables, which is what a
    store written through the StateManager holds and what a scratch store holds.
    """
    m = _LIVE if models is None else models
    nav: NavProjection = _model(m, NavProjection)
    count = await nav.count(store, deployment_id)
    series, _ = await nav.nav_series(store, deployment_id, scan_cap=max(count, 1))
    state: StateProjection = _model(m, StateProjection)
    registry: RegistryProjection = _model(m, RegistryProjection)
    orders: OrdersProjection = _model(m, OrdersProjection)
    ledger: LedgerProjection = _model(m, LedgerProjection)
    metrics: MetricsProjection = _model(m, MetricsProjection)
    return DeploymentView(
        deployment_id=deployment_id,
        state=await state.get(store, deployment_id),
        open_registry_rows=await registry.open_rows(store, deployment_id),
        open_orders=await orders.open_orders(store, deployment_id),
        nav_series=[
            NavPoint(at, snapshot_id, Decimal(total), Decimal(cash), confidence, from_json(doc))
            for at, total, cash, snapshot_id, doc, confidence in series
        ],
        quant_stats=await ledger.quant_stats(store, deployment_id),
        metrics=await metrics.get(store, deployment_id),
    )


class Replayed(msgspec.Struct, frozen=True):
    """A replay's answer and where in the log it stands."""

    deployment_id: str
    events: int
    """Events replayed: the deployment's first ``events`` events."""
    log_events: int
    """The deployment's events in the log now."""
    last_recorded_at: datetime
    seconds: float
    chain_ok: bool
    chain_fault: str | None
    chain_fault_seq: int | None
    view: DeploymentView


async def replay_deployment(
    store: EventStore,
    deployment_id: str,
    *,
    at_seq: int | None = None,
    at_time: datetime | None = None,
    progress: Progress | None = None,
) -> Replayed:
    """The deployment after its first ``at_seq`` events, or as it stood at ``at_time``.

    ``at_time`` takes the longest prefix of the log recorded at or before it: an
    event is stamped before its commit and a deployment's events commit in
    sequence order, so an event stamped later was not in the store then, nor was
    anything after it (a later event stamped earlier, by a skewed clock, included).
    A time after the last event means "now". Bad points raise ``AuditInputError``.
    """
    if (at_seq is None) == (at_time is None):
        raise AuditInputError("give exactly one of --at-seq N or --at-time ISO8601")
    started = time.perf_counter()
    length = await require_deployment(store, deployment_id)
    if at_seq is not None and not 1 <= at_seq <= length:
        raise AuditInputError(
            f"deployment {deployment_id!r} has {length} events; --at-seq must be between "
            f"1 and {length}"
        )
    if at_time is not None:
        first = (await store.read_deployment(deployment_id, 1, 1))[0]
        if at_time < first.recorded_at:
            raise AuditInputError(
                f"{at_time.isoformat()} is before deployment {deployment_id!r} began: its "
                f"first event was recorded at {first.recorded_at.isoformat()}; "
                "choose a later time"
            )
    upto = at_seq if at_seq is not None else length
    chain = ChainCheck()
    done = 0
    last: RecordedEvent | None = None
    async with Scratch() as scratch:
        async for batch in walk(store, deployment_id, upto):
            if at_time is not None:
                kept = _recorded_by(batch, at_time)
                stop = len(kept) < len(batch)
                batch = kept
            else:
                stop = False
            for event in batch:
                chain.check(event)
            if batch:
                try:
                    await scratch.apply(batch)
                except ReplayRefused as refused:
                    if chain.fault_event is not None:
                        refused.add_note(
                            f"the log's hash chain breaks at event "
                            f"#{chain.fault_event.deployment_seq}: {chain.fault}"
                        )
                    raise
                done += len(batch)
                last = batch[-1]
            if progress is not None:
                progress(done)
            if stop:
                break
        assert last is not None  # the first event is in range: checked above
        view = await view_of(scratch.store, deployment_id, scratch.models)
    return Replayed(
        deployment_id=deployment_id,
        events=done,
        log_events=max(length, await deployment_length(store, deployment_id)),
        last_recorded_at=last.recorded_at,
        seconds=time.perf_counter() - started,
        chain_ok=chain.fault is None,
        chain_fault=chain.fault,
        chain_fault_seq=None if chain.fault_event is None else chain.fault_event.deployment_seq,
        view=view,
    )


def _recorded_by(batch: Sequence[RecordedEvent], moment: datetime) -> list[RecordedEvent]:
    kept = []
    for event in batch:
        if event.recorded_at > moment:
            break
        kept.append(event)
    return kept

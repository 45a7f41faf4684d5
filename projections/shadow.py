"""A rebuild's shadow tables and how a batch of the log is replayed into them.

Shared by the engine's one pass over the log and by the workers of a parallel
rebuild (:mod:`projections.parallel`), so both apply events the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence

import msgspec

from eventstore import Placement, Statement

from .events import DomainEvent, current_decoder, decode_event, trusting
from .projection import Projection
from .replay import replay_statements

Progress = Callable[[str, int], None]
"""Called as ``progress(projection_name, events_replayed_so_far)`` during a rebuild."""
YIELD_EVERY = 50
"""Events decoded or applied between two turns of the event loop during a rebuild."""
GC_GEN0_DURING_REPLAY = 50_000
"""Allocations between cyclic collections while a replay decodes the log."""


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector far less often while a replay decodes.

    Decoding allocates a dozen containers per event, none of them in a cycle; at
    the default threshold the collector ran every ~60 events and took ~12% of a
    rebuild (and ~25% of a parallel rebuild's worker CPU, before its workers set
    this too). It still runs meanwhile, just far less often.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], GC_GEN0_DURING_REPLAY), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class ShadowPlan:
    """One projection's part in a rebuild: its shadow tables and how far they are."""

    def __init__(
        self,
        cls: type[Projection],
        shadow: Projection,
        types: frozenset[str],
        checkpoint: int,
        limit: int | None,
    ) -> None:
        self.cls = cls
        self.shadow = shadow
        self.types = types
        self.checkpoint = checkpoint
        """Everything at or below this (position, or deployment seq) is in the shadow."""
        self.resumed_from = checkpoint
        self.limit = limit
        """For an asynchronous projection rebuilt for one deployment: the projector's
        checkpoint, which the shadow may not pass."""
        self.done = False
        self.replayed = 0


async def replay_batch(
    plans: Sequence[ShadowPlan], batch: Sequence[Placement], deployment_id: str | None
) -> list[Statement]:
    """Every plan's statements for ``batch``, each event decoded once; checkpoints moved.

    Hands the loop back every 50 events: the previous batch's commit is
    still sending rows to PostgreSQL and reading its replies, and the server sat
    idle while this ran through a whole batch without a pause (a 200k rebuild
    kept client and server each about half busy).
    """
    by_type: dict[str, list[ShadowPlan]] = {}
    for plan in plans:
        for event_type in plan.types:
            by_type.setdefault(event_type, []).append(plan)
    items: dict[str, list[tuple[DomainEvent, Placement]]] = {p.cls.name: [] for p in plans}
    decoders: dict[tuple[str, int], Callable[[bytes], DomainEvent] | None] = {}
    for start in range(0, len(batch), YIELD_EVERY):
        if start:
            await asyncio.sleep(0)
        with trusting():  # never across the await above
            for record in batch[start : start + YIELD_EVERY]:
                wanting = by_type.get(record.type)
                if not wanting:
                    continue
                mark = record.position if deployment_id is None else record.deployment_seq
                event: DomainEvent | None = None
                for plan in wanting:
                    if plan.done or mark <= plan.checkpoint:
                        continue
                    if plan.limit is not None and record.position > plan.limit:
                        plan.done = True  # the projector has not gone past here yet
                        continue
                    if event is None:
                        event = _decode(record, decoders)
                    items[plan.cls.name].append((event, record))
    end = checkpoint_of(batch, deployment_id)
    statements: list[Statement] = []
    for plan in plans:
        taken = items[plan.cls.name]
        plan.replayed += len(taken)
        if not plan.done:
            plan.checkpoint = max(plan.checkpoint, end)
        elif taken:
            last = taken[-1][1]
            plan.checkpoint = last.position if deployment_id is None else last.deployment_seq
        if len(taken) >= YIELD_EVERY:
            await asyncio.sleep(0)
        statements.extend(replay_statements(plan.shadow, taken))
    return statements


def checkpoint_of(batch: Sequence[Placement], deployment_id: str | None) -> int:
    last = batch[-1]
    return last.position if deployment_id is None else last.deployment_seq


def _decode(
    record: Placement, decoders: dict[tuple[str, int], Callable[[bytes], DomainEvent] | None]
) -> DomainEvent:
    """``decode_event(..., trusted=True)`` without its per-event lookups: each type's
    decoder is looked up once per batch."""
    key = (record.type, record.schema_version)
    decoder = decoders.get(key)
    if decoder is None and key not in decoders:
        decoder = decoders[key] = current_decoder(*key)
    if decoder is not None:
        try:
            return decoder(record.raw_data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass  # decode_event raises the typed error
    return decode_event(record.type, record.schema_version, record.raw_data, trusted=True)

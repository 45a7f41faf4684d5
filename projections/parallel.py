"""Rebuilding with several processes: the deployments are split between workers.

Every read model keys its rows by deployment, so deployments can be replayed
independently and in any order relative to one another. A parallel rebuild
takes a bound below which the log is final (:meth:`EventStore.horizon`), splits
the deployments into groups of about equal size and lets one worker process per
group replay each of its deployments up to that bound, in the deployment's own
order, into the shared shadow tables. The engine then applies the log's tail
and swaps, exactly as after its one-pass replay.

A worker commits its rows together with, per projection and deployment, how
far it got (``chronicle_rebuild_progress``); an interrupted parallel rebuild
resumes from there, with any number of workers. A worker is its own process
because decoding and applying events is Python work that one interpreter does
on one core; SQLite lets one worker write at a time while the others decode,
PostgreSQL lets them write at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import os
import queue as queues
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

import eventstore
from eventstore import EventStore, ReplayedEvent, Statement

from .errors import ProjectionError
from .projection import Projection, marks
from .shadow import Progress, ShadowPlan, fewer_collections, replay_batch

PROGRESS = "chronicle_rebuild_progress"
PROGRESS_DDL = f"""CREATE TABLE IF NOT EXISTS {PROGRESS} (
    name TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (name, deployment_id)
)"""
_SAVE_PROGRESS = (
    f"INSERT INTO {PROGRESS} (name, deployment_id, seq) VALUES ($1, $2, $3) "
    "ON CONFLICT (name, deployment_id) DO UPDATE SET seq = excluded.seq"
)
_POLL_SECONDS = 0.2


class RebuildWorkerFailed(ProjectionError):
    """A parallel rebuild's worker stopped with an error; its last batch was not committed."""


class _PlanSpec(msgspec.Struct, frozen=True):
    path: str
    """``module:qualname`` of the projection class, for the worker to import."""
    checkpoint: int
    """The plan's global checkpoint: events at or below it are in the shadow already
    (a one-pass rebuild that was interrupted), unless a progress row says more."""


class _Task(msgspec.Struct, frozen=True):
    url: str
    plans: list[_PlanSpec]
    deployments: list[str]
    below: int
    batch_size: int


async def has_progress(store: EventStore, names: Sequence[str]) -> bool:
    """Whether an interrupted parallel rebuild left progress for one of ``names``."""
    rows = await store.query(
        f"SELECT 1 FROM {PROGRESS} WHERE name IN ({marks(1, len(names))}) LIMIT 1", names
    )
    return bool(rows)


def class_path(cls: type[Projection]) -> str:
    """Where a worker process imports ``cls`` from; refuses a class it could not find."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = load_class(path)
    except (ImportError, AttributeError):
        found = None
    if found is not cls:
        raise ValueError(
            f"a parallel rebuild imports each projection in its worker processes, and "
            f"{cls.__qualname__} cannot be imported from {cls.__module__!r}; define it at "
            "the top level of a module, or rebuild with jobs=1"
        )
    return path


def load_class(path: str) -> Any:
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def split(counts: dict[str, int], jobs: int) -> list[list[str]]:
    """Deployments in ``jobs`` groups of about equal events, biggest first."""
    groups: list[list[str]] = [[] for _ in range(jobs)]
    sizes = [0] * jobs
    for deployment_id in sorted(counts, key=lambda d: (-counts[d], d)):
        smallest = sizes.index(min(sizes))
        groups[smallest].append(deployment_id)
        sizes[smallest] += counts[deployment_id]
    return [group for group in groups if group]


async def replay_in_parallel(
    store: EventStore,
    plans: Sequence[ShadowPlan],
    jobs: int,
    batch_size: int,
    progress: Progress | None,
    grown: Callable[[int], Awaitable[None]],
) -> tuple[int, int]:
    """Replay the log below the current bound into ``plans``' shadow tables with
    ``jobs`` workers; returns ``(events read, last position covered)``.

    The plans' ``replayed`` counts are updated; ``grown(events read so far)`` is
    awaited as the workers report (the engine analyzes the shadow tables as they
    grow). With one job the work runs in this process (a rebuild that resumes a
    parallel one but was given no jobs).
    """
    below = (await store.horizon()).readable_below
    rows = await store.query(
        "SELECT deployment_id, count(*) FROM chronicle_events WHERE position < $1 "
        "GROUP BY deployment_id",
        (below,),
    )
    groups = split({row[0]: int(row[1]) for row in rows}, jobs)
    specs = [_PlanSpec(class_path(plan.cls), plan.checkpoint) for plan in plans]
    tasks = [_Task(store.url, specs, group, below, batch_size) for group in groups]
    base = {plan.cls.name: plan.replayed for plan in plans}
    applied: dict[int, dict[str, int]] = {}
    read: dict[int, int] = {}

    def note(worker: int, counts: dict[str, int], events: int) -> None:
        applied[worker], read[worker] = counts, events
        if progress is not None:
            for name, start in base.items():
                progress(name, start + sum(c.get(name, 0) for c in applied.values()))

    if len(tasks) == 1:  # one group (one job, or one deployment): no process to start

        async def in_process(counts: dict[str, int], events: int) -> None:
            note(0, counts, events)
            await grown(events)

        with fewer_collections():
            await _work(store, tasks[0], in_process)
    elif tasks:
        await _run_workers(tasks, note, lambda: grown(sum(read.values())))
    for plan in plans:
        plan.replayed = base[plan.cls.name] + sum(c.get(plan.cls.name, 0) for c in applied.values())
    return sum(read.values()), below - 1


async def _run_workers(
    tasks: Sequence[_Task],
    note: Callable[[int, dict[str, int], int], None],
    grown: Callable[[], Awaitable[None]],
) -> None:
    context = multiprocessing.get_context("spawn")
    inbox: Any = context.Queue()
    workers = [
        context.Process(
            target=_worker_main,
            args=(index, msgspec.msgpack.encode(task), inbox),
            name=f"chronicle-rebuild-{index}",
            daemon=True,
        )
        for index, task in enumerate(tasks)
    ]
    try:
        for worker in workers:
            worker.start()
        finished: set[int] = set()
        exited: set[int] = set()  # seen gone at the previous quiet poll
        while len(finished) < len(workers):
            try:
                message = await asyncio.to_thread(inbox.get, True, _POLL_SECONDS)
            except queues.Empty:
                for index, worker in enumerate(workers):
                    if index in finished or worker.exitcode is None:
                        continue
                    if index in exited:  # a whole poll later and still no word: killed
                        raise RebuildWorkerFailed(
                            f"rebuild worker {index} exited with code {worker.exitcode} "
                            "(its error, if any, went to stderr; a script that starts a "
                            "parallel rebuild must guard its entry point with "
                            "`if __name__ == '__main__':`, as multiprocessing requires); "
                            "run the rebuild again to resume it"
                        ) from None
                    exited.add(index)  # its last message may be on its way
                continue
            kind, index, *rest = message
            if kind == "progress":
                note(index, rest[0], rest[1])
                await grown()
            elif kind == "done":
                finished.add(index)
            else:
                raise RebuildWorkerFailed(f"rebuild worker {index} failed: {rest[0]}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            if worker.pid is not None:  # started
                await asyncio.to_thread(worker.join, 5)
        inbox.close()


def _worker_main(index: int, task: bytes, outbox: Any) -> None:
    """A worker process: replay its deployments, report progress, then say done."""
    _die_with_parent()
    try:
        asyncio.run(_work_alone(msgspec.msgpack.decode(task, type=_Task), index, outbox))
    except BaseException as exc:  # reported, then the process ends with an error
        outbox.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        sys.exit(1)
    outbox.put(("done", index))


async def _work_alone(task: _Task, index: int, outbox: Any) -> None:
    async def report(counts: dict[str, int], events: int) -> None:
        outbox.put(("progress", index, counts, events))

    async with eventstore.connect(task.url) as store:
        with fewer_collections():
            await _work(store, task, report)


def _die_with_parent() -> None:
    """Ask Linux to end this worker if the rebuilding process dies (killed, say):
    an orphan would go on writing rows that a resumed rebuild writes again."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent was gone before the request took effect
            os._exit(1)


async def _work(
    store: EventStore, task: _Task, report: Callable[[dict[str, int], int], Awaitable[None]]
) -> None:
    """Replay each of the task's deployments, its events below the bound, in order.

    Small deployments share a commit: rows are committed once at least a batch of
    events is pending, with each projection's progress per deployment. One commit
    is in flight while the next batch is read and decoded: on SQLite a worker
    that finds the write lock taken decodes instead of sleeping.
    """
    plans = [
        ShadowPlan(cls, cls(shadow=True), frozenset(cls.event_types()), 0, None)
        for cls in (load_class(spec.path) for spec in task.plans)
    ]
    global_marks = [spec.checkpoint for spec in task.plans]
    names = [plan.cls.name for plan in plans]
    types = sorted(set().union(*(plan.types for plan in plans)))
    marks = await _saved_progress(store, names)
    pending: list[Statement] = []
    pending_events = read_events = 0
    writing: asyncio.Future[None] | None = None

    async def commit(statements: list[Statement], counts: dict[str, int], events: int) -> None:
        await store.execute(statements)
        await report(counts, events)

    async def send() -> None:
        nonlocal pending, pending_events, writing
        if writing is not None:
            await writing  # batches of one deployment commit in order
        counts = {plan.cls.name: plan.replayed for plan in plans}
        writing = asyncio.ensure_future(commit(pending, counts, read_events))
        pending, pending_events = [], 0

    try:
        for deployment_id in task.deployments:
            for plan, global_mark in zip(plans, global_marks, strict=True):
                seq = marks.get((plan.cls.name, deployment_id))
                if seq is None:
                    seq = await _last_seq_at(store, deployment_id, global_mark)
                plan.checkpoint = seq
            after = min(plan.checkpoint for plan in plans)
            while True:
                batch = await store.read_for_replay(
                    after, task.batch_size, types=types, deployment_id=deployment_id
                )
                kept = _below(batch, task.below)
                if kept:
                    read_events += len(kept)
                    pending.extend(await replay_batch(plans, kept, deployment_id))
                    pending.extend(
                        Statement(_SAVE_PROGRESS, (plan.cls.name, deployment_id, plan.checkpoint))
                        for plan in plans
                    )
                    pending_events += len(kept)
                    if pending_events >= task.batch_size:
                        await send()
                if len(kept) < task.batch_size:
                    break
                after = kept[-1].deployment_seq
        await send()
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)


async def _saved_progress(store: EventStore, names: Sequence[str]) -> dict[tuple[str, str], int]:
    rows = await store.query(
        f"SELECT name, deployment_id, seq FROM {PROGRESS} WHERE name IN ({marks(1, len(names))})",
        names,
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


async def _last_seq_at(store: EventStore, deployment_id: str, position: int) -> int:
    """The deployment's sequence number of its last event at or below ``position``."""
    if position <= 0:
        return 0
    rows = await store.query(
        "SELECT coalesce(max(deployment_seq), 0) FROM chronicle_events "
        "WHERE deployment_id = $1 AND position <= $2",
        (deployment_id, position),
    )
    return int(rows[0][0])


def _below(batch: list[ReplayedEvent], bound: int) -> list[ReplayedEvent]:
    """The leading events of a deployment's batch below ``bound`` (position order is
    the deployment's order, so the rest are past it too)."""
    if not batch or batch[-1].position < bound:
        return batch
    return [event for event in batch if event.position < bound]

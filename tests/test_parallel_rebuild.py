"""Parallel rebuilds (``rebuild(jobs=N)``), on SQLite and on PostgreSQL.

Worker processes replay disjoint sets of deployments into the shared shadow
tables. They must give the rows a one-pass rebuild gives, resume after being
cancelled or killed (from their per-deployment progress, with any number of
workers, or after a one-pass rebuild that was cut short), and never outlive the
process that started them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from test_rebuild_robustness import (
    NAMES,
    ROOT,
    appends,
    by_name,
    catalog_rows,
    child_env,
    dump,
    fill,
    settle,
)

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.models import ALL_PROJECTIONS
from projections.models.state import StateProjection
from projections.parallel import PROGRESS, RebuildWorkerFailed, split

DEPLOYMENTS = ["dep-a", "dep-b", "dep-c", "dep-d", "dep-e"]


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, ALL_PROJECTIONS)
    await engine.start()
    yield engine


async def progress_rows(store: EventStore) -> int:
    return int((await store.query(f"SELECT count(*) FROM {PROGRESS}"))[0][0])


async def filled(engine: ProjectionEngine, rounds: int) -> dict[str, list[tuple[Any, ...]]]:
    """Append ``rounds`` rounds for every deployment; the read models' rows the inline
    projections left, once every append is readable by a rebuild."""
    await fill(engine, DEPLOYMENTS, rounds)
    rows = await dump(engine.store)
    await settle(engine.store)
    return rows


def cancel_when(condition: Callable[[str, int], bool]) -> Callable[[str, int], None]:
    """A rebuild's progress callback that cancels the rebuild once ``condition`` holds:
    the cancellation lands at its next await, after the batch just reported."""

    def progress(name: str, done: int) -> None:
        if condition(name, done):
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    return progress


def all_live(catalog: dict[str, tuple[object, ...]]) -> bool:
    return all(row[0] == "live" and row[2] is None for row in catalog.values())


async def test_a_parallel_rebuild_gives_the_rows_of_a_one_pass_rebuild(
    engine: ProjectionEngine,
) -> None:
    store = engine.store
    inline = await filled(engine, 40)
    one_pass = by_name(await engine.rebuild(batch_size=64))
    assert await dump(store) == inline
    seen: dict[str, int] = {}
    reports = by_name(
        await engine.rebuild(jobs=3, batch_size=64, progress=lambda n, d: seen.update({n: d}))
    )
    assert await dump(store) == inline
    for name in NAMES:
        assert reports[name].events == one_pass[name].events > 0
        assert reports[name].log_events == one_pass[name].log_events
        assert seen[name] == reports[name].events  # no tail: nothing was appended meanwhile
    assert all_live(await catalog_rows(store))
    assert await progress_rows(store) == 0


async def test_d_appends_during_a_parallel_rebuild_are_in_the_final_rows(
    engine: ProjectionEngine,
) -> None:
    store = engine.store
    await fill(engine, DEPLOYMENTS, 30)
    await settle(store)
    extra = appends([*DEPLOYMENTS, "dep-new"], range(30, 1000))
    task = asyncio.create_task(engine.rebuild(jobs=2, batch_size=20))
    appended = 0
    while not task.done():  # the workers start, replay below the bound, then the tail
        dep, stream, events = next(extra)
        await engine.append(dep, stream, events)
        appended += 1
        await asyncio.sleep(0.001)
    await task
    assert appended > 0
    after = await dump(store)
    assert all_live(await catalog_rows(store))
    await engine.rebuild(batch_size=1000)  # one pass, nothing running
    assert await dump(store) == after, "the parallel rebuild missed concurrent appends"


async def test_a_cancelled_parallel_rebuild_resumes_with_any_number_of_jobs(
    engine: ProjectionEngine,
) -> None:
    store = engine.store
    inline = await filled(engine, 60)
    for first_jobs, resume_jobs in ((2, 1), (3, 2)):
        cancel_midway = cancel_when(lambda name, done: done > 0)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(
                engine.rebuild(jobs=first_jobs, batch_size=40, progress=cancel_midway)
            )
        assert not multiprocessing.active_children(), "a worker outlived the cancelled rebuild"
        assert all(row[0] == "rebuilding" for row in (await catalog_rows(store)).values())
        assert await progress_rows(store) > 0
        assert await dump(store) == inline, "the live tables changed before the swap"
        reports = await engine.rebuild(jobs=resume_jobs, batch_size=40)
        assert await dump(store) == inline
        assert all(report.events > 0 for report in reports if report.projection != "registry")
        assert all_live(await catalog_rows(store))
        assert await progress_rows(store) == 0


async def test_a_one_pass_rebuild_cut_short_is_finished_in_parallel(
    engine: ProjectionEngine,
) -> None:
    store = engine.store
    inline = await filled(engine, 40)

    cancel_midway = cancel_when(lambda name, done: name == "state" and done >= 60)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(engine.rebuild(batch_size=50, progress=cancel_midway))
    checkpoints = {name: row[2] for name, row in (await catalog_rows(store)).items()}
    assert all(checkpoint and checkpoint > 0 for checkpoint in checkpoints.values())
    reports = by_name(await engine.rebuild(jobs=2, batch_size=50))
    assert all(reports[name].resumed_from == checkpoints[name] for name in NAMES)
    assert await dump(store) == inline


async def test_b_a_killed_worker_fails_the_rebuild_and_a_rerun_resumes(
    engine: ProjectionEngine,
) -> None:
    store = engine.store
    inline = await filled(engine, 60)
    killed: list[int] = []

    def kill_a_worker(name: str, done: int) -> None:
        workers = multiprocessing.active_children()
        if not killed and workers:
            killed.append(workers[0].pid or 0)
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(RebuildWorkerFailed, match=r"exited with code -9|failed"):
        await engine.rebuild(jobs=2, batch_size=30, progress=kill_a_worker)
    assert killed and not multiprocessing.active_children()
    assert await dump(store) == inline
    await engine.rebuild(jobs=2, batch_size=30)
    assert await dump(store) == inline
    assert all_live(await catalog_rows(store))


PARENT = """
import asyncio, sys
import eventstore
from projections.engine import ProjectionEngine
from projections.models import ALL_PROJECTIONS

async def main(url):
    async with eventstore.connect(url) as store:
        await ProjectionEngine(store, ALL_PROJECTIONS).rebuild(jobs=2, batch_size=2)

asyncio.run(main(sys.argv[1]))
"""


async def test_b_workers_die_with_a_killed_parent(engine: ProjectionEngine, store_url: str) -> None:
    """An orphaned worker would go on writing rows a resumed rebuild writes again."""
    if sys.platform != "linux":
        pytest.skip("workers are tied to their parent's life on Linux (PR_SET_PDEATHSIG)")
    store = engine.store
    inline = await filled(engine, 60)
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, store_url, cwd=ROOT, env=child_env()
    )
    try:
        deadline = time.monotonic() + 60
        while await progress_rows(store) == 0:
            assert parent.returncode is None, "the rebuild finished before it could be killed"
            assert time.monotonic() < deadline, "the workers never committed"
            await asyncio.sleep(0.005)
        parent.send_signal(signal.SIGKILL)
        await asyncio.wait_for(parent.wait(), 30)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
    await asyncio.sleep(0.2)  # a commit already sent when the workers died may land
    before = await dump_progress(store)
    await asyncio.sleep(1.0)  # an orphan commits a batch of 2 events every few ms
    assert await dump_progress(store) == before, "a worker went on after its parent died"
    await engine.rebuild(jobs=2, batch_size=50)
    assert await dump(store) == inline


async def dump_progress(store: EventStore) -> list[tuple[object, ...]]:
    rows = await store.query(f"SELECT name, deployment_id, seq FROM {PROGRESS} ORDER BY 1, 2")
    return [tuple(row) for row in rows]


async def test_bad_jobs_and_unimportable_projections_are_refused_before_any_work(
    store: EventStore,
) -> None:
    class LocalState(StateProjection):  # not importable by a worker process
        name = "local_state"

    engine = ProjectionEngine(store, [LocalState])
    await engine.start()
    before = await catalog_rows(store)
    with pytest.raises(ValueError, match="cannot be imported"):
        await engine.rebuild(jobs=2)
    for jobs in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="jobs must be a positive int"):
            await engine.rebuild(jobs=jobs)  # type: ignore[arg-type]
    assert await catalog_rows(store) == before


def test_deployments_are_split_into_groups_of_about_equal_events() -> None:
    counts = {"a": 100, "b": 60, "c": 50, "d": 10, "e": 1}
    groups = split(counts, 2)
    assert sorted(d for group in groups for d in group) == sorted(counts)
    sizes = sorted(sum(counts[d] for d in group) for group in groups)
    assert sizes == [100, 121] or sizes == [110, 111]
    assert split(counts, 9) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert split({}, 3) == []

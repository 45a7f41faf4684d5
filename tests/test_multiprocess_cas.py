"""Compare-and-swap across OS processes: several processes race on one stream.

Each process loops: read the stream's version ``v``, append one event with
``expected_version=v``, and count a success or a ``WrongExpectedVersion``
conflict, until the stream reaches ``TARGET``. Only one append per version can
win, whichever process (and whichever connection, cache or lock) it comes from;
so the stream must end at exactly ``TARGET`` gapless versions, every success must
be in the log exactly once at the version it claimed, and every event must have
been appended on top of the version its writer read. SQLite shares one file
between the processes, PostgreSQL one schema.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventstore import EventStore

PROCESSES = 5
TARGET = 200
MAX_ATTEMPTS = 2_000  # per process; far more than the race needs, so the target is reached
DEPLOYMENT = "dep-cas"
STREAM = "orders"
DEADLINE = 60.0  # a hung worker fails the test instead of the whole run
THINK = 0.004  # up to this many seconds between a process's attempts
REPO = Path(__file__).resolve().parent.parent

# The worker: connects, says "ready", waits for "go" on stdin (so every process
# starts racing at once, not staggered by interpreter start-up), races, prints JSON.
WORKER = r"""
import asyncio, json, random, sys, uuid
import eventstore
from eventstore import NewEvent, WrongExpectedVersion

url, dep, stream, worker = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
target, max_attempts, think = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])

async def main():
    async with eventstore.connect(url) as store:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        attempts = conflicts = 0
        successes, errors = [], []
        while attempts < max_attempts:
            version = await store.stream_version(dep, stream)
            if version >= target:
                break
            event_id = uuid.uuid4()
            event = NewEvent("Claimed", {"worker": worker, "read_version": version},
                             event_id=event_id)
            attempts += 1
            try:
                result = await store.append(dep, stream, [event], expected_version=version)
            except WrongExpectedVersion as exc:
                conflicts += 1
                if exc.actual <= version:
                    errors.append(f"conflict reported actual {exc.actual} <= read {version}")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                successes.append([str(event_id), result.stream_version, result.position,
                                  version, result.replayed])
            # a runner does some work between writes; without it, SQLite's busy handler
            # (sleep and retry) lets whichever process holds the lock keep re-taking it
            await asyncio.sleep(random.uniform(0, think))
        print(json.dumps({"worker": worker, "attempts": attempts, "conflicts": conflicts,
                          "successes": successes, "errors": errors}), flush=True)

asyncio.run(main())
"""


@dataclass(frozen=True)
class Success:
    event_id: uuid.UUID
    version: int
    position: int
    read_version: int
    replayed: bool


@dataclass(frozen=True)
class Report:
    worker: str
    attempts: int
    conflicts: int
    successes: list[Success]
    errors: list[str]

    @classmethod
    def parse(cls, line: str) -> Report:
        raw = json.loads(line)
        successes = [
            Success(uuid.UUID(eid), version, position, read, replayed)
            for eid, version, position, read, replayed in raw["successes"]
        ]
        return cls(raw["worker"], raw["attempts"], raw["conflicts"], successes, raw["errors"])


async def run_workers(url: str, cwd: Path) -> list[Report]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            DEPLOYMENT,
            STREAM,
            f"p{n}",
            str(TARGET),
            str(MAX_ATTEMPTS),
            str(THINK),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
        )
        for n in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
            if line.strip() != b"ready":
                assert proc.stderr is not None
                err = await proc.stderr.read()
                pytest.fail(f"worker did not start: {line!r} {err.decode()[-2000:]}")
        for proc in procs:  # all connected: start the race
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), DEADLINE
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
        reports.append(Report.parse(out.decode().strip().splitlines()[-1]))
    return reports


async def test_processes_racing_on_one_stream_never_lose_or_double_an_event(
    store: EventStore, store_url: str
) -> None:
    assert await store.stream_version(DEPLOYMENT, STREAM) == 0  # the race starts at version 0
    started = time.monotonic()
    reports = await run_workers(store_url, REPO)
    elapsed = time.monotonic() - started

    successes = [s for r in reports for s in r.successes]
    attempts = sum(r.attempts for r in reports)
    conflicts = sum(r.conflicts for r in reports)
    for report in reports:
        assert report.errors == [], report.errors
        assert report.attempts == len(report.successes) + report.conflicts
    assert attempts == len(successes) + conflicts
    assert all(r.attempts < MAX_ATTEMPTS for r in reports)  # each stopped at the target
    # it was a real race: processes interleaved, and many attempts lost to another process
    assert conflicts >= 10, f"only {conflicts} conflicts: the test barely exercised CAS"
    winners = sum(1 for r in reports if r.successes)
    assert winners >= PROCESSES - 1, f"only {winners} processes ever won"

    events = await store.read_stream(DEPLOYMENT, STREAM)
    assert await store.stream_version(DEPLOYMENT, STREAM) == TARGET
    # versions are exactly 1..TARGET, gapless, and each one is one process's success
    assert [e.stream_version for e in events] == list(range(1, TARGET + 1))
    assert len(successes) == len(events) == TARGET
    # each success is in the log exactly once, at the version and position it was told
    stored = {e.event_id: e for e in events}
    assert len(stored) == len(events)
    success_ids = Counter(s.event_id for s in successes)
    assert max(success_ids.values()) == 1
    assert set(success_ids) == set(stored)
    for success in successes:
        event = stored[success.event_id]
        assert (event.stream_version, event.position) == (success.version, success.position)
        assert success.version == success.read_version + 1
        assert not success.replayed
    # every event was written on top of the version its writer had read: CAS held
    for event in events:
        assert event.data["read_version"] == event.stream_version - 1
    by_worker = Counter(e.data["worker"] for e in events)
    assert by_worker == Counter({r.worker: len(r.successes) for r in reports if r.successes})

    # the deployment's log and the global log hold the same events, once, in order
    deployment = await store.read_deployment(DEPLOYMENT)
    assert [e.deployment_seq for e in deployment] == list(range(1, TARGET + 1))
    assert [e.event_id for e in deployment] == [e.event_id for e in events]
    positions = [e.position for e in deployment]
    assert all(a < b for a, b in itertools.pairwise(positions))
    deadline = time.monotonic() + 20.0  # other sessions' open transactions may hold it back
    while True:
        everything = await store.read_all(0, 10_000)
        if len(everything) >= TARGET or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [e.event_id for e in everything] == [e.event_id for e in deployment]
    report = await store.verify()
    assert report.ok, report
    assert report.events_checked == TARGET
    assert elapsed < 30.0, f"the race took {elapsed:.1f}s"

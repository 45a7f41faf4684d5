"""``chronicle rebuild``: the engine's zero-downtime rebuild from the command line."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ..progress import Progress
from .common import OK, add_store_arguments, fail, store_url

NAME = "rebuild"
HELP = "rebuild read models from the log (shadow tables, then an atomic swap)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable report")
    parser.add_argument("--projection", help="rebuild only this read model")
    parser.add_argument("--deployment", help="rebuild only this deployment's rows")
    parser.add_argument(
        "--jobs",
        type=int,
        help="worker processes for a whole-log rebuild (default: one per core, up to "
        f"{MAX_AUTO_JOBS}, for logs of {AUTO_JOBS_FROM:,} events or more; else 1)",
    )


MAX_AUTO_JOBS = 4
AUTO_JOBS_FROM = 100_000
"""Below this many events, starting worker processes costs more than it saves."""


def jobs_for(requested: int | None, events: int, deployment: str | None) -> int:
    """The rebuild's worker processes: as asked, or chosen from the log's size."""
    if requested is not None:
        return requested
    if deployment is not None or events < AUTO_JOBS_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_JOBS))


async def run(args: argparse.Namespace) -> int:
    """Rebuild read models while the live ones keep answering; resumable if interrupted."""
    from projections.engine import ProjectionEngine
    from projections.models import ALL_PROJECTIONS

    from ..audit import AuditInputError
    from ..audit.source import open_existing, require_deployment

    names = sorted(cls.name for cls in ALL_PROJECTIONS)
    if args.projection is not None and args.projection not in names:
        fail(NAME, f"unknown projection {args.projection!r}; choose one of {', '.join(names)}")
    if args.jobs is not None and args.jobs < 1:
        fail(NAME, f"--jobs must be at least 1, got {args.jobs}")
    try:
        async with open_existing(store_url(args)) as store:
            if args.deployment is not None:
                await require_deployment(store, args.deployment)
            engine = ProjectionEngine(store, ALL_PROJECTIONS)
            await engine.start()
            bar = None if args.json else Progress("rebuilding: events applied", total=None)
            to_apply = await _events_to_apply(store, args.projection, args.deployment)
            if bar is not None and bar.shown:
                bar.total = to_apply
            jobs = jobs_for(args.jobs, to_apply, args.deployment)
            done: dict[str, int] = {}

            def progress(name: str, replayed: int) -> None:
                done[name] = replayed
                if bar is not None:
                    bar.update(sum(done.values()))

            started = time.perf_counter()
            reports = await engine.rebuild(
                args.projection, deployment_id=args.deployment, progress=progress, jobs=jobs
            )
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - started
    except AuditInputError as exc:
        fail(NAME, str(exc))
    # events read from the log: one that feeds two read models counts once
    events = reports[0].log_events if reports else 0
    rate = events / seconds if seconds else 0.0
    if args.json:
        print(
            json.dumps(
                {
                    "events": events,
                    "seconds": round(seconds, 3),
                    "events_per_s": round(rate),
                    "deployment": args.deployment,
                    "jobs": jobs,
                    "projections": [
                        {"name": r.projection, "events": r.events, "resumed_from": r.resumed_from}
                        for r in reports
                    ],
                }
            )
        )
        return OK
    scope = f" of deployment {args.deployment!r}" if args.deployment else ""
    print(
        f"rebuilt {len(reports)} read model(s){scope} from {events:,} events in {seconds:.2f} s "
        f"({rate:,.0f} events/s, {_how(jobs, args.deployment)})"
    )
    for report in reports:
        resumed = f"  (resumed after {report.resumed_from})" if report.resumed_from else ""
        print(f"  {report.projection:<16} {report.events:>10,} events{resumed}")
    return OK


def _how(jobs: int, deployment: str | None) -> str:
    if jobs > 1 and deployment is None:
        return f"deployments split between {jobs} worker processes"
    return "one pass over the log"


async def _events_to_apply(store: Any, projection: str | None, deployment: str | None) -> int:
    """What the bar counts to: each read model's events (one event may feed two)."""
    from projections.models import ALL_PROJECTIONS

    from ..audit.source import events_per_type

    per_type = await events_per_type(store, deployment)
    return sum(
        per_type.get(event_type, 0)
        for cls in ALL_PROJECTIONS
        if projection is None or cls.name == projection
        for event_type in cls.event_types()
    )

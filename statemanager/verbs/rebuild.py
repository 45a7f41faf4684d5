"""``chronicle rebuild``: the engine's zero-downtime rebuild from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

import eventstore

from ..progress import Progress
from .common import add_store_arguments, store_url

NAME = "rebuild"
HELP = "rebuild read models from the log (shadow tables, then an atomic swap)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable report")
    parser.add_argument("--projection", help="rebuild only this read model")
    parser.add_argument("--deployment", help="rebuild only this deployment's rows")


async def run(args: argparse.Namespace) -> int:
    """Rebuild read models while the live ones keep answering; resumable if interrupted."""
    from projections.engine import ProjectionEngine
    from projections.models import ALL_PROJECTIONS

    names = sorted(cls.name for cls in ALL_PROJECTIONS)
    if args.projection is not None and args.projection not in names:
        print(
            f"chronicle rebuild: unknown projection {args.projection!r}; "
            f"choose one of {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    async with eventstore.connect(store_url(args)) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        await engine.start()
        bar = None if args.json else Progress("rebuilding", total=None)
        started = time.perf_counter()
        reports = await engine.rebuild(
            args.projection,
            deployment_id=args.deployment,
            progress=None if bar is None else (lambda _name, done: bar.update(done)),
        )
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
    events = sum(r.events for r in reports)
    if args.json:
        print(
            json.dumps(
                {
                    "events": events,
                    "seconds": round(seconds, 3),
                    "events_per_s": round(events / seconds) if seconds else 0,
                    "projections": [
                        {
                            "name": r.projection,
                            "events": r.events,
                            "seconds": round(r.seconds, 3),
                            "resumed_from": r.resumed_from,
                        }
                        for r in reports
                    ],
                }
            )
        )
        return 0
    for report in reports:
        resumed = f" (resumed after position {report.resumed_from})" if report.resumed_from else ""
        print(
            f"{report.projection:<16} {report.events:>9} events  {report.seconds:7.2f} s"
            f"  {report.rate:>9,.0f}/s{resumed}"
        )
    rate = events / seconds if seconds else 0.0
    print(f"{'total':<16} {events:>9} events  {seconds:7.2f} s  {rate:>9,.0f}/s")
    return 0

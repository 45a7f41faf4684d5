"""``chronicle stats``: deployments, events per type, read-model checkpoints and lag."""

from __future__ import annotations

import argparse

import msgspec

from .common import add_store_arguments, fail, store_url

NAME = "stats"
HELP = "show deployments, events per type, and each read model's checkpoint and lag"
SHOWN = 20
"""Deployments listed in the readable output (``--json`` lists all)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print the figures as JSON")
    parser.add_argument(
        "--async",
        dest="async_projections",
        action="append",
        default=[],
        metavar="NAME",
        help="a read model this store runs behind the log (run_async): report its lag (repeatable)",
    )


async def run(args: argparse.Namespace) -> int:
    """Exit 0; 2 on bad input. Counting is a few aggregate queries: no progress bar."""
    from ..audit import AuditInputError
    from ..audit.source import open_existing
    from ..audit.stats import gather

    try:
        async with open_existing(store_url(args)) as store:
            stats = await gather(store, args.async_projections)
    except AuditInputError as exc:
        fail(NAME, str(exc))
    if args.json:
        print(msgspec.json.encode(stats).decode())
        return 0
    print(
        f"log              {stats.events} events in {len(stats.deployments)} deployment(s) "
        f"({stats.backend}); head position {stats.head_position}, "
        f"{stats.held_back} held back from global readers"
    )
    print("deployments")
    width = max([32, *(len(dep.deployment_id) for dep in stats.deployments[:SHOWN])])
    for dep in stats.deployments[:SHOWN]:
        print(
            f"  {dep.deployment_id:<{width}} {dep.events:>9} events  "
            f"{dep.first_recorded_at.isoformat(timespec='seconds')} .. "
            f"{dep.last_recorded_at.isoformat(timespec='seconds')}"
        )
    if len(stats.deployments) > SHOWN:
        print(f"  ... {len(stats.deployments) - SHOWN} more (--json lists them all)")
    print("events per type")
    for event_type, count in stats.events_per_type.items():
        note = "  (no read model)" if event_type in stats.unhandled_types else ""
        print(f"  {event_type:<32} {count:>9}{note}")
    print("read models      version  status      checkpoint  lag")
    for p in stats.projections:
        version = "-" if p.stored_version is None else str(p.stored_version)
        if p.stored_version is not None and p.stored_version != p.code_version:
            version += f" (code {p.code_version}: rebuild)"
        lag = "inline" if p.mode == "inline" else str(p.lag)
        # an inline read model commits with its events: it has no checkpoint to show
        # (the catalog keeps the position its last rebuild reached)
        checkpoint = "-" if p.checkpoint is None or p.mode == "inline" else str(p.checkpoint)
        print(f"  {p.name:<15} {version:<8} {p.status or 'not built':<11} {checkpoint:>10}  {lag}")
        if p.error:
            print(f"    {p.error}")
    return 0

"""Verbs of the ``chronicle`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import eventstore
from eventstore.url import DEFAULT_URL

from .progress import Progress

URL_ENV = "CHRONICLE_URL"


def _url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronicle",
        description="Chronicle: an event-sourced state store for trading deployments.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    demo = sub.add_parser("demo", help="simulate a runner on the embedded store, then show it")
    demo.add_argument("--url", help=f"store URL (default ${URL_ENV} or {DEFAULT_URL})")
    demo.add_argument("--cycles", type=int, default=300, help="runner cycles to simulate")
    demo.add_argument("--deployment", default="demo-runner", help="deployment id to write")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")

    verify = sub.add_parser("verify", help="check every deployment's hash chain")
    verify.add_argument("--url", help=f"store URL (default ${URL_ENV} or {DEFAULT_URL})")
    verify.add_argument("--deployment", help="check only this deployment")
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")

    role = sub.add_parser(
        "writer-role",
        help="print the SQL that creates a PostgreSQL role allowed only INSERT and SELECT",
    )
    role.add_argument("role", help="name of the login role to create")
    role.add_argument("--schema", default="public", help="schema holding the event tables")
    return parser


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "demo":
            return asyncio.run(_demo(args))
        if args.verb == "verify":
            return asyncio.run(_verify(args))
        if args.verb == "writer-role":
            from eventstore.backends.postgres import writer_role_sql

            sys.stdout.write(writer_role_sql(args.role, schema=args.schema))
            return 0
    except eventstore.EventStoreError as exc:
        print(f"chronicle {args.verb}: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled verb {args.verb}")  # pragma: no cover


async def _demo(args: argparse.Namespace) -> int:
    """A runner's cycles written straight to the log, then what the log holds.

    The StateManager-level demo (projections, registry, NAV) builds on this; until
    then it shows the log itself: CAS-versioned state, ledger and snapshot
    streams, read back and verified.
    """
    url = _url(args)
    started = time.perf_counter()
    dep = args.deployment
    async with eventstore.connect(url) as store:
        version = await store.stream_version(dep, "state")
        nav = Decimal("10000")
        progress = Progress("simulating runner", total=args.cycles)
        for cycle in range(1, args.cycles + 1):
            nav += Decimal(cycle % 7 - 3) * Decimal("1.25")
            state = {"cycle": cycle, "nav_usd": nav, "mode": "live"}
            result = await store.append(
                dep,
                "state",
                [eventstore.NewEvent("StateSaved", {"version": version + 1, "state": state})],
                expected_version=version,
            )
            version = result.stream_version
            await store.append(
                dep,
                "ledger",
                [
                    eventstore.NewEvent(
                        "LedgerEntryRecorded",
                        {"cycle_id": f"c{cycle}", "gas_usd": Decimal("0.0123"), "nav": nav},
                    )
                ],
            )
            await store.append(
                dep, "snapshots", [eventstore.NewEvent("PortfolioSnapshotRecorded", {"nav": nav})]
            )
            progress.update(cycle)
        progress.close()
        events = await store.read_deployment(dep)
        report = await store.verify(dep)
    summary: dict[str, Any] = {
        "url": url,
        "deployment": dep,
        "state_version": version,
        "events": len(events),
        "events_per_stream": dict(Counter(e.stream for e in events)),
        "latest_nav_usd": str(nav),
        "chain_ok": report.ok,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"store           {url}")
        print(f"deployment      {dep}: {len(events)} events, state at version {version}")
        for stream, count in sorted(summary["events_per_stream"].items()):
            print(f"  {stream:<13} {count} events")
        print(f"latest NAV      {nav} USD")
        verdict = "verified" if report.ok else f"BROKEN at position {report.first_bad_position}"
        print(f"audit chain     {verdict} ({report.events_checked} events)")
        print(f"took            {summary['seconds']} s")
    return 0 if report.ok else 1


async def _verify(args: argparse.Namespace) -> int:
    async with eventstore.connect(_url(args)) as store:
        report = await store.verify(args.deployment)
    if args.json:
        import msgspec

        print(msgspec.json.encode(report).decode())
    elif report.ok:
        print(
            f"ok: {report.events_checked} events in {report.deployments_checked} "
            "deployment(s), every hash chain intact"
        )
    else:
        print(
            f"BROKEN: deployment {report.first_bad_deployment_id!r} event "
            f"#{report.first_bad_deployment_seq} (position {report.first_bad_position}): "
            f"{report.reason}"
        )
    return 0 if report.ok else 1

"""Verbs of the ``chronicle`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

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
    demo.add_argument("--deployment", help="deployment id to write (default: a fresh one)")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")

    verify = sub.add_parser("verify", help="check every deployment's hash chain")
    verify.add_argument("--url", help=f"store URL (default ${URL_ENV} or {DEFAULT_URL})")
    verify.add_argument("--deployment", help="check only this deployment")
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")

    rebuild = sub.add_parser(
        "rebuild", help="rebuild read models from the log (shadow tables, then an atomic swap)"
    )
    rebuild.add_argument("--url", help=f"store URL (default ${URL_ENV} or {DEFAULT_URL})")
    rebuild.add_argument("--projection", help="rebuild only this read model")
    rebuild.add_argument("--deployment", help="rebuild only this deployment's rows")
    rebuild.add_argument("--json", action="store_true", help="print a machine-readable report")

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
        if args.verb == "rebuild":
            return asyncio.run(_rebuild(args))
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
    """A simulated runner through the public StateManager API, then what the store holds."""
    from .demo import run_demo

    url = _url(args)
    summary = await run_demo(
        url, cycles=args.cycles, deployment_id=args.deployment, progress=not args.json
    )
    state = summary.state
    if args.json:
        print(
            json.dumps(
                {
                    "url": url,
                    "deployment": summary.deployment_id,
                    "cycles": summary.cycles,
                    "seconds": round(summary.seconds, 3),
                    "state": {"version": state.version, "state": state.state},
                    "open_registry_rows": summary.open_rows,
                    "nav": summary.nav,
                    "quant_stats": summary.quant,
                    "order": summary.order,
                    "audit": {"events": summary.events, "chain_ok": summary.chain_ok},
                },
                indent=2,
                default=str,
            )
        )
        return 0 if summary.chain_ok else 1
    print(f"store            {url}")
    print(
        f"deployment       {summary.deployment_id}: {summary.cycles} cycles "
        f"in {summary.seconds:.2f} s"
    )
    print(f"current state    version {state.version}, checksum {state.checksum[:12]}...")
    for key, value in state.state.items():
        print(f"  {key:<15} {value}")
    print(f"open registry    {len(summary.open_rows)} row(s)")
    for row in summary.open_rows:
        print(
            f"  {row['chain']}/{row['primitive']} {row['physical_identity_hash'][:14]}... "
            f"opened in {str(row.get('opened_tx'))[:14]}..."
        )
    nav = summary.nav
    print(
        f"NAV              {nav['snapshots']} snapshots: {nav['first_usd']} -> "
        f"{nav['latest_usd']} USD (high {nav['high_usd']}, low {nav['low_usd']}, "
        f"max drawdown {nav['max_drawdown_pct']}%)"
    )
    quant = summary.quant
    print(
        f"ledger           {quant['entries']} entries, {quant['with_tx_hash']} with tx hash, "
        f"gas {quant['gas_usd_sum']} USD, first-action wallet "
        f"{quant['first_action_wallet_value_usd']} USD"
    )
    order = summary.order
    print(
        f"CLOB order       ord-1 {order['status']}, filled {order['filled']} "
        f"in {order['fills']} fills"
    )
    verdict = "verified" if summary.chain_ok else f"BROKEN: {summary.chain_reason}"
    print(f"audit chain      {verdict} ({summary.events} events, SHA-256 chained)")
    return 0 if summary.chain_ok else 1


async def _rebuild(args: argparse.Namespace) -> int:
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
    async with eventstore.connect(_url(args)) as store:
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

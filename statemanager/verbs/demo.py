"""``chronicle demo``: a simulated runner through the public API, then what the store holds."""

from __future__ import annotations

import argparse
import json

import eventstore

from .common import URL_ENV, add_store_arguments, fail, store_url

NAME = "demo"
HELP = "simulate a runner on the embedded store, then show it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable summary")
    parser.add_argument("--cycles", type=int, default=300, help="runner cycles to simulate")
    parser.add_argument("--deployment", help="deployment id to write (default: a fresh one)")


async def run(args: argparse.Namespace) -> int:
    """A simulated runner through the public StateManager API, then what the store holds."""
    from ..demo import run_demo

    url = store_url(args)
    if args.cycles < 1:
        fail(NAME, f"--cycles must be at least 1, got {args.cycles}")
    await _probe(url)
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


async def _probe(url: str) -> None:
    """Open (and, if need be, create) the store before the simulation starts, so a
    bad URL or an unreachable server is a message and exit 2, not a runner that
    starts without its WARM tier."""
    import sqlite3

    import asyncpg

    try:
        async with eventstore.connect(url):
            pass
    except (OSError, sqlite3.Error, asyncpg.PostgresError) as exc:
        fail(NAME, f"cannot open the store at {url}: {exc}; check --url (or ${URL_ENV})")

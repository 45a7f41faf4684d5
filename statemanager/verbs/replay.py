"""``chronicle replay``: a deployment as it stood at an event or a time, from its log alone."""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

import msgspec

from ..progress import Progress
from .common import add_store_arguments, error, fail, store_url

NAME = "replay"
HELP = "show a deployment as it stood at an event number or a time, replayed from its log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print the replayed read models as JSON")
    parser.add_argument("--deployment", required=True, help="the deployment to replay")
    point = parser.add_mutually_exclusive_group(required=True)
    point.add_argument(
        "--at-seq", type=int, metavar="N", help="after the deployment's first N events"
    )
    point.add_argument(
        "--at-time",
        metavar="ISO8601",
        help="as it stood at this time, with its UTC offset (e.g. 2026-11-03T14:05:00Z)",
    )


async def run(args: argparse.Namespace) -> int:
    """Exit 0; 1 when the replayed part of the log fails its hash chain; 2 on bad input."""
    from ..audit import AuditInputError
    from ..audit.replay import ReplayRefused, parse_instant, replay_deployment
    from ..audit.source import open_existing

    try:
        at_time = None if args.at_time is None else parse_instant(args.at_time)
        async with open_existing(store_url(args)) as store:
            bar = None if args.json else Progress("replaying", total=args.at_seq)
            replayed = await replay_deployment(
                store,
                args.deployment,
                at_seq=args.at_seq,
                at_time=at_time,
                progress=None if bar is None else bar.update,
            )
            if bar is not None:
                bar.close()
    except AuditInputError as exc:
        fail(NAME, str(exc))
    except ReplayRefused as exc:
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        error(
            f"chronicle replay: {exc}{notes}; run `chronicle verify --deployment {args.deployment}`"
        )
        return 1
    if args.json:
        requested: dict[str, Any] = (
            {"at_seq": args.at_seq} if args.at_seq is not None else {"at_time": at_time}
        )
        document = {"requested": requested, **msgspec.to_builtins(replayed)}
        print(msgspec.json.encode(document).decode())
    else:
        _print(replayed)
    return 0 if replayed.chain_ok else 1


def _print(replayed: Any) -> None:
    view = replayed.view
    print(
        f"deployment       {replayed.deployment_id} as of event #{replayed.events} of "
        f"{replayed.log_events} (recorded {replayed.last_recorded_at.isoformat()}); "
        f"replayed from the log in {replayed.seconds:.2f} s"
    )
    state = view.state
    if state is None:
        print("current state    none (no state saved yet, or deleted)")
    else:
        print(
            f"current state    version {state.version}, checksum {state.checksum[:12]}..., "
            f"saved {state.updated_at.isoformat() if state.updated_at else '?'}"
        )
        for key, value in list(state.state.items())[:12]:
            print(f"  {key:<15} {_short(value)}")
        if len(state.state) > 12:
            print(f"  ... {len(state.state) - 12} more keys (--json shows all)")
    rows = view.open_registry_rows
    print(f"open registry    {len(rows)} row(s)")
    for row in rows[:10]:
        handle = f" handle {row['handle']}," if row["handle"] else ""
        print(
            f"  {row['chain']}/{row['primitive']} {row['physical_identity_hash'][:14]}...{handle} "
            f"opened in {str(row.get('opened_tx'))[:14]}..."
        )
    orders = view.open_orders
    print(f"open orders      {len(orders)}")
    for order in orders[:10]:
        print(
            f"  {order.order_id} {order.side} {order.size} @ {order.price} {order.status.value}, "
            f"filled {order.filled_size} in {len(order.fills)} fill(s)"
        )
    series = view.nav_series
    if series:
        values = [point.total_value_usd for point in series]
        print(
            f"NAV series       {len(series)} snapshot(s), {series[0].timestamp.isoformat()} -> "
            f"{series[-1].timestamp.isoformat()}: first {values[0]}, latest {values[-1]}, "
            f"high {max(values)}, low {min(values)} USD"
        )
        for point in series[-3:]:
            at = point.timestamp.isoformat()
            print(f"  {at}  {point.total_value_usd} USD (snapshot {point.snapshot_id})")
    else:
        print("NAV series       no snapshots")
    quant = view.quant_stats
    print(
        f"ledger           {quant.total} entries, {quant.with_tx_hash} with tx hash, gas "
        f"{quant.gas_usd_sum} USD, first-action wallet {quant.first_action_wallet_value_usd} USD"
    )
    metrics = view.metrics
    if metrics is not None:
        print(
            f"PnL baseline     initial {metrics.initial_value_usd} USD, gas spent "
            f"{_usd(metrics.gas_spent_usd)}, total {_usd(metrics.total_value_usd)}"
        )
    if replayed.chain_ok:
        print(f"audit chain      intact over the {replayed.events} events replayed")
    else:
        print(
            f"audit chain      BROKEN at event #{replayed.chain_fault_seq}: "
            f"{replayed.chain_fault}; run `chronicle verify --deployment {replayed.deployment_id}`"
        )


def _usd(value: Decimal | None) -> str:
    return "unmeasured" if value is None else f"{value} USD"


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= width else text[: width - 3] + "..."

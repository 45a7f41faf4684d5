"""``chronicle verify``: every deployment's hash chain."""

from __future__ import annotations

import argparse

import eventstore

from .common import add_store_arguments, store_url

NAME = "verify"
HELP = "check every deployment's hash chain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable report")
    parser.add_argument("--deployment", help="check only this deployment")


async def run(args: argparse.Namespace) -> int:
    async with eventstore.connect(store_url(args)) as store:
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

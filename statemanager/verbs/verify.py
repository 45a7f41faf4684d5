"""``chronicle verify``: hash chains, then the read models against a replay of the log.

With ``--file`` it checks an export instead, offline: no store is opened.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from ..progress import Progress
from .common import add_store_arguments, fail, store_url

NAME = "verify"
HELP = (
    "check every deployment's hash chain, then compare the read models with a replay "
    "of the log; or check an export file offline (--file)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable report")
    parser.add_argument("--deployment", help="check only this deployment")
    parser.add_argument(
        "--file", metavar="FILE", help="verify a `chronicle export` file offline, without a store"
    )
    parser.add_argument(
        "--chain-only", action="store_true", help="check the hash chains, not the read models"
    )
    parser.add_argument(
        "--async",
        dest="async_projections",
        action="append",
        default=[],
        metavar="NAME",
        help="a read model this store runs behind the log (run_async): compared only up to "
        "its checkpoint (repeatable)",
    )


async def run(args: argparse.Namespace) -> int:
    """Exit 0 when everything checked holds, 1 when something does not, 2 on bad input."""
    from ..audit import AuditInputError

    try:
        if args.file is not None:
            if args.deployment is not None or args.url is not None:
                fail(NAME, "--file checks the export alone; drop --deployment and --url")
            if args.chain_only or args.async_projections:
                fail(NAME, "--file checks an export's chain only; drop --chain-only and --async")
            return _verify_file(args)
        return await _verify_store(args)
    except AuditInputError as exc:
        fail(NAME, str(exc))


async def _verify_store(args: argparse.Namespace) -> int:
    from ..audit.check import verify_store
    from ..audit.source import deployment_lengths, open_existing, require_deployment

    async with open_existing(store_url(args)) as store:
        bar = None if args.json else Progress("verifying", total=None)
        if bar is not None and bar.shown:
            bar.total = (
                await require_deployment(store, args.deployment)
                if args.deployment is not None
                else sum((await deployment_lengths(store)).values())
            )
        report = await verify_store(
            store,
            args.deployment,
            compare=not args.chain_only,
            async_projections=args.async_projections,
            progress=None if bar is None else bar.update,
        )
        if bar is not None:
            bar.close()
    if args.json:
        print(msgspec.json.encode(report).decode())
        return 0 if report.ok else 1
    if report.chain_ok:
        print(
            f"chain            ok: {report.events_checked} events in "
            f"{report.deployments_checked} deployment(s), every hash chain intact"
        )
    else:
        print(
            f"chain            BROKEN: deployment {report.first_bad_deployment_id!r} event "
            f"#{report.first_bad_deployment_seq} (position {report.first_bad_position}): "
            f"{report.reason}"
        )
        print(
            f"                 {len(report.broken_deployments)} of {report.deployments_checked} "
            "deployment(s) fail their chain; their read models are not compared (a log "
            "that fails verification proves nothing): "
            + ", ".join(repr(d) for d in report.broken_deployments[:5])
            + (" ..." if len(report.broken_deployments) > 5 else "")
        )
    _print_projections(report)
    return 0 if report.ok else 1


def _print_projections(report: Any) -> None:
    compared = [p for p in report.projections if p.compared]
    for check in report.projections:
        if check.outdated or (check.mode == "async" and check.compared) or check.note:
            where = f" up to position {check.checkpoint}" if check.mode == "async" else ""
            state = "compared" + where if check.compared else "NOT compared"
            print(f"  {check.name:<15} {state}{': ' + check.note if check.note else ''}")
    if report.projections_ok is None:
        reason = "--chain-only" if not report.projections else "no read models in this store"
        print(f"read models      not compared ({reason})")
        return
    if report.projections_ok:
        print(
            f"read models      ok: {len(compared)} of {len(report.projections)} compared, "
            f"{report.rows_compared} rows equal to a replay of the log ({report.seconds:.2f} s)"
        )
        return
    print(
        f"read models      DIFFERENT: {report.differing_rows} row(s) differ from a replay "
        f"of the log ({report.rows_compared} rows compared)"
    )
    for difference in report.differences[:20]:
        print(f"  {_describe(difference)}")
    if len(report.differences) > 20:
        print(f"  ... {len(report.differences) - 20} more (--json lists them all)")
    deployments = sorted({d.deployment_id for d in report.differences})
    if deployments and report.chain_ok:
        print(
            "the log is intact: rebuilding replaces the differing rows with the replayed ones, "
            f"e.g. `chronicle rebuild --deployment {deployments[0]}`"
        )


def _describe(difference: Any) -> str:
    key = ", ".join(f"{k}={v!r}" for k, v in difference.key.items())
    where = f"{difference.table} ({difference.projection}) {key}"
    if difference.kind == "differs":
        return (
            f"{where}: column {difference.column} stored {_short(difference.stored)} "
            f"replayed {_short(difference.replayed)}"
        )
    if difference.kind == "missing":
        return f"{where}: missing from the store (the replay has it)"
    if difference.kind == "refused":
        return f"{where}: {difference.replayed}"
    return f"{where}: stored, but no replay produces it"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "...'"


def _verify_file(args: argparse.Namespace) -> int:
    from ..audit.export import verify_file

    bar = None if args.json else Progress("verifying export", total=None)
    report = verify_file(args.file, progress=None if bar is None else bar.update)
    if bar is not None:
        bar.close()
    if args.json:
        print(msgspec.json.encode(report).decode())
    elif report.ok:
        print(
            f"ok: {report.file} holds {report.events_checked} events of deployment "
            f"{report.deployment_id!r}, hash chain intact, last hash {report.last_hash}"
        )
    else:
        seq = (
            f" (event #{report.first_bad_deployment_seq})"
            if report.first_bad_deployment_seq is not None
            else ""
        )
        print(f"BROKEN: {report.file} line {report.first_bad_line}{seq}: {report.reason}")
    return 0 if report.ok else 1

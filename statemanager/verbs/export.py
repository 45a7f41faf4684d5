"""``chronicle export``: a deployment's log as JSON Lines, verifiable offline."""

from __future__ import annotations

import argparse
import os
import sys

import msgspec

from ..progress import Progress
from .common import add_store_arguments, error, fail, store_url

NAME = "export"
HELP = (
    "write a deployment's log as JSON Lines with positions and hashes "
    "(check it offline with `chronicle verify --file`)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(
        parser, json_help="print the export's summary as JSON (stdout with --out, else stderr)"
    )
    parser.add_argument("--deployment", required=True, help="the deployment to export")
    parser.add_argument(
        "--out", metavar="FILE", help="write here (replaced whole at the end); default stdout"
    )


async def run(args: argparse.Namespace) -> int:
    """Exit 0; 1 when the exported log fails its hash chain (the file is written); 2 bad input.

    The export goes to stdout unless ``--out`` is given, so the summary goes to
    stderr, as JSON with ``--json``.
    """
    from ..audit import AuditInputError
    from ..audit.export import export_deployment, open_output
    from ..audit.source import open_existing, require_deployment

    try:
        async with open_existing(store_url(args)) as store:
            total = await require_deployment(store, args.deployment)
            if args.out is None:
                out, finish = sys.stdout.buffer, None
            else:
                out, finish = open_output(args.out)
            bar = None if args.json else Progress("exporting", total=total)
            try:
                summary = await export_deployment(
                    store, args.deployment, out, None if bar is None else bar.update
                )
            except BaseException:
                if finish is not None:
                    finish(False)
                raise
            if finish is not None:
                finish(True)
            else:
                out.flush()
            if bar is not None:
                bar.close()
    except AuditInputError as exc:
        fail(NAME, str(exc))
    except BrokenPipeError:
        # the reader stopped early (`| head`): say so, and keep Python from
        # complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        error("chronicle export: the output was closed before the export was complete")
        return 1
    target = args.out or "stdout"
    # the summary takes stdout when the export does not
    say = print if args.out is not None else error
    if args.json:
        say(msgspec.json.encode({"out": target, **msgspec.to_builtins(summary)}).decode())
    else:
        say(
            f"exported {summary.events} events of deployment {summary.deployment_id!r} "
            f"({summary.bytes} bytes) to {target}; last hash {summary.last_hash}"
        )
    if not summary.chain_ok:
        error(
            f"WARNING: the log's hash chain is broken at event #{summary.chain_fault_seq} "
            f"({summary.chain_fault}); this export will not verify"
        )
        return 1
    return 0

"""The ``chronicle`` command: parse the verb, run it, turn errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import inspect

import eventstore

from .verbs import VERBS
from .verbs.common import BAD_INPUT, BadInput, error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronicle",
        description="Chronicle: an event-sourced state store for trading deployments.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        verb.add_arguments(sub.add_parser(verb.NAME, help=verb.HELP, description=verb.HELP))
    return parser


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    verb = next(v for v in VERBS if args.verb == v.NAME)
    try:
        result = verb.run(args)
        code: int = asyncio.run(result) if inspect.iscoroutine(result) else result
        return code
    except BadInput as exc:
        error(str(exc))
        return BAD_INPUT
    except eventstore.EventStoreError as exc:
        error(f"chronicle {args.verb}: {exc}")
        return BAD_INPUT

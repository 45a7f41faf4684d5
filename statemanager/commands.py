"""The ``chronicle`` command: parse the verb, run it, turn errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys

import eventstore

from .verbs import VERBS
from .verbs.common import BAD_INPUT, CHECK_FAILED, BadInput, error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronicle",
        description="Chronicle: an event-sourced state store for trading deployments.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        verb.add_arguments(sub.add_parser(verb.NAME, help=verb.HELP, description=verb.HELP))
    return parser


INTERRUPTED = 130
"""The shell's code for a command stopped by Ctrl-C (128 + SIGINT)."""


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    verb = next(v for v in VERBS if args.verb == v.NAME)
    try:
        if getattr(args, "url", None) == "":
            raise BadInput(
                f"chronicle {args.verb}: --url is empty; give a store URL or leave it out"
            )
        result = verb.run(args)
        code: int = asyncio.run(result) if inspect.iscoroutine(result) else result
        return code
    except BadInput as exc:
        error(str(exc))
        return BAD_INPUT
    except eventstore.EventStoreError as exc:
        error(f"chronicle {args.verb}: {exc}")
        return BAD_INPUT
    except BrokenPipeError:
        # the reader went away (`| head`): nothing more to say, and nowhere to say
        # it; stdout goes to /dev/null so Python's flush at exit stays quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CHECK_FAILED
    except KeyboardInterrupt:
        error(f"chronicle {args.verb}: interrupted (work committed so far is kept)")
        return INTERRUPTED

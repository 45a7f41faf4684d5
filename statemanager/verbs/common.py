"""What every verb shares: the store URL, ``--json``, exit codes and error messages."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from eventstore.url import DEFAULT_URL

URL_ENV = "CHRONICLE_URL"

OK = 0
CHECK_FAILED = 1
BAD_INPUT = 2


class BadInput(Exception):
    """Input a verb cannot work with; the message says what to do instead."""


def add_store_arguments(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    parser.add_argument("--url", help=f"store URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help=json_help)


def store_url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url


def fail(verb: str, message: str) -> NoReturn:
    raise BadInput(f"chronicle {verb}: {message}")


def error(message: str) -> None:
    print(message, file=sys.stderr)

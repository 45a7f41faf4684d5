"""``chronicle writer-role``: SQL for a PostgreSQL role that may only INSERT and SELECT."""

from __future__ import annotations

import argparse
import sys

NAME = "writer-role"
HELP = "print the SQL that creates a PostgreSQL role allowed only INSERT and SELECT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", help="name of the login role to create")
    parser.add_argument("--schema", default="public", help="schema holding the event tables")


def run(args: argparse.Namespace) -> int:
    from eventstore.backends.postgres import writer_role_sql

    sys.stdout.write(writer_role_sql(args.role, schema=args.schema))
    return 0

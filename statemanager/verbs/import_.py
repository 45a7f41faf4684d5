"""``chronicle import``: a legacy state database into the log, every table, nothing dropped."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import eventstore
from eventstore.url import parse_url

from ..progress import Progress
from .common import CHECK_FAILED, OK, add_store_arguments, fail, store_url

NAME = "import"
HELP = "import a legacy table-based state database into the log (every row, nothing dropped)"

if TYPE_CHECKING:  # the engine is imported when the verb runs, not at start-up
    from ..legacy import CheckReport, ImportPlan, ImportReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, json_help="print a machine-readable report")
    parser.add_argument(
        "legacy", metavar="LEGACY.sqlite", help="the legacy state database (opened read-only)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="then compare the read models with the source tables; exit 1 on any difference",
    )
    parser.add_argument(
        "--deployment",
        metavar="ID",
        help="import the file's deployment under this id (to keep files of one deployment apart)",
    )


async def run(args: argparse.Namespace) -> int:
    """Validate the URL and the file first, so bad input never opens (or creates) a store."""
    from projections.engine import ProjectionEngine
    from projections.models import ALL_PROJECTIONS

    from ..legacy import (
        ImportConflict,
        LegacyInputError,
        check_legacy,
        import_legacy,
        prepare_import,
    )

    url = store_url(args)
    try:
        parse_url(url)
    except eventstore.InvalidURL as exc:
        fail(NAME, f"{exc}; pass --url (or set CHRONICLE_URL) to a valid store URL")
    try:
        plan = await asyncio.to_thread(prepare_import, args.legacy, deployment=args.deployment)
    except LegacyInputError as exc:
        fail(NAME, f"{exc}")
    try:
        store = await eventstore.connect(url)
    except OSError as exc:
        fail(NAME, f"cannot reach the store at {_redacted(url)} ({exc}); check --url")
    try:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        await engine.start()
        bar = None if args.json else Progress("importing", total=len(plan.events))
        try:
            report = await import_legacy(engine, plan, progress=_drawer(bar))
        except ImportConflict as exc:
            fail(NAME, f"{exc}")
        finally:
            if bar is not None:
                bar.close()
        check = None
        if args.check:
            bar = None if args.json else Progress("checking", total=None)
            check = await check_legacy(engine, plan, progress=_drawer(bar))
            if bar is not None:
                bar.close()
    finally:
        await store.close()
    if args.json:
        print(json.dumps(_as_json(url, plan, report, check), indent=2))
    else:
        _print(url, report, check)
    return CHECK_FAILED if check is not None and not check.ok else OK


def _drawer(bar: Progress | None) -> Callable[[int, int], None] | None:
    return None if bar is None else (lambda done, _total: bar.update(done))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _as_json(
    url: str, plan: ImportPlan, report: ImportReport, check: CheckReport | None
) -> dict[str, Any]:
    return {
        "url": _redacted(url),
        "source": report.source,
        "source_digest": report.source_digest,
        "generation": report.generation,
        "deployments": list(report.deployments),
        "deployment_override": plan.deployment_override,
        "tables": [
            {
                "table": t.table,
                "rows": t.rows,
                "events": t.events,
                "written": t.written,
                "already_present": t.already_present,
            }
            for t in report.tables
        ],
        "rows": report.rows,
        "events": report.events,
        "written": report.written,
        "already_present": report.already_present,
        "seconds": round(report.seconds, 4),
        "rows_per_s": round(report.rows_per_s),
        "check": None
        if check is None
        else {
            "ok": check.ok,
            "compared": check.compared,
            "differences": [
                {
                    "area": d.area,
                    "key": d.key,
                    "column": d.column,
                    "source": d.source,
                    "store": d.store,
                }
                for d in check.differences
            ],
            "seconds": round(check.seconds, 4),
        },
    }


def _print(url: str, report: ImportReport, check: CheckReport | None) -> None:
    print(
        f"source      {report.source} ({report.generation}, sha256 {report.source_digest[:12]}...)"
    )
    print(f"store       {_redacted(url)}")
    print(f"deployment  {', '.join(report.deployments) or '(none: the file has no rows)'}")
    print(f"{'table':<26} {'rows':>6} {'events':>7} {'written':>8} {'present':>8}")
    for t in report.tables:
        print(f"{t.table:<26} {t.rows:>6} {t.events:>7} {t.written:>8} {t.already_present:>8}")
    print(
        f"{'total':<26} {report.rows:>6} {report.events:>7} {report.written:>8} "
        f"{report.already_present:>8}   {report.seconds:.2f} s, {report.rows_per_s:,.0f} rows/s"
    )
    if report.written == 0 and report.events:
        print("            already imported: nothing written")
    if check is None:
        return
    for difference in check.differences:
        print(f"  {difference}")
    compared = sum(check.compared.values())
    if check.ok:
        print(
            f"check       ok: {compared} rows compared in {len(check.compared)} areas, "
            "no difference"
        )
    else:
        print(
            f"check       FAILED: {len(check.differences)} difference(s); {compared} rows "
            f"compared in {len(check.compared)} areas"
        )

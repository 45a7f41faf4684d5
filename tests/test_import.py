"""``chronicle import``: the ten real legacy files into the log, on both backends.

Counts are taken from the source files with plain ``sqlite3``, independently of
the importer; the read models are compared with the source tables by the
importer's own check and, for a few values the schema reference documents, by
hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import legacy_files
import pytest

from eventstore import EventStore, Statement, connect
from projections.engine import ProjectionEngine
from projections.events import (
    LedgerEntryRecorded,
    LegacyRowImported,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    decode_event,
)
from projections.models import ALL_PROJECTIONS
from projections.models.ledger import LedgerProjection
from projections.models.orders import OrdersProjection
from statemanager.legacy import (
    ImportConflict,
    LegacyInputError,
    LegacyRowError,
    check_legacy,
    event_id,
    import_legacy,
    prepare_import,
)
from statemanager.types import StateData
from statemanager.warm import ChronicleStore

FIXTURES = legacy_files.DIRECTORY
FILES = [p.name for p in legacy_files.FILES]

# Where the fixtures must be there (CI), their absence is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not FILES and not os.environ.get("CI"),
    reason=f"legacy fixtures not found in {FIXTURES} (set {legacy_files.ENV})",
)


def test_the_ten_legacy_fixtures_are_found() -> None:
    assert len(FILES) == 10, f"expected the ten legacy files in {FIXTURES}, found {FILES}"


# entries and exact gas sum per file (docs/legacy-schema.md, 3.2)
LEDGER_REFERENCE = {
    "baseline_looping.sqlite": (4, "0.79970266328544478311442521"),
    "baseline_lp.sqlite": (2, "1.69523502211229009119"),
    "looping.sqlite": (6, "3.0"),
    "lp.sqlite": (4, "2.0"),
    "settlement.sqlite": (4, "2.0"),
    "lp_curve.sqlite": (2, "0.6830939943200000369366"),
    "lp_triple_teardown_bug_state.sqlite": (2, "1.00"),
    "pendle_pt.sqlite": (2, "1.02343161596"),
    "perp_vib5941_gmx_arb_mainnet.sqlite": (2, "0.07091860022956504919958"),
    "uniswap_lp_collect_capital_flow.sqlite": (4, "2.36123591637"),
}


def source_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        db.close()


async def log_size(store: EventStore) -> int:
    total = 0
    for dep in await store.deployment_ids():
        total += len(await store.read_deployment(dep))
    return total


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, ALL_PROJECTIONS)
    await engine.start()
    yield engine


# -- every real file ------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
async def test_every_file_imports_checks_clean_and_imports_once(
    engine: ProjectionEngine, name: str
) -> None:
    path = FIXTURES / name
    plan = prepare_import(path)
    report = await import_legacy(engine, plan)

    assert {t.table: t.rows for t in report.tables} == source_counts(path)  # nothing skipped
    assert report.written == report.events == len(plan.events) >= report.rows
    assert report.already_present == 0
    assert await log_size(engine.store) == report.events
    check = await check_legacy(engine, plan)
    assert check.ok, "\n".join(map(str, check.differences))

    entries, gas = LEDGER_REFERENCE[name]
    stats = await engine.live("ledger").quant_stats(engine.store, plan.deployments[0])  # type: ignore[attr-defined]
    assert (stats.total, str(stats.gas_usd_sum)) == (entries, gas)

    again = await import_legacy(engine, prepare_import(path))
    assert again.written == 0 and again.already_present == report.events
    assert {t.table: t.rows for t in again.tables} == source_counts(path)
    assert await log_size(engine.store) == report.events
    assert (await engine.store.verify()).ok

    # the log alone rebuilds the same read models
    await engine.rebuild()
    rebuilt = await check_legacy(engine, plan)
    assert rebuilt.ok, "\n".join(map(str, rebuilt.differences))


async def test_rows_without_a_read_model_are_kept_verbatim(
    engine: ProjectionEngine, store: EventStore
) -> None:
    path = FIXTURES / "uniswap_lp_collect_capital_flow.sqlite"
    plan = prepare_import(path)
    await import_legacy(engine, plan)
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    db.row_factory = sqlite3.Row
    source = dict(db.execute("SELECT * FROM teardown_requests").fetchone())
    db.close()

    (recorded,) = await store.read_stream(plan.deployments[0], "legacy/teardown_requests")
    event = decode_event(recorded.type, recorded.schema_version, recorded.raw_data)
    assert isinstance(event, LegacyRowImported)
    assert event.row == source
    assert [type(v) for v in event.row.values()] == [type(v) for v in source.values()]
    assert event.row["result_json"] == source["result_json"]  # the exact text, not re-encoded
    assert event.row["owner_pid"] == 38537 and event.row["reason"] is None
    assert event.primary_key == {"deployment_id": "deployment:b3816ff5ddb8"}
    assert recorded.event_id == event_id(
        plan.source.digest, plan.deployments[0], "teardown_requests", event.primary_key, 0
    )


async def test_typed_rows_keep_what_their_fields_cannot_say(
    engine: ProjectionEngine, store: EventStore
) -> None:
    plan = prepare_import(FIXTURES / "baseline_lp.sqlite")
    await import_legacy(engine, plan)
    dep = "AccountingQuantLPStrategy:dd75f37a57d5"
    ledger = [
        decode_event(r.type, r.schema_version, r.raw_data)
        for r in await store.read_stream(dep, "ledger")
    ]
    (lp_open,) = [
        e for e in ledger if isinstance(e, LedgerEntryRecorded) and e.entry.intent_type == "LP_OPEN"
    ]
    assert isinstance(lp_open, LedgerEntryRecorded)
    # a 160-bit integer inside a JSON column, and raw base units kept as stored
    assert lp_open.entry.extracted_data is not None
    assert lp_open.entry.extracted_data["liquidity"] == (
        1115489085710619414828654646022418608911583149704
    )
    assert lp_open.entry.amount_in == Decimal("859443804580879")
    assert lp_open.legacy is not None
    assert lp_open.legacy.unmapped_columns == {"strategy_id": dep}  # G1's identity twin
    snaps = await store.read_stream(dep, "snapshots")
    first = decode_event(snaps[0].type, snaps[0].schema_version, snaps[0].raw_data)
    assert isinstance(first, PortfolioSnapshotRecorded) and first.legacy is not None
    assert first.deployment_id == dep  # deployment_id '' in G1 snapshots: strategy_id names it
    assert first.legacy.unmapped_columns == {"strategy_id": dep, "deployment_id": ""}

    lo = prepare_import(FIXTURES / "looping.sqlite")
    nulls = {
        e.event.legacy.null_columns  # type: ignore[attr-defined]
        for e in lo.events
        if e.table == "position_events"
    }
    assert nulls == {("leverage", "entry_price", "mark_price", "unrealized_pnl")}


async def test_imported_state_continues_with_compare_and_swap(store_url: str) -> None:
    plan = prepare_import(FIXTURES / "uniswap_lp_collect_capital_flow.sqlite")
    warm = ChronicleStore.for_url(store_url)
    await warm.initialize()
    try:
        await import_legacy(warm.engine, plan)
        dep = plan.deployments[0]
        loaded = await warm.get(dep)
        assert loaded is not None and loaded.version == 20
        loaded.state["note"] = "after the import"
        saved, _ = await warm.save(
            StateData(deployment_id=dep, version=20, state=loaded.state), expected_version=20
        )
        assert saved.version == 21
        again = await import_legacy(warm.engine, prepare_import(FIXTURES / plan.source.path.name))
        assert again.written == 0  # a later re-import still recognises the file
    finally:
        await warm.close()


# -- conflicts, resumption, the deployment override ---------------------------------------


async def test_a_second_file_for_the_same_deployment_is_refused_whole(
    engine: ProjectionEngine, store: EventStore
) -> None:
    await import_legacy(engine, prepare_import(FIXTURES / "lp.sqlite"))
    before = await log_size(store)
    with pytest.raises(ImportConflict, match="--deployment") as refused:
        await import_legacy(engine, prepare_import(FIXTURES / "settlement.sqlite"))
    assert refused.value.deployment_id == "AccountantBaseline:fixture"
    assert await log_size(store) == before

    renamed = prepare_import(FIXTURES / "settlement.sqlite", deployment="settlement-copy")
    report = await import_legacy(engine, renamed)
    assert report.written == report.events and renamed.deployments == ("settlement-copy",)
    check = await check_legacy(engine, renamed)
    assert check.ok, "\n".join(map(str, check.differences))
    lp = await check_legacy(engine, prepare_import(FIXTURES / "lp.sqlite"))
    assert lp.ok  # the first import is untouched


async def test_an_interrupted_import_resumes(engine: ProjectionEngine, store: EventStore) -> None:
    plan = prepare_import(FIXTURES / "perp_vib5941_gmx_arb_mainnet.sqlite")
    half = dataclasses.replace(plan, batches=plan.batches[: len(plan.batches) // 2])
    first = await import_legacy(engine, half)
    assert 0 < first.written < len(plan.events)
    rest = await import_legacy(engine, plan)
    assert rest.already_present == first.written
    assert rest.written == len(plan.events) - first.written
    assert await log_size(store) == len(plan.events)
    check = await check_legacy(engine, plan)
    assert check.ok, "\n".join(map(str, check.differences))


async def test_the_check_reports_a_tampered_read_model(
    engine: ProjectionEngine, store: EventStore
) -> None:
    plan = prepare_import(FIXTURES / "lp_triple_teardown_bug_state.sqlite")
    await import_legacy(engine, plan)
    ledger = engine.live("ledger")
    assert isinstance(ledger, LedgerProjection)
    await store.execute(
        [
            Statement(
                f"UPDATE {ledger.t['ledger']} SET gas_usd = '0.5' WHERE entry_id = $1",
                ("ledger-lp1-close",),
            )
        ]
    )
    check = await check_legacy(engine, plan)
    assert [(d.area, d.key, d.column) for d in check.differences] == [
        ("transaction_ledger", "id='ledger-lp1-close'", "gas_usd")
    ]
    assert check.differences[0].source == "'0.50'" and check.differences[0].store == "'0.5'"


# -- input the importer must refuse -------------------------------------------------------


def test_bad_files_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(LegacyInputError, match="no such file"):
        prepare_import(tmp_path / "missing.sqlite")
    with pytest.raises(LegacyInputError, match="not a SQLite database"):
        prepare_import(FIXTURES / "NOTICE.md")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(LegacyInputError, match="empty"):
        prepare_import(tmp_path / "empty.sqlite")
    plain = tmp_path / "plain.sqlite"
    with sqlite3.connect(plain) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(LegacyInputError, match="not a legacy state database"):
        prepare_import(plain)
    with pytest.raises(LegacyInputError, match="--deployment"):
        prepare_import(FIXTURES / "lp.sqlite", deployment="bad\nid")


def changed_copy(tmp_path: Path, sql: str, params: tuple[Any, ...] = ()) -> Path:
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(FIXTURES / "lp_curve.sqlite", copy)
    with sqlite3.connect(copy) as db:
        db.execute(sql, params)
    db.close()
    return copy


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "UPDATE transaction_ledger SET timestamp = '2026-05-22T12:30:00' WHERE rowid = 1",
            "transaction_ledger row .* column timestamp .* without a timezone",
        ),
        ("UPDATE transaction_ledger SET gas_usd = x'00' WHERE rowid = 1", "BLOB"),
        ("UPDATE transaction_ledger SET id = NULL WHERE rowid = 1", "primary key .* NULL"),
        ("UPDATE portfolio_snapshots SET total_value_usd = '' WHERE rowid = 1", "needs a number"),
    ],
)
def test_rows_no_event_can_carry_refuse_the_file(tmp_path: Path, sql: str, message: str) -> None:
    with pytest.raises(LegacyRowError, match=message):
        prepare_import(changed_copy(tmp_path, sql))


async def test_cells_a_field_cannot_give_back_are_kept_exactly(
    engine: ProjectionEngine, tmp_path: Path
) -> None:
    copy = changed_copy(
        tmp_path,
        "UPDATE transaction_ledger SET amount_in = '1e5', timestamp = ?, "
        "price_inputs_json = '{\"WETH\":{}}', effective_price = 'n/a' WHERE rowid = 1",
        ("2026-08-10T19:39:56Z",),
    )
    plan = prepare_import(copy)
    changed = plan.source.tables["transaction_ledger"].rows[0].cells["id"]
    (first,) = [
        e.event
        for e in plan.events
        if isinstance(e.event, LedgerEntryRecorded) and e.event.entry.entry_id == changed
    ]
    assert isinstance(first, LedgerEntryRecorded) and first.legacy is not None
    assert first.entry.amount_in == Decimal("1E+5") and first.entry.effective_price is None
    assert first.entry.price_inputs == {"WETH": {}}
    assert first.legacy.unmapped_columns == {
        "amount_in": "1e5",
        "timestamp": "2026-08-10T19:39:56Z",
        "price_inputs_json": '{"WETH":{}}',
        "effective_price": "n/a",
    }
    await import_legacy(engine, plan)
    check = await check_legacy(engine, plan)
    # the read model holds the meaning; where its text differs, the check says so
    assert sorted(d.column for d in check.differences) == ["amount_in", "effective_price"]


def test_a_wal_sidecar_is_replayed_on_a_copy(tmp_path: Path) -> None:
    source = tmp_path / "live.sqlite"
    shutil.copyfile(FIXTURES / "pendle_pt.sqlite", source)
    writer = sqlite3.connect(source)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("UPDATE portfolio_metrics SET total_value_usd = '42'")
    writer.commit()
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for suffix in ("", "-wal"):  # what a backup taken while the runner writes looks like
        shutil.copyfile(f"{source}{suffix}", snapshot / f"live.sqlite{suffix}")
    writer.close()
    before = sorted(p.name for p in snapshot.iterdir())
    data = (snapshot / "live.sqlite").read_bytes()

    plan = prepare_import(snapshot / "live.sqlite")
    (metrics,) = [e.event for e in plan.events if e.table == "portfolio_metrics"]
    assert isinstance(metrics, PortfolioMetricsSaved)
    assert metrics.total_value_usd == Decimal("42")  # the sidecar's commit is in
    assert sorted(p.name for p in snapshot.iterdir()) == before  # nothing created or changed
    assert (snapshot / "live.sqlite").read_bytes() == data


async def test_clob_orders_rebuild_with_their_fills(
    engine: ProjectionEngine, tmp_path: Path
) -> None:
    fills = [
        {
            "fill_id": "f-1",
            "price": "0.52",
            "size": "10.0",
            "fee": "0.01",
            "timestamp": "2026-08-11T18:51:00+00:00",
            "counterparty": None,
        }
    ]
    copy = tmp_path / "orders.sqlite"
    shutil.copyfile(FIXTURES / "lp_curve.sqlite", copy)
    with sqlite3.connect(copy) as db:
        for order_id, status, filled, average, order_fills in (
            ("ord-open", "partially_filled", "10.0", "0.52", json.dumps(fills)),
            ("ord-done", "cancelled", "0", None, "[]"),
        ):
            db.execute(
                "INSERT INTO clob_orders (deployment_id, order_id, market_id, token_id, side, "
                "status, price, size, filled_size, average_fill_price, fills, order_type, "
                "metadata, submitted_at, updated_at) VALUES ('deployment:3e2129722c88', ?, "
                "'mkt-1', 'tok-1', 'BUY', ?, '0.52', '25', ?, ?, ?, 'GTC', '{}', "
                "'2026-08-11T18:50:00+00:00', '2026-08-11T18:52:00.125000+00:00')",
                (order_id, status, filled, average, order_fills),
            )
    db.close()
    plan = prepare_import(copy)
    await import_legacy(engine, plan)
    check = await check_legacy(engine, plan)
    assert check.ok, "\n".join(map(str, check.differences))
    assert check.compared["clob_orders"] == 2
    orders = engine.live("orders")
    assert isinstance(orders, OrdersProjection)
    (still_open,) = await orders.open_orders(engine.store, "deployment:3e2129722c88")
    assert still_open.order_id == "ord-open" and still_open.fills[0].price == Decimal("0.52")


# -- the command, as an operator runs it ---------------------------------------------------


def chronicle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemanager.cli", "import", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_imports_checks_and_reimports(store_url: str, tmp_path: Path) -> None:
    path = FIXTURES / "uniswap_lp_collect_capital_flow.sqlite"
    done = chronicle(str(path), "--check", "--json", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["check"]["ok"] is True and report["check"]["differences"] == []
    assert {t["table"]: t["rows"] for t in report["tables"]} == source_counts(path)
    assert report["written"] == report["events"] == 42
    assert report["deployments"] == ["deployment:b3816ff5ddb8"]

    again = chronicle(str(path), "--check", "--url", store_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already imported: nothing written" in again.stdout
    assert "check       ok" in again.stdout
    assert "transaction_ledger" in again.stdout


def test_cli_refuses_a_conflicting_file_then_takes_it_renamed(
    store_url: str, tmp_path: Path
) -> None:
    assert chronicle(str(FIXTURES / "lp.sqlite"), "--url", store_url, cwd=tmp_path).returncode == 0
    refused = chronicle(str(FIXTURES / "settlement.sqlite"), "--url", store_url, cwd=tmp_path)
    assert refused.returncode == 2
    assert "already holds events" in refused.stderr and "--deployment" in refused.stderr
    assert refused.stdout == ""
    renamed = chronicle(
        str(FIXTURES / "settlement.sqlite"),
        "--deployment",
        "AccountantBaseline:fixture-st",
        "--check",
        "--url",
        store_url,
        cwd=tmp_path,
    )
    assert renamed.returncode == 0, renamed.stderr
    assert "check       ok" in renamed.stdout


async def test_cli_exits_1_and_lists_each_difference(store_url: str, tmp_path: Path) -> None:
    path = str(FIXTURES / "pendle_pt.sqlite")
    assert chronicle(path, "--url", store_url, cwd=tmp_path).returncode == 0
    async with connect(store_url) as store:
        engine = ProjectionEngine(store, ALL_PROJECTIONS)
        await engine.start()
        nav = engine.live("nav")
        await store.execute(
            [Statement(f"UPDATE {nav.t['portfolio_snapshots']} SET total_value_usd = '1'")]
        )
    done = chronicle(path, "--check", "--url", store_url, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stdout.splitlines() if "total_value_usd" in line]
    assert len(lines) == 3  # one per snapshot
    assert "portfolio_snapshots id=4: total_value_usd: source" in lines[0]
    assert "check       FAILED: 3 difference(s)" in done.stdout


def store_file(store_url: str) -> Path:
    return Path(store_url.removeprefix("sqlite:///"))


async def schema_tables(store_url: str) -> list[str]:
    dsn, _, query = store_url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&"))["schema"]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return [r["table_name"] for r in rows]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("not sqlite", "not a SQLite database"),
        ("not legacy", "not a legacy state database"),
        ("bad url", "URL"),
    ],
)
async def test_cli_bad_input_exits_2_and_leaves_the_store_untouched(
    store_url: str, backend_name: str, tmp_path: Path, case: str, message: str
) -> None:
    legacy = str(FIXTURES / "lp.sqlite")
    url = store_url
    if case == "missing":
        legacy = str(tmp_path / "nope.sqlite")
    elif case == "not sqlite":
        legacy = str(FIXTURES / "NOTICE.md")
    elif case == "not legacy":
        legacy = str(tmp_path / "plain.sqlite")
        with sqlite3.connect(legacy) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
        db.close()
    else:
        url = "sqlite://somehost/x.db" if backend_name == "sqlite" else "postgresql:///test"
    done = chronicle(legacy, "--check", "--url", url, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and done.stderr.startswith("chronicle import: ")
    assert "Traceback" not in done.stderr
    if backend_name == "sqlite":
        assert not store_file(store_url).exists()
    else:
        assert await schema_tables(store_url) == []


def test_cli_default_store_is_not_created_by_bad_input(tmp_path: Path) -> None:
    done = chronicle(str(tmp_path / "nope.sqlite"), cwd=tmp_path)
    assert done.returncode == 2 and "no such file" in done.stderr
    assert not (tmp_path / "chronicle.db").exists()


async def test_an_unreachable_store_is_bad_input(tmp_path: Path) -> None:
    done = chronicle(
        str(FIXTURES / "lp.sqlite"),
        "--url",
        "postgresql://postgres@127.0.0.1:1/test",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "cannot reach the store" in done.stderr

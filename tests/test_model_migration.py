"""The migration-state read model: baseline insert, progress updates, completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from eventstore import EventStore, Statement
from projections.engine import ProjectionEngine
from projections.events import (
    DomainEvent,
    MigrationBackfillMarkedComplete,
    MigrationStateUpdated,
    MigrationStateUpserted,
)
from projections.models.migration import MigrationProjection, MigrationState

T0 = datetime(2026, 8, 11, 18, 50, 18, 343576, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def upserted(dep: str, primitive: str, seconds: int, cutover: str | None = None) -> Any:
    return MigrationStateUpserted(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=cutover or primitive,
        created_at=at(seconds),
    )


def updated(dep: str, primitive: str, seconds: int, **fields: Any) -> MigrationStateUpdated:
    return MigrationStateUpdated(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=primitive,
        updated_at=at(seconds),
        **fields,
    )


def completed(dep: str, primitive: str, seconds: int, synthesized: int, skipped: int) -> Any:
    return MigrationBackfillMarkedComplete(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=primitive,
        completed_at=at(seconds),
        updated_at=at(seconds + 1),
        rows_synthesized=synthesized,
        rows_skipped_already_present=skipped,
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [MigrationProjection])
    await engine.start()
    yield engine


def model(engine: ProjectionEngine) -> MigrationProjection:
    return cast(MigrationProjection, engine.live("migration"))


async def write(engine: ProjectionEngine, dep: str, *events: DomainEvent) -> None:
    await engine.append(dep, "migration", list(events))


async def get(engine: ProjectionEngine, dep: str, primitive: str) -> MigrationState | None:
    return await model(engine).get(engine.store, dep, primitive, primitive)


def baseline(dep: str, primitive: str, seconds: int) -> MigrationState:
    return MigrationState(
        deployment_id=dep,
        primitive=primitive,
        cutover_key=primitive,
        position_registry_backfill_complete=False,
        backfill_started_at=None,
        backfill_completed_at=None,
        backfill_source_table="position_events",
        backfill_reader_version=1,
        rows_synthesized=0,
        rows_skipped_already_present=0,
        notes={},
        created_at=at(seconds),
        updated_at=at(seconds),
    )


async def test_the_baseline_row_is_inserted_once(engine: ProjectionEngine) -> None:
    assert await get(engine, "dep", "lp") is None
    await write(engine, "dep", upserted("dep", "lp", 0))
    assert await get(engine, "dep", "lp") == baseline("dep", "lp", 0)
    await write(engine, "dep", updated("dep", "lp", 5, rows_synthesized=3))
    # a second upsert leaves the existing row completely unchanged (updated_at included)
    await write(engine, "dep", upserted("dep", "lp", 60))
    got = await get(engine, "dep", "lp")
    assert got is not None
    assert (got.created_at, got.updated_at, got.rows_synthesized) == (at(0), at(5), 3)
    # the key is the triple: another cutover key is another row
    await write(engine, "dep", upserted("dep", "swap", 7, cutover="pendle"))
    assert await get(engine, "dep", "swap") is None
    pendle = await model(engine).get(engine.store, "dep", "swap", "pendle")
    assert pendle is not None and pendle.cutover_key == "pendle" and pendle.created_at == at(7)
    assert await get(engine, "other", "lp") is None


async def test_updates_write_only_the_given_fields(engine: ProjectionEngine) -> None:
    await write(engine, "dep", upserted("dep", "lp", 0))
    await write(
        engine,
        "dep",
        updated(
            "dep",
            "lp",
            2,
            backfill_started_at=at(1),
            backfill_source_table="position_events_v2",
            backfill_reader_version=4,
            notes={"reader": {"batches": [1, 2]}, "note": "déjà"},
        ),
    )
    await write(engine, "dep", updated("dep", "lp", 3, rows_synthesized=12))
    await write(engine, "dep", updated("dep", "lp", 4, rows_skipped_already_present=0))
    await write(engine, "dep", updated("dep", "lp", 5))  # only updated_at
    got = await get(engine, "dep", "lp")
    assert got == MigrationState(
        deployment_id="dep",
        primitive="lp",
        cutover_key="lp",
        position_registry_backfill_complete=False,  # progress never flips the flag
        backfill_started_at=at(1),
        backfill_completed_at=None,
        backfill_source_table="position_events_v2",
        backfill_reader_version=4,
        rows_synthesized=12,
        rows_skipped_already_present=0,
        notes={"reader": {"batches": [1, 2]}, "note": "déjà"},
        created_at=at(0),
        updated_at=at(5),
    )


async def test_completion_sets_the_flag_and_final_counts(engine: ProjectionEngine) -> None:
    await write(
        engine,
        "dep",
        upserted("dep", "lp", 0),
        updated("dep", "lp", 1, backfill_started_at=at(1), rows_synthesized=2),
        completed("dep", "lp", 10, synthesized=7, skipped=3),
    )
    got = await get(engine, "dep", "lp")
    assert got is not None
    assert got.position_registry_backfill_complete is True
    assert (got.backfill_started_at, got.backfill_completed_at) == (at(1), at(10))
    assert (got.rows_synthesized, got.rows_skipped_already_present) == (7, 3)
    assert got.updated_at == at(11) and got.created_at == at(0)
    # later progress and a repeated baseline never take the flag back
    await write(
        engine, "dep", updated("dep", "lp", 20, rows_synthesized=8), upserted("dep", "lp", 30)
    )
    got = await get(engine, "dep", "lp")
    assert got is not None and got.position_registry_backfill_complete is True
    assert got.rows_synthesized == 8 and got.updated_at == at(20)


async def test_events_for_a_missing_row_change_nothing(engine: ProjectionEngine) -> None:
    await write(
        engine,
        "dep",
        updated("dep", "perp", 1, rows_synthesized=5),
        completed("dep", "perp", 2, synthesized=5, skipped=0),
    )
    assert await get(engine, "dep", "perp") is None
    assert await model(engine).for_deployment(engine.store, "dep") == []


async def test_for_deployment_lists_every_cutover_in_key_order(engine: ProjectionEngine) -> None:
    await write(
        engine,
        "dep",
        upserted("dep", "swap", 0, cutover="pendle"),
        upserted("dep", "lp_v4", 1),
        upserted("dep", "lending", 2),
        upserted("dep", "lp", 3),
    )
    await write(engine, "other", upserted("other", "perp", 4))
    rows = await model(engine).for_deployment(engine.store, "dep")
    assert [(r.primitive, r.cutover_key) for r in rows] == [
        ("lending", "lending"),
        ("lp", "lp"),
        ("lp_v4", "lp_v4"),
        ("swap", "pendle"),
    ]
    assert rows[1] == baseline("dep", "lp", 3)


async def test_reads_normalise_like_the_reference(engine: ProjectionEngine) -> None:
    await write(
        engine,
        "dep",
        upserted("dep", "lp", 0),
        updated("dep", "lp", 1, backfill_source_table="", backfill_reader_version=0),
    )
    got = await get(engine, "dep", "lp")
    assert got is not None
    assert (got.backfill_source_table, got.backfill_reader_version) == ("position_events", 1)
    # notes that are not a JSON object (only possible by editing the table) read as {}
    await engine.store.execute(
        [
            Statement(
                "UPDATE rm_migration_state SET notes = $1 WHERE deployment_id = $2", ("[1]", "dep")
            )
        ]
    )
    got = await get(engine, "dep", "lp")
    assert got is not None and got.notes == {}


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    primitives = ("lp", "lp_v4", "lending", "perp")
    for i in range(24):
        dep = f"dep-{i % 3}"
        primitive = primitives[i % 4]
        await write(engine, dep, upserted(dep, primitive, i))
        await write(engine, dep, updated(dep, primitive, i + 1, rows_synthesized=i, notes={"i": i}))
        if i % 5 == 0:
            await write(engine, dep, completed(dep, primitive, i + 2, synthesized=i, skipped=1))
    sql = "SELECT * FROM rm_migration_state ORDER BY deployment_id, primitive, cutover_key"
    before = [tuple(r) for r in await engine.store.query(sql)]
    assert len(before) == 12
    assert any(row[3] == 1 for row in before) and any(row[3] == 0 for row in before)
    (report,) = await engine.rebuild("migration", batch_size=5)
    assert report.events == 24 * 2 + 5
    assert [tuple(r) for r in await engine.store.query(sql)] == before

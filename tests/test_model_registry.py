"""The position registry read model: invariants refused in the append, forward-only status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.errors import (
    ProjectionWriteRefused,
    RegistryAutoCollisionError,
    RegistryHandleConflict,
)
from projections.events import (
    HandleMapping,
    LedgerAndRegistryCommitted,
    LedgerEntry,
    RegistryRow,
    RegistryRowBackfilled,
    RegistryStatus,
)
from projections.models.ledger import LedgerProjection
from projections.models.registry import RegistryProjection

T0 = datetime(2026, 5, 1, tzinfo=UTC)
OPEN, CLOSED, REORG = RegistryStatus.OPEN, RegistryStatus.CLOSED, RegistryStatus.REORG_INVALIDATED
GROUP = "arbitrum:0xpool"
COLUMNS = [
    "deployment_id",
    "chain",
    "primitive",
    "accounting_category",
    "physical_identity_hash",
    "semantic_grouping_key",
    "grouping_policy_version",
    "handle",
    "status",
    "payload",
    "opened_at_block",
    "opened_tx",
    "closed_at_block",
    "closed_tx",
    "last_reconciled_at_block",
    "matching_policy_version",
]


def row(
    identity: str,
    status: RegistryStatus = OPEN,
    *,
    dep: str = "dep",
    chain: str = "arbitrum",
    primitive: str = "lp",
    category: str = "LP",
    group: str = GROUP,
    **extra: Any,
) -> RegistryRow:
    return RegistryRow(
        deployment_id=dep,
        chain=chain,
        primitive=primitive,
        accounting_category=category,
        physical_identity_hash=identity,
        semantic_grouping_key=group,
        grouping_policy_version="univ3_lp@v1",
        status=status,
        **extra,
    )


_entries = iter(range(1, 10_000))


def commit(registry: RegistryRow, handle: str | None = None) -> LedgerAndRegistryCommitted:
    n = next(_entries)
    return LedgerAndRegistryCommitted(
        ledger=LedgerEntry(
            entry_id=f"entry-{n}",
            deployment_id=registry.deployment_id,
            cycle_id=f"cycle-{n}",
            timestamp=T0 + timedelta(minutes=n),
            intent_type="LP_OPEN" if registry.status == OPEN else "LP_CLOSE",
            tx_hash=f"0xtx{n}",
        ),
        registry=registry,
        handle=None
        if handle is None
        else HandleMapping(
            handle=handle,
            deployment_id=registry.deployment_id,
            accounting_category=registry.accounting_category,
        ),
    )


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [RegistryProjection, LedgerProjection])
    await engine.start()
    yield engine


def reg(engine: ProjectionEngine) -> Any:
    return engine.live("registry")


async def table(store: EventStore, name: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await store.query(f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4, 5")]


async def everything(store: EventStore) -> dict[str, Any]:
    """The log and every projection table, to show a refused append changed nothing.

    The log is read per deployment and counted directly: ``read_all`` on
    PostgreSQL holds back events above the cluster's oldest running transaction,
    which another session's transaction can hold down at any moment.
    """
    log = [
        (e.position, e.deployment_seq, e.type, e.raw_data)
        for dep in await store.deployment_ids()
        for e in await store.read_deployment(dep)
    ]
    (count,) = await store.query("SELECT count(*) FROM chronicle_events")
    return {
        "log": log,
        "events": count[0],
        **{t: await table(store, t) for t in ("rm_registry", "rm_ledger", "rm_ledger_stats")},
    }


async def test_commit_then_status_only_moves_forward(engine: ProjectionEngine) -> None:
    opened = row(
        "0xa",
        payload={"token_id": "7", "liquidity": "1000"},
        opened_at_block=100,
        opened_tx="0xopen",
        matching_policy_version=6,
    )
    await engine.append("dep", "registry", [commit(opened)])
    assert await reg(engine).rows(engine.store, "dep") == [opened]

    # an open -> open retry changes nothing, not even the payload
    await engine.append("dep", "registry", [commit(row("0xa", payload={"token_id": "other"}))])
    assert await reg(engine).rows(engine.store, "dep") == [opened]

    closing = row(
        "0xa",
        CLOSED,
        group="arbitrum:0xregrouped",
        payload={"token_id": "7", "amount0_close": "12"},
        opened_at_block=999,
        opened_tx="0xignored",
        closed_at_block=200,
        closed_tx="0xclose",
        last_reconciled_at_block=201,
        matching_policy_version=7,
    )
    await engine.append("dep", "registry", [commit(closing)])
    closed = row(
        "0xa",
        CLOSED,
        group="arbitrum:0xregrouped",
        payload={"token_id": "7", "amount0_close": "12"},
        opened_at_block=100,  # opened_* are never updated
        opened_tx="0xopen",
        closed_at_block=200,
        closed_tx="0xclose",
        last_reconciled_at_block=201,
        matching_policy_version=7,
    )
    assert await reg(engine).rows(engine.store, "dep") == [closed]

    # closed -> closed, closed -> reorg_invalidated (equal priority) and closed -> open
    # are ignored, idempotently
    for later in (
        row("0xa", CLOSED, payload={"x": 1}, closed_tx="0xother"),
        row("0xa", REORG, payload={"x": 2}, closed_at_block=300),
        row("0xa", OPEN, payload={"x": 3}),
    ):
        await engine.append("dep", "registry", [commit(later)])
        assert await reg(engine).rows(engine.store, "dep") == [closed]
    assert await reg(engine).open_rows(engine.store, "dep") == []

    # open -> reorg_invalidated is forward; close anchors left out keep their old values
    await engine.append("dep", "registry", [commit(row("0xb", opened_tx="0xb-open"))])
    await engine.append("dep", "registry", [commit(row("0xb", REORG, last_reconciled_at_block=5))])
    (_, invalidated) = await reg(engine).rows(engine.store, "dep")
    assert invalidated == row(
        "0xb", REORG, opened_tx="0xb-open", last_reconciled_at_block=5, closed_tx=None
    )
    led = engine.live("ledger")
    assert (await led.quant_stats(engine.store, "dep")).total == 8  # type: ignore[attr-defined]


async def test_open_rows_order_filters_and_shape(engine: ProjectionEngine) -> None:
    rows = [
        row("0x1", opened_at_block=20, opened_tx="0xb"),
        row("0x2", opened_at_block=20, opened_tx="0xa", group="g2"),
        row("0x3", opened_at_block=None, opened_tx="0xz", group="g3", chain="base"),
        row("0x4", opened_at_block=None, opened_tx=None, group="g4", primitive="perp"),
        row("0x5", opened_at_block=10, opened_tx=None, group="g5", category="LENDING"),
        row("0x6", opened_at_block=20, opened_tx="0xa", group="g6", handle="h6"),
        row("0x7", CLOSED, opened_at_block=1, group="g7"),
        row("0x8", opened_at_block=1, dep="other"),
    ]
    for each in rows:
        await engine.append(each.deployment_id, "registry", [commit(each)])
    found = await reg(engine).open_rows(engine.store, "dep")
    # NULL blocks first, then NULL txs first; equal (block, tx) ties broken by key
    assert [r["physical_identity_hash"] for r in found] == [
        "0x4",
        "0x3",
        "0x5",
        "0x2",
        "0x6",
        "0x1",
    ]
    assert list(found[0]) == COLUMNS
    assert found[4] == {
        "deployment_id": "dep",
        "chain": "arbitrum",
        "primitive": "lp",
        "accounting_category": "LP",
        "physical_identity_hash": "0x6",
        "semantic_grouping_key": "g6",
        "grouping_policy_version": "univ3_lp@v1",
        "handle": "h6",
        "status": "open",
        "payload": {},
        "opened_at_block": 20,
        "opened_tx": "0xa",
        "closed_at_block": None,
        "closed_tx": None,
        "last_reconciled_at_block": None,
        "matching_policy_version": 1,
    }
    by = reg(engine).open_rows
    assert [r["physical_identity_hash"] for r in await by(engine.store, "dep", chain="base")] == [
        "0x3"
    ]
    assert [r["physical_identity_hash"] for r in await by(engine.store, "dep", primitive="lp")] == [
        "0x3",
        "0x5",
        "0x2",
        "0x6",
        "0x1",
    ]
    lending = await by(engine.store, "dep", accounting_category="LENDING")
    assert [r["physical_identity_hash"] for r in lending] == ["0x5"]
    perp = await by(engine.store, "dep", chain="arbitrum", primitive="perp")
    assert [r["physical_identity_hash"] for r in perp] == ["0x4"]
    assert await by(engine.store, "dep", chain="base", primitive="perp") == []
    assert await by(engine.store, "nobody") == []


async def test_find_open_auto_mode_row(engine: ProjectionEngine) -> None:
    await engine.append(
        "dep",
        "registry",
        [
            commit(row("0xa")),
            commit(row("0xb", group="g-handled", handle="h")),
            commit(row("0xc", group="g-tx", opened_tx="0xOpen")),
            commit(row("0xd", CLOSED, group="g-closed")),
        ],
    )
    find = reg(engine).find_open_auto_mode_row

    async def lookup(group: str, **overrides: str) -> dict[str, str] | None:
        keys = {"deployment_id": "dep", "chain": "arbitrum", "accounting_category": "LP"}
        result: dict[str, str] | None = await find(
            engine.store, **{**keys, **overrides}, semantic_grouping_key=group
        )
        return result

    assert await lookup(GROUP) == {"physical_identity_hash": "0xa", "opened_tx": ""}
    assert await lookup("g-tx") == {"physical_identity_hash": "0xc", "opened_tx": "0xOpen"}
    assert await lookup("g-handled") is None
    assert await lookup("g-closed") is None
    assert await lookup(GROUP, chain="base") is None
    assert await lookup(GROUP, accounting_category="PERP") is None
    assert await lookup(GROUP, deployment_id="other") is None


async def test_auto_mode_collision_refuses_the_whole_append(engine: ProjectionEngine) -> None:
    existing = row("0xexisting", opened_tx="0xopen-tx", opened_at_block=5)
    await engine.append("dep", "registry", [commit(existing)])
    before = await everything(engine.store)
    assert len(before["log"]) == before["events"] == len(before["rm_ledger"]) == 1

    second = row("0xsecond", opened_tx="0xsecond-tx")
    with pytest.raises(RegistryAutoCollisionError) as refused:
        await engine.append("dep", "registry", [commit(second)])
    error = refused.value
    assert error.colliding_row == {
        "semantic_grouping_key": GROUP,
        "existing_physical_identity_hash": "0xexisting",
        "opened_tx": "0xopen-tx",
        "accounting_category": "LP",
    }
    message = str(error)
    for part in ("0xexisting", "0xopen-tx", GROUP, "'LP'", "registry handle", "close"):
        assert part in message
    # nothing landed: not the event, not the ledger row, not the registry row
    assert await everything(engine.store) == before

    # a good event in the same append is refused with it
    fine = row("0xfine", group="another-group")
    with pytest.raises(RegistryAutoCollisionError):
        await engine.append("dep", "registry", [commit(fine), commit(second)])
    assert await everything(engine.store) == before

    # the two ways out: a handle, or closing the existing row first
    await engine.append("dep", "registry", [commit(second, handle="second")])
    third = row("0xthird")
    await engine.append("dep", "registry", [commit(row("0xexisting", CLOSED)), commit(third)])
    found = await reg(engine).open_rows(engine.store, "dep")
    assert [(r["physical_identity_hash"], r["handle"]) for r in found] == [
        ("0xthird", None),  # no opened_tx sorts first
        ("0xsecond", "second"),
    ]


async def test_a_collision_inside_one_append_is_refused_too(engine: ProjectionEngine) -> None:
    before = await everything(engine.store)
    with pytest.raises(ProjectionWriteRefused) as refused:
        await engine.append("dep", "registry", [commit(row("0xa")), commit(row("0xb"))])
    # no committed row to name: the generic refusal, not a registry collision
    assert not isinstance(refused.value, RegistryAutoCollisionError)
    assert "nothing was written" in str(refused.value)
    assert await everything(engine.store) == before


async def test_handles_are_unique_per_category(engine: ProjectionEngine) -> None:
    await engine.append("dep", "registry", [commit(row("0xa", handle="main"))])
    before = await everything(engine.store)

    # the same handle on another open position of the category, by row or by mapping
    for refused_event in (
        commit(row("0xb", group="g2", handle="main")),
        commit(row("0xb", group="g2"), handle="main"),
    ):
        with pytest.raises(RegistryHandleConflict) as refused:
            await engine.append("dep", "registry", [refused_event])
        assert "'main'" in str(refused.value) and "0xa" in str(refused.value)
        assert "0xb" in str(refused.value)
        assert await everything(engine.store) == before
    with pytest.raises(RegistryHandleConflict):
        await engine.append(
            "dep", "registry", [RegistryRowBackfilled(row=row("0xz", handle="main"))]
        )
    assert await everything(engine.store) == before

    # another category, or another deployment, may use it
    await engine.append("dep", "registry", [commit(row("0xp", category="PERP", handle="main"))])
    await engine.append("dep2", "registry", [commit(row("0xa", dep="dep2", handle="main"))])
    assert [r.handle for r in await reg(engine).rows(engine.store, "dep")] == ["main", "main"]


async def test_handle_release_and_backfill(engine: ProjectionEngine) -> None:
    await engine.append("dep", "registry", [commit(row("0xa", handle="slot"))])
    await engine.append("dep", "registry", [commit(row("0xa", CLOSED))])
    # a reopened logical slot takes the handle from the closed row of another position
    await engine.append("dep", "registry", [commit(row("0xb"), handle="slot")])
    rows = await reg(engine).rows(engine.store, "dep")
    assert [(r.physical_identity_hash, r.status, r.handle) for r in rows] == [
        ("0xa", CLOSED, None),
        ("0xb", OPEN, "slot"),
    ]
    # a retry that changes no status still fills in a missing handle
    await engine.append("dep", "registry", [commit(row("0xc", group="g2"))])
    await engine.append("dep", "registry", [commit(row("0xc", group="g2"), handle="late")])
    await engine.append("dep", "registry", [commit(row("0xc", group="g2"), handle="later")])
    rows = await reg(engine).rows(engine.store, "dep")
    assert rows[2].physical_identity_hash == "0xc" and rows[2].handle == "late"
    # and the handle lifts the row out of the auto-mode group
    assert (
        await reg(engine).find_open_auto_mode_row(
            engine.store,
            deployment_id="dep",
            chain="arbitrum",
            accounting_category="LP",
            semantic_grouping_key="g2",
        )
        is None
    )


async def test_backfill_inserts_only_when_absent(engine: ProjectionEngine) -> None:
    first = row("0xa", payload={"v": 1}, opened_tx="0x1")
    await engine.append("dep", "backfill", [RegistryRowBackfilled(row=first)])
    again = row("0xa", CLOSED, payload={"v": 2}, closed_tx="0x2")
    await engine.append("dep", "backfill", [RegistryRowBackfilled(row=again)])
    assert await reg(engine).rows(engine.store, "dep") == [first]
    # a committed row is never overwritten by a backfill either
    committed = row("0xb", CLOSED, group="g2", closed_tx="0xc")
    await engine.append("dep", "registry", [commit(committed)])
    await engine.append("dep", "backfill", [RegistryRowBackfilled(row=row("0xb", group="g2"))])
    assert await reg(engine).rows(engine.store, "dep") == [first, committed]
    # but it is refused, like the reference's raw IntegrityError, when it collides
    before = await everything(engine.store)
    with pytest.raises(RegistryAutoCollisionError) as refused:
        await engine.append("dep", "backfill", [RegistryRowBackfilled(row=row("0xc"))])
    assert refused.value.colliding_row is not None
    assert refused.value.colliding_row["existing_physical_identity_hash"] == "0xa"
    assert await everything(engine.store) == before


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    await engine.append("dep", "backfill", [RegistryRowBackfilled(row=row("0xold", CLOSED))])
    for i in range(6):
        await engine.append(
            "dep", "registry", [commit(row(f"0x{i}", group=f"g{i % 3}", handle=f"h{i % 2}"))]
        )
        await engine.append("dep", "registry", [commit(row(f"0x{i}", CLOSED, closed_tx=f"c{i}"))])
    await engine.append("dep", "registry", [commit(row("0xlast", payload={"n": "1.10"}))])
    before = await table(engine.store, "rm_registry")
    assert len(before) == 8
    reports = await engine.rebuild("registry", batch_size=3)
    assert reports[0].events == 14
    assert await table(engine.store, "rm_registry") == before
    # the rebuilt table enforces the same invariants (its indexes carry a new generation)
    with pytest.raises(RegistryAutoCollisionError):
        await engine.append("dep", "registry", [commit(row("0xnew"))])

"""The portfolio-metrics read model: the PnL baseline, replaced whole by each save."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from eventstore import EventStore
from projections.engine import ProjectionEngine
from projections.events import PortfolioMetricsSaved
from projections.models.metrics import MetricsProjection, PortfolioMetrics

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def metrics(dep: str, minute: int, **fields: Any) -> PortfolioMetricsSaved:
    values: dict[str, Any] = {
        "initial_value_usd": Decimal("1000"),
        "initial_timestamp": T0 + timedelta(minutes=minute),
        "updated_at": T0 + timedelta(minutes=minute, microseconds=343576),
    }
    values.update(fields)
    return PortfolioMetricsSaved(deployment_id=dep, **values)


@pytest.fixture
async def engine(store: EventStore) -> AsyncIterator[ProjectionEngine]:
    engine = ProjectionEngine(store, [MetricsProjection])
    await engine.start()
    yield engine


async def get(engine: ProjectionEngine, dep: str) -> PortfolioMetrics | None:
    return await cast(MetricsProjection, engine.live("metrics")).get(engine.store, dep)


async def test_no_metrics_reads_none(engine: ProjectionEngine) -> None:
    assert await get(engine, "dep") is None


async def test_a_save_reads_back_exactly(engine: ProjectionEngine) -> None:
    provenance = [
        {
            "initial_value_usd": "5043.31663500",
            "record_type": "accounting_baseline_provenance",
            "schema_version": 1,
            "source": "snapshot_available_cash_usd",
        }
    ]
    await engine.append(
        "dep",
        "metrics",
        [
            metrics(
                "dep",
                3,
                initial_value_usd=Decimal("10.00616589969173248633700042"),
                deposits_usd=Decimal("0"),
                withdrawals_usd=Decimal("12.50"),
                gas_spent_usd=Decimal("0.79970266328544478311442521"),
                total_value_usd=Decimal("4.186702326577380031781841016"),
                positions=provenance,
                cycle_id="cycle-001",
                execution_mode="live",
                is_complete=False,
            )
        ],
        expected_version=0,
    )
    assert await get(engine, "dep") == PortfolioMetrics(
        deployment_id="dep",
        initial_value_usd=Decimal("10.00616589969173248633700042"),
        initial_timestamp=T0 + timedelta(minutes=3),
        deposits_usd=Decimal("0"),
        withdrawals_usd=Decimal("12.50"),
        gas_spent_usd=Decimal("0.79970266328544478311442521"),
        total_value_usd=Decimal("4.186702326577380031781841016"),
        positions=provenance,
        cycle_id="cycle-001",
        execution_mode="live",
        is_complete=False,
        updated_at=T0 + timedelta(minutes=3, microseconds=343576),
    )
    got = await get(engine, "dep")
    assert got is not None and str(got.withdrawals_usd) == "12.50"  # trailing zero kept


async def test_unmeasured_stays_distinct_from_zero(engine: ProjectionEngine) -> None:
    await engine.append(
        "dep",
        "metrics",
        [
            metrics(
                "dep",
                1,
                deposits_usd=None,
                withdrawals_usd=Decimal("0"),
                gas_spent_usd=Decimal("0E-18"),
                total_value_usd=None,
            )
        ],
    )
    got = await get(engine, "dep")
    assert got is not None
    assert got.deposits_usd is None and got.total_value_usd is None
    assert got.withdrawals_usd == Decimal("0") and got.withdrawals_usd is not None
    assert str(got.gas_spent_usd) == "0E-18"
    assert got.cycle_id is None and got.positions == [] and got.is_complete is True


async def test_each_save_replaces_the_whole_row(engine: ProjectionEngine) -> None:
    await engine.append(
        "dep",
        "metrics",
        [metrics("dep", 1, deposits_usd=Decimal("5"), cycle_id="c1", positions=[{"a": 1}])],
    )
    await engine.append("other", "metrics", [metrics("other", 1, initial_value_usd=Decimal("7"))])
    await engine.append(
        "dep",
        "metrics",
        [metrics("dep", 9, initial_value_usd=Decimal("999.99"), deposits_usd=None)],
    )
    got = await get(engine, "dep")
    assert got is not None
    assert got.initial_value_usd == Decimal("999.99")
    assert got.initial_timestamp == T0 + timedelta(minutes=9)  # the last save's, not the first
    assert got.deposits_usd is None  # a save that does not measure flows un-measures them
    assert got.cycle_id is None and got.positions == []
    other = await get(engine, "other")
    assert other is not None and other.initial_value_usd == Decimal("7")


async def test_rebuild_reproduces_the_inline_rows(engine: ProjectionEngine) -> None:
    for i in range(20):
        dep = f"dep-{i % 4}"
        await engine.append(
            dep,
            "metrics",
            [
                metrics(
                    dep,
                    i,
                    initial_value_usd=Decimal(f"{i}.{i:02d}0"),
                    deposits_usd=None if i % 3 == 0 else Decimal(i),
                    gas_spent_usd=Decimal(f"0.{i:03d}"),
                    cycle_id=f"c{i}" if i % 2 else None,
                )
            ],
        )
    sql = "SELECT * FROM rm_portfolio_metrics ORDER BY deployment_id"
    before = [tuple(r) for r in await engine.store.query(sql)]
    assert len(before) == 4
    (report,) = await engine.rebuild("metrics", batch_size=6)
    assert report.events == 20
    assert [tuple(r) for r in await engine.store.query(sql)] == before

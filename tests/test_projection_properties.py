"""Property tests: random sequences of runner writes, three ways to the same read models.

For each generated history (on SQLite and on PostgreSQL) the inline read models,
the read models after a full rebuild from the log, and a plain-Python reference
fold written here must agree: raw rows for inline versus rebuilt, query results
for the store versus the reference.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventstore
from projections.engine import ProjectionEngine
from projections.events import (
    DomainEvent,
    LedgerEntry,
    LedgerEntryRecorded,
    StateDeleted,
    StateSaved,
)
from projections.models.ledger import LedgerProjection, LedgerQuantStats
from projections.models.state import StateProjection

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DEPLOYMENTS = ("alpha", "beta")
AMOUNTS = st.one_of(
    st.none(),
    st.decimals(min_value=Decimal("-5"), max_value=Decimal("1000"), places=8, allow_nan=False),
    st.sampled_from([Decimal("0"), Decimal("1E-18"), Decimal("12345678901234567890.123456789")]),
)
DOCS = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {
            "wallet_balances": st.dictionaries(
                st.sampled_from(["USDC", "WETH"]), st.sampled_from(["0", "1.5", "100", ""])
            )
        }
    ),
)
PRICES = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {"USDC": st.just({"price_usd": "1"}), "WETH": st.just({"price_usd": "2500.5"})}
    ),
)


@st.composite
def ledger_writes(draw: st.DrawFn, dep: str) -> LedgerEntryRecorded:
    return LedgerEntryRecorded(
        entry=LedgerEntry(
            entry_id=draw(st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"])),  # reuse: replace
            deployment_id=dep,
            cycle_id=draw(st.sampled_from(["", "c1", "c2"])),
            timestamp=T0 + timedelta(minutes=draw(st.integers(0, 20))),
            intent_type=draw(st.sampled_from(["SWAP", "LP_OPEN", "BORROW"])),
            gas_usd=draw(AMOUNTS),
            tx_hash=draw(st.sampled_from(["", "0xab"])),
            success=draw(st.booleans()),
            price_inputs=draw(PRICES),
            pre_state=draw(DOCS),
            post_state=draw(st.sampled_from([None, {}, {"x": "1"}])),
        )
    )


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, DomainEvent]]:
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        dep = draw(st.sampled_from(DEPLOYMENTS))
        kind = draw(st.sampled_from(["state", "state", "delete", "ledger", "ledger", "ledger"]))
        if kind == "state":
            steps.append(
                (
                    "state",
                    StateSaved(
                        deployment_id=dep,
                        version=draw(st.integers(1, 50)),
                        state={"n": draw(st.integers(0, 9)), "nav": str(draw(AMOUNTS))},
                        checksum=draw(st.sampled_from(["a", "b"])),
                        created_at=T0 + timedelta(seconds=draw(st.integers(0, 99))),
                    ),
                )
            )
        elif kind == "delete":
            steps.append(("state", StateDeleted(deployment_id=dep, deleted_at=T0)))
        else:
            steps.append(("ledger", draw(ledger_writes(dep))))
    return steps


# -- the reference fold: plain Python, no SQL ----------------------------------------


@dataclass
class Reference:
    states: dict[str, tuple[int, dict[str, Any], str, datetime]] = field(default_factory=dict)
    first_created: dict[str, datetime] = field(default_factory=dict)
    entries: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, StateSaved):
            self.first_created.setdefault(event.deployment_id, event.created_at)
            self.states[event.deployment_id] = (
                event.version,
                event.state,
                event.checksum,
                event.created_at,
            )
        elif isinstance(event, StateDeleted):
            self.states.pop(event.deployment_id, None)
            self.first_created.pop(event.deployment_id, None)
        elif isinstance(event, LedgerEntryRecorded):
            self.entries[(event.entry.deployment_id, event.entry.entry_id)] = event.entry

    def quant_stats(self, dep: str) -> LedgerQuantStats:
        rows = [e for (d, _), e in self.entries.items() if d == dep]
        if not rows:
            return LedgerQuantStats()

        def gas(e: LedgerEntry) -> Decimal:
            return e.gas_usd if e.gas_usd is not None and e.gas_usd.is_finite() else Decimal(0)

        anchor = None
        for e in sorted(rows, key=lambda e: (e.timestamp, e.entry_id)):
            if e.pre_state is None or e.price_inputs is None:
                continue
            value = wallet_value(e.pre_state, e.price_inputs)
            if value is not None:
                anchor = value
                break
        return LedgerQuantStats(
            total=len(rows),
            with_tx_hash=sum(1 for e in rows if e.tx_hash),
            with_cycle_id=sum(1 for e in rows if e.cycle_id),
            with_price_inputs=sum(1 for e in rows if e.price_inputs is not None),
            with_pre_post_state=sum(
                1 for e in rows if e.pre_state is not None and e.post_state is not None
            ),
            with_positive_gas_usd=sum(1 for e in rows if gas(e) > 0),
            gas_usd_sum=exact_sum(gas(e) for e in rows),
            first_action_wallet_value_usd=anchor,
        )


def exact_sum(values: Any) -> Decimal:
    """Sums as the store keeps them: exact, not rounded to the default 28 digits."""
    with localcontext() as ctx:
        ctx.prec = 1000
        return sum(values, Decimal(0))


def wallet_value(pre: dict[str, Any], prices: dict[str, Any]) -> Decimal | None:
    balances = pre.get("wallet_balances")
    if not isinstance(balances, dict):
        return None
    total = Decimal(0)
    for token, balance in balances.items():
        quote = prices.get(token)
        if not balance or not isinstance(quote, dict):
            continue
        with localcontext() as ctx:
            ctx.prec = 1000
            total += Decimal(balance) * Decimal(quote["price_usd"])
    return total if total > 0 else None


# -- the property ----------------------------------------------------------------------

TABLES = ("rm_state", "rm_ledger", "rm_ledger_stats")
_counter = itertools.count()


async def dump(store: eventstore.EventStore) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(tuple(r) for r in await store.query(f"SELECT * FROM {t}")) for t in TABLES}


@pytest.fixture
def run_history(store_url: str) -> Callable[[list[tuple[str, DomainEvent]]], Any]:
    async def run(history: list[tuple[str, DomainEvent]]) -> None:
        # each example gets its own deployments, so examples never see each other
        suffix = f"-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        async with eventstore.connect(store_url) as store:
            engine = ProjectionEngine(store, [StateProjection, LedgerProjection])
            await engine.start()
            reference = Reference()
            for stream, event in history:
                event = rename(event, suffix)
                await engine.append(deployment_of(event), stream, [event])
                reference.apply(event)
            inline = await dump(store)
            await engine.rebuild(batch_size=4)
            assert await dump(store) == inline, "a rebuild changed the rows"
            state: Any = engine.live("state")
            ledger: Any = engine.live("ledger")
            for dep in (d + suffix for d in DEPLOYMENTS):
                current = await state.get(store, dep)
                expected = reference.states.get(dep)
                if expected is None:
                    assert current is None
                else:
                    assert (current.version, current.state, current.checksum) == expected[:3]
                    assert current.updated_at == expected[3]
                    assert current.created_at == reference.first_created[dep]
                assert await ledger.quant_stats(store, dep) == reference.quant_stats(dep)
                entries = await ledger.entries(store, dep, limit=1000)
                want = sorted(
                    (e for (d, _), e in reference.entries.items() if d == dep),
                    key=lambda e: (e.timestamp, e.entry_id),
                    reverse=True,
                )
                assert entries == want

    return run


def deployment_of(event: DomainEvent) -> str:
    if isinstance(event, LedgerEntryRecorded):
        return event.entry.deployment_id
    return event.deployment_id  # type: ignore[attr-defined, no-any-return]


def rename(event: DomainEvent, suffix: str) -> DomainEvent:
    import msgspec

    if isinstance(event, LedgerEntryRecorded):
        entry = msgspec.structs.replace(
            event.entry, deployment_id=event.entry.deployment_id + suffix
        )
        return msgspec.structs.replace(event, entry=entry)
    return msgspec.structs.replace(event, deployment_id=event.deployment_id + suffix)  # type: ignore[attr-defined]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
async def test_inline_rebuild_and_reference_agree(
    run_history: Callable[[list[tuple[str, DomainEvent]]], Any],
    history: list[tuple[str, DomainEvent]],
) -> None:
    await run_history(history)

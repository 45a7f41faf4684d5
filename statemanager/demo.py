"""``chronicle demo``: a simulated runner, through the public ``StateManager`` API only.

A toy LP strategy on one deployment: each cycle saves its state with CAS, keeps
a CLOB order working (partial fills), records ledger entries, opens and closes
LP positions with registry rows, and snapshots its NAV. Then it prints what an
operator would look at, and verifies the audit chain of everything it wrote.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import eventstore

from .config import StateManagerConfig
from .errors import StateNotFoundError
from .manager import StateManager
from .progress import Progress
from .records import (
    ClobFill,
    ClobOrderState,
    ClobOrderStatus,
    LedgerEntry,
    PortfolioMetrics,
    PortfolioSnapshot,
    PositionEvent,
    RegistryRow,
)
from .types import StateData

CHAIN = "arbitrum"
POOL = "0xc6962004f452be9203591991d15f6b388e09e8d0"
NFT_MANAGER = "0xc36442b4a4522e871399cd717abdd847ab11fe88"


@dataclass
class DemoSummary:
    deployment_id: str
    cycles: int
    seconds: float
    state: StateData
    open_rows: list[dict[str, Any]]
    nav: dict[str, Any]
    quant: dict[str, Any]
    order: dict[str, Any]
    events: int
    chain_ok: bool
    chain_reason: str | None


async def run_demo(
    url: str, *, cycles: int = 300, deployment_id: str | None = None, progress: bool = True
) -> DemoSummary:
    """Simulate ``cycles`` runner cycles on the store at ``url``; return what it holds."""
    dep = deployment_id or f"demo-lp:{uuid.uuid4().hex[:8]}"
    manager = StateManager(StateManagerConfig(database_url=url, load_state_on_startup=False))
    await manager.initialize()
    started = time.perf_counter()
    try:
        await _simulate(manager, dep, cycles, progress)
        summary = await _summarize(manager, dep, cycles, started)
    finally:
        await manager.close()
    async with eventstore.connect(url) as store:
        report = await store.verify(dep)
        summary.events = report.events_checked
        summary.chain_ok, summary.chain_reason = report.ok, report.reason
    return summary


async def _simulate(manager: StateManager, dep: str, cycles: int, show: bool) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    cash = Decimal("10000.00")
    price = Decimal("3012.50")
    position: str | None = None
    token_id = 5_642_000
    bar = Progress("simulating runner", total=cycles) if show else None
    order = ClobOrderState(
        deployment_id=dep,
        order_id="ord-1",
        market_id="ETH-USDC",
        token_id="weth",
        side="BUY",
        status=ClobOrderStatus.LIVE,
        price=Decimal("3000.00"),
        size=Decimal("2.0"),
    )
    await manager.save_clob_order(order)
    fills: list[ClobFill] = []
    try:
        state = await manager.load_state(dep)
    except StateNotFoundError:
        state = await manager.save_state(StateData(deployment_id=dep, version=1, state={}))
    for cycle in range(1, cycles + 1):
        now = t0 + timedelta(minutes=5 * cycle)
        cycle_id = f"cycle-{cycle:04d}"
        price += Decimal((cycle * 7919) % 41 - 20) / Decimal(4)
        gas = Decimal("0.0131") + Decimal(cycle % 5) / Decimal(1000)
        if cycle % 25 == 1 and position is None:  # open an LP position
            token_id += 1
            position = f"lp-{token_id}"
            await _lp_step(manager, dep, "open", position, token_id, now, cycle_id, price, gas)
            cash -= Decimal("2500.00")
        elif position is not None and cycle % 25 == 20 and cycle + 25 <= cycles:  # close it
            await _lp_step(manager, dep, "close", position, token_id, now, cycle_id, price, gas)
            cash += Decimal("2500.00") + Decimal(cycle % 9)
            position = None
        else:
            await manager.save_ledger_entry(
                LedgerEntry(
                    entry_id=f"{dep}:swap:{cycle}",
                    deployment_id=dep,
                    cycle_id=cycle_id,
                    execution_mode="paper",
                    timestamp=now,
                    intent_type="SWAP",
                    token_in="USDC",
                    amount_in=Decimal("25.00"),
                    token_out="WETH",
                    amount_out=(Decimal("25.00") / price).quantize(Decimal("1E-18")),
                    effective_price=price,
                    gas_used=142_311,
                    gas_usd=gas,
                    tx_hash="0x" + hashlib.sha256(f"{dep}{cycle}".encode()).hexdigest(),
                    chain=CHAIN,
                    protocol="uniswap_v3",
                    price_inputs={"WETH": {"price_usd": str(price)}, "USDC": {"price_usd": "1"}},
                    pre_state={"wallet_balances": {"USDC": str(cash), "WETH": "0.5"}},
                    post_state={"wallet_balances": {"USDC": str(cash - 25), "WETH": "0.5"}},
                )
            )
            cash -= gas
        if cycle % 40 == 10 and len(fills) < 4:  # the working order fills in parts
            fills.append(
                ClobFill(
                    fill_id=f"fill-{len(fills) + 1}",
                    price=Decimal("3000.00"),
                    size=Decimal("0.5"),
                    fee=Decimal("0.15"),
                    timestamp=now,
                )
            )
            filled = sum((f.size for f in fills), Decimal(0))
            status = (
                ClobOrderStatus.MATCHED
                if filled >= order.size
                else (ClobOrderStatus.PARTIALLY_FILLED)
            )
            await manager.update_clob_order_status(
                order.order_id,
                status,
                fills=list(fills),
                filled_size=str(filled),
                average_fill_price="3000.00",
                deployment_id=dep,
            )
        in_position = Decimal("2500.00") if position else Decimal(0)
        nav = cash + in_position + Decimal("0.5") * price
        state.state = {
            "cycle": cycle,
            "open_position": position,
            "cash_usd": str(cash),
            "last_price": str(price),
        }
        state = await manager.save_state(state, expected_version=state.version)
        await manager.save_portfolio_snapshot(
            PortfolioSnapshot(
                deployment_id=dep,
                timestamp=now,
                total_value_usd=nav,
                available_cash_usd=cash,
                deployed_capital_usd=in_position,
                iteration_number=cycle,
                cycle_id=cycle_id,
                execution_mode="paper",
                chain=CHAIN,
            )
        )
        if cycle == 1 or cycle % 50 == 0:
            await manager.save_portfolio_metrics(
                PortfolioMetrics(
                    deployment_id=dep,
                    initial_value_usd=Decimal("10000.00"),
                    timestamp=now,
                    gas_spent_usd=await manager.sum_ledger_gas_usd(dep),
                    cycle_id=cycle_id,
                    execution_mode="paper",
                )
            )
        if bar is not None:
            bar.update(cycle)
    if bar is not None:
        bar.close()


def _registry_row(
    dep: str, token_id: int, status: str, opened: str, closed: str | None
) -> RegistryRow:
    identity = f"{CHAIN}:{NFT_MANAGER}:{token_id}"
    return RegistryRow(
        deployment_id=dep,
        chain=CHAIN,
        primitive="lp",
        accounting_category="lp",
        physical_identity_hash="0x" + hashlib.sha256(identity.encode()).hexdigest(),
        semantic_grouping_key=f"{CHAIN}:{POOL}",
        grouping_policy_version="univ3_lp@v1",
        status=status,  # type: ignore[arg-type]
        payload={"token_id": str(token_id), "pool_address": POOL},
        opened_tx=opened,
        closed_tx=closed,
    )


async def _lp_step(
    manager: StateManager,
    dep: str,
    action: str,
    position: str,
    token_id: int,
    now: datetime,
    cycle_id: str,
    price: Decimal,
    gas: Decimal,
) -> None:
    """Open (``action="open"``) or close an LP position: ledger, registry, position event."""
    opened = "0x" + hashlib.sha256(f"open{position}".encode()).hexdigest()
    tx = "0x" + hashlib.sha256(f"{action}{position}".encode()).hexdigest()
    intent, status, kind = (
        ("LP_OPEN", "open", "OPEN") if action == "open" else ("LP_CLOSE", "closed", "CLOSE")
    )
    entry = _lp_entry(dep, f"{dep}:{action}:{position}", intent, now, cycle_id, tx, gas)
    closed = None if action == "open" else tx
    await manager.save_ledger_and_registry(
        ledger=entry, registry=_registry_row(dep, token_id, status, opened, closed)
    )
    await manager.save_position_event(
        PositionEvent(
            position_event_id=f"{position}:{action}",
            deployment_id=dep,
            cycle_id=cycle_id,
            position_id=position,
            position_type="LP",
            position_event_type=kind,
            timestamp=now,
            protocol="uniswap_v3",
            chain=CHAIN,
            value_usd=Decimal("2500.00"),
            tx_hash=tx,
            gas_usd=gas,
            ledger_entry_id=entry.entry_id,
            entry_price=price if action == "open" else None,
            mark_price=price if action != "open" else None,
        )
    )


def _lp_entry(
    dep: str, entry_id: str, intent: str, now: datetime, cycle_id: str, tx: str, gas: Decimal
) -> LedgerEntry:
    return LedgerEntry(
        entry_id=entry_id,
        deployment_id=dep,
        cycle_id=cycle_id,
        execution_mode="paper",
        timestamp=now,
        intent_type=intent,
        token_in="USDC",
        amount_in=Decimal("2500.00"),
        gas_used=351_002,
        gas_usd=gas,
        tx_hash=tx,
        chain=CHAIN,
        protocol="uniswap_v3",
    )


async def _summarize(manager: StateManager, dep: str, cycles: int, started: float) -> DemoSummary:
    state = await manager.load_state(dep)
    open_rows = await manager.get_position_registry_open_rows(dep)
    first = await manager.get_first_snapshot(dep)
    latest = await manager.get_latest_snapshot(dep)
    series, _ = await manager.get_nav_series(dep)
    values = [Decimal(row[1]) for row in series]
    peak = Decimal(0)
    drawdown = Decimal(0)
    for value in values:
        peak = max(peak, value)
        drawdown = max(drawdown, (peak - value) / peak if peak else Decimal(0))
    quant = await manager.get_ledger_quant_stats(dep)
    order = await manager.get_clob_order("ord-1", deployment_id=dep)
    return DemoSummary(
        deployment_id=dep,
        cycles=cycles,
        seconds=time.perf_counter() - started,
        state=state,
        open_rows=open_rows,
        nav={
            "snapshots": len(values),
            "first_usd": str(first.total_value_usd) if first else None,
            "latest_usd": str(latest.total_value_usd) if latest else None,
            "high_usd": str(max(values)) if values else None,
            "low_usd": str(min(values)) if values else None,
            "max_drawdown_pct": str((drawdown * 100).quantize(Decimal("0.01"))),
        },
        quant={
            "entries": quant.total,
            "with_tx_hash": quant.with_tx_hash,
            "with_price_inputs": quant.with_price_inputs,
            "gas_usd_sum": str(quant.gas_usd_sum),
            "first_action_wallet_value_usd": (
                None
                if quant.first_action_wallet_value_usd is None
                else str(quant.first_action_wallet_value_usd)
            ),
        },
        order={
            "status": str(order.status) if order else None,
            "filled": str(order.filled_size) if order else None,
            "fills": len(order.fills) if order else 0,
        },
        events=0,
        chain_ok=False,
        chain_reason=None,
    )

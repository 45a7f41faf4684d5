"""The domain event vocabulary: every event type round-trips exactly through the codec.

Plain synchronous tests, no database. Sample values come from the real legacy
SQLite files in ``/work/shared/fixtures/legacy-sqlite`` (see docs/legacy-schema.md).
"""

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from projections.events import (
    EVENT_TYPES,
    UPCASTERS,
    AccountingEventRecorded,
    ClobFill,
    ClobOrderDeleted,
    ClobOrderSaved,
    ClobOrderStatus,
    ClobOrderStatusUpdated,
    DomainEvent,
    EventCodecError,
    EventDecodeError,
    FloatAmountError,
    HandleMapping,
    LedgerAndRegistryCommitted,
    LedgerEntry,
    LedgerEntryRecorded,
    LegacyRowImported,
    LegacySource,
    MigrationBackfillMarkedComplete,
    MigrationStateUpdated,
    MigrationStateUpserted,
    MissingUpcaster,
    NaiveDatetimeError,
    PortfolioMetricsSaved,
    PortfolioSnapshotRecorded,
    PositionAttributionUpdated,
    PositionEventRecorded,
    RegistryRow,
    RegistryRowBackfilled,
    RegistryStatus,
    SnapshotRetentionApplied,
    StateDeleted,
    StateSaved,
    UnknownEventType,
    UnknownSchemaVersion,
    ValueConfidence,
    decode_event,
    encode_event,
)

UNISWAP_DIGEST = "e9417c3f295428e0f272bf15e7d6b51739ab55f6eaf35764cc7aa19319b3993d"
LOOPING_DIGEST = "e6a1e5fb65131e846643e5ec06995f9a8b9d41dfbcf3a19bc5208bf26e92806b"
LP_CURVE_DIGEST = "9b910c2bcb79245dea6a8b9bd1156609636b3c93ce32f42c5caa87f26fdd894f"

UNI_DEP = "deployment:b3816ff5ddb8"
PENDLE_DEP = "deployment:194e6b4e8771"


def ts(text: str) -> datetime:
    """Parse a legacy ISO-8601 timestamp (always written with +00:00)."""
    return datetime.fromisoformat(text)


# --- samples ----------------------------------------------------------------

# baseline_looping.sqlite, strategy_state (checksum verified in a test below).
LOOPING_STATE: dict[str, Any] = json.loads(
    '{"__framework_lp_position_tracker__": {}, "_phase": "supplied", '
    '"borrowed_token_amount": "0", "consecutive_errors": 3, "initial_balance_token": "50", '
    '"initial_balance_usd": "49.9982000000000050", "last_iteration": {"duration_ms": 2.621, '
    '"intent_type": null, "status": "CIRCUIT_BREAKER_OPEN", '
    '"timestamp": "2026-05-03T04:46:20.857268+00:00"}, "last_swap_output": "0", '
    '"successful_iterations": 1, "supplied_token_amount": "4.000144005184186230689904318", '
    '"total_iterations": 5}'
)
LOOPING_CHECKSUM = "246591430d065761395cb5aaab2ff1cef0aad5ace029c708ffe5c038c990686a"

# baseline_lp.sqlite, transaction_ledger LP_OPEN: extracted_data carries a 160-bit int.
BIG_LIQUIDITY = 1115489085710619414828654646022418608911583149704

LP_OPEN_ENTRY = LedgerEntry(
    entry_id="7a137b6f-d96a-4e86-a5ed-944c8598b723",
    deployment_id="AccountingQuantLPStrategy:dd75f37a57d5",
    cycle_id="7ad14ac0-e138-438a-b456-10313c04e17a",
    execution_mode="live",
    timestamp=ts("2026-05-03T04:42:41+00:00"),
    intent_type="LP_OPEN",
    token_in="WETH",
    amount_in=Decimal("859443804580879"),
    token_out="USDC",
    amount_out=Decimal("2207157"),
    effective_price=None,
    slippage_bps=None,
    gas_used=526834,
    gas_usd=Decimal("1.22125734419277702943"),
    tx_hash="0xc5264b3b1fd327eb40b69b4d222619e73b1b51787cc95d5dcbd460d986bd27ca",
    chain="arbitrum",
    protocol="uniswap_v3",
    success=True,
    error="",
    extracted_data={
        "position_id": 5464864,
        "tick_lower": -199960,
        "tick_upper": -197950,
        "liquidity": BIG_LIQUIDITY,
        "lp_open_data": {
            "position_id": 5464864,
            "liquidity": "890126908748",
            "amount0": "859443804580879",
            "amount1": "2207157",
            "current_tick": None,
            "pool_address": "0xc6962004f452be9203591991d15f6b388e09e8d0",
            "_type": "LPOpenData",
        },
    },
    price_inputs={
        "WETH": {
            "price_usd": "2303.45",
            "oracle_source": "unknown",
            "fetched_at": "2026-05-03T04:42:16.918979+00:00",
            "confidence": "HIGH",
        }
    },
    pre_state={
        "wallet_balances": {"WETH": "0.000868125116076968", "USDC": "47.999938"},
        "captured_at": "2026-05-03T04:42:17.063607+00:00",
        "source": "balance_provider",
    },
    post_state={
        "wallet_balances": {"WETH": "0.000008681311496089", "USDC": "45.792781"},
        "captured_at": "2026-05-03T04:42:41.714363+00:00",
        "source": "balance_provider",
        "incident": False,
    },
)

# uniswap_lp_collect_capital_flow.sqlite, transaction_ledger SWAP (teardown leg).
SWAP_ENTRY = LedgerEntry(
    entry_id="9c1f3dff-c6cb-4b1e-8c81-5c0eb01b0e87",
    deployment_id=UNI_DEP,
    cycle_id="teardown-td_bd34c4e2986f",
    execution_mode="live",
    timestamp=ts("2026-08-11T18:58:21+00:00"),
    intent_type="SWAP",
    token_in="WETH",
    amount_in=Decimal("2.709244538563652194"),
    token_out="USDC",
    amount_out=Decimal("5043.316635"),
    effective_price=Decimal("1861.521381039229537942627854"),
    slippage_bps=Decimal(repr(0.0)),
    gas_used=175721,
    gas_usd=Decimal("0.32737349463"),
    tx_hash="0x2231c22e2c4c92f11d417ab21705ca7af1209fa39e81784559f6db605a85101b",
    chain="arbitrum",
    protocol="uniswap_v3",
    extracted_data={"swap_amounts": {"amount_in": "2709244538563652194", "_type": "SwapAmounts"}},
    price_inputs={"USDC": {"price_usd": "1.00", "confidence": "HIGH"}},
    pre_state={"wallet_balances": {"USDC": "5932.178245"}},
    post_state={"wallet_balances": {"USDC": "10975.49488"}, "reconciliation_block": 493513521},
)

UNI_LP_REGISTRY = RegistryRow(
    deployment_id=UNI_DEP,
    chain="arbitrum",
    primitive="lp",
    accounting_category="lp",
    physical_identity_hash="0xc87cc7defc208659430fe8ace829073ef7b131680a40a80c0e5e1c56b0b4972f",
    semantic_grouping_key="arbitrum:0xc6962004f452be9203591991d15f6b388e09e8d0",
    grouping_policy_version="univ3_lp@v1",
    status=RegistryStatus.CLOSED,
    payload={
        "amount0_close": "2709244538563652194",
        "amount0_open": "2709244538563652195",
        "amount1_close": "5635569331",
        "amount1_open": "5635569332",
        "fee_owed_0": None,
        "fee_owed_1": None,
        "liquidity": "2537772603976605",
        "nft_manager_addr": "0xc36442b4a4522e871399cd717abdd847ab11fe88",
        "pool_address": "0xc6962004f452be9203591991d15f6b388e09e8d0",
        "tick_lower": -202080,
        "tick_upper": -200080,
        "token_id": "5642789",
    },
    matching_policy_version=6,
    handle=None,
    opened_tx="0xd08f1f6ec468299540f1707e59c079490cd94f93d20919fd1473617624076b3a",
    closed_tx="0x86872c82bc9ee153b2e9a8a6df33173af37ca9b0096be7d98a824aeed81dd52d",
)

FILL = ClobFill(
    fill_id="fill-7f3a",
    price=Decimal("0.53"),
    size=Decimal("40"),
    fee=Decimal("0.000000000000000001"),
    timestamp=ts("2026-07-01T12:00:03.250000+00:00"),
    counterparty="0x54776446Aa29Fc49d152B4850bD410eA1E4d24bF",
)

SAMPLES: list[tuple[str, DomainEvent]] = [
    (
        "state-saved-import",
        StateSaved(
            deployment_id="AccountingQuantLoopingStrategy:d3735bdfa434",
            version=9,
            expected_version=None,
            state=LOOPING_STATE,
            state_schema_version=1,
            checksum=LOOPING_CHECKSUM,
            created_at=ts("2026-05-03T04:46:20.858042+00:00"),
            first_created_at=ts("2026-05-03T04:44:17.683231+00:00"),
            legacy=LegacySource(
                source_digest="8627d98d49daaa9fafe4bada79fca92ee1c0661cbc47e51006e7c13b3b35f0ef",
                table="strategy_state",
                primary_key={"strategy_id": "AccountingQuantLoopingStrategy:d3735bdfa434"},
            ),
        ),
    ),
    (
        "state-saved-cas",
        StateSaved(
            deployment_id=PENDLE_DEP,
            version=10,
            expected_version=9,
            state={"phase": "CLOSED", "total_value_usd": "0", "warmup_holds": 1},
            checksum="0" * 64,
            created_at=ts("2026-06-24T00:17:49.625479+00:00"),
        ),
    ),
    (
        "state-deleted",
        StateDeleted(
            deployment_id=PENDLE_DEP,
            last_version=9,
            deleted_at=ts("2026-06-24T00:20:00+00:00"),
        ),
    ),
    (
        "clob-order-saved",
        ClobOrderSaved(
            deployment_id="deployment:polymarket01",
            order_id="0x5e2c7d41a9b0c3e8f1d2a4b6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5",
            market_id="0x9c1f3dffc6cb4b1e8c815c0eb01b0e87aa11bb22cc33dd44ee55ff6677889900",
            token_id="71321045679252212594626385532706912750332728571942532289631379312455583992563",
            side="BUY",
            status=ClobOrderStatus.PARTIALLY_FILLED,
            price=Decimal("0.53"),
            size=Decimal("100"),
            filled_size=Decimal("40"),
            average_fill_price=Decimal("0.53"),
            fills=(FILL,),
            order_type="GTC",
            intent_id="e629a671-1959-4530-aca0-33689b5dfa3c",
            metadata={"neg_risk": False, "tick_size": "0.01"},
            submitted_at=ts("2026-07-01T12:00:00.101000+00:00"),
            updated_at=ts("2026-07-01T12:00:03.300000+00:00"),
        ),
    ),
    (
        "clob-order-status-updated",
        ClobOrderStatusUpdated(
            deployment_id="deployment:polymarket01",
            order_id="0x5e2c7d41a9b0c3e8f1d2a4b6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5",
            status=ClobOrderStatus.MATCHED,
            fills=(
                FILL,
                ClobFill(
                    fill_id="fill-7f3b",
                    price=Decimal("0.54"),
                    size=Decimal("60"),
                    fee=Decimal("0"),
                    timestamp=ts("2026-07-01T12:05:00+00:00"),
                ),
            ),
            filled_size=Decimal("100"),
            average_fill_price=Decimal("0.536"),
            updated_at=ts("2026-07-01T12:05:00.200000+00:00"),
        ),
    ),
    (
        "clob-order-status-updated-status-only",
        ClobOrderStatusUpdated(
            deployment_id="deployment:polymarket01",
            order_id="0xdeadbeef",
            status=ClobOrderStatus.FAILED,
            error="order rejected: not enough balance / allowance",
            updated_at=ts("2026-07-01T12:06:00+00:00"),
        ),
    ),
    (
        "clob-order-deleted",
        ClobOrderDeleted(
            deployment_id="deployment:polymarket01",
            order_id="0xdeadbeef",
            deleted_at=ts("2026-07-02T00:00:00+00:00"),
            reason="operator: stray test order",
        ),
    ),
    (
        "snapshot-envelope",
        PortfolioSnapshotRecorded(
            deployment_id=UNI_DEP,
            snapshot_id=2,
            cycle_id="7a0315c6-fc89-4b30-8094-c0aed23c97e0",
            execution_mode="live",
            timestamp=ts("2026-08-11T18:50:18+00:00"),
            iteration_number=1,
            total_value_usd=Decimal("4066.76957149683300253465425"),
            available_cash_usd=Decimal("192184.7555017576135043211966"),
            deployed_capital_usd=Decimal("4066.463949574413745972447407"),
            wallet_total_value_usd=Decimal("196251.5250732544465068558508"),
            value_confidence=ValueConfidence.HIGH,
            positions={
                "schema_version": 1,
                "positions": [
                    {
                        "position_type": "TOKEN",
                        "protocol": "wallet",
                        "chain": "arbitrum",
                        "value_usd": "4066.76957149683300253465425",
                        "label": "swap inventory WETH",
                        "tokens": ["WETH"],
                        "details": {"asset": "WETH", "quantity": "2.183013731567677597"},
                        "cost_basis_usd": "4066.463949574413745972447407",
                    }
                ],
                "metadata": {"capital_flows": {"cursors": {"arbitrum": 493513512}}},
                "reconciliation": {},
            },
            token_prices={
                "arbitrum:0x82af49447d8a07e3bd95bd0d56f35241523fbab1": {
                    "decimals": 18,
                    "price_usd": "1862.91525",
                    "symbol": "WETH",
                }
            },
            wallet_balances=[
                {
                    "symbol": "WETH",
                    "balance": "3.183862594327523223",
                    "value_usd": "5931.26618087730650685585075",
                    "address": "",
                    "price_usd": "1862.91525",
                }
            ],
            chain="arbitrum",
            created_at=ts("2026-08-11T18:50:18.343576+00:00"),
            legacy=LegacySource(
                source_digest=UNISWAP_DIGEST,
                table="portfolio_snapshots",
                primary_key={"id": 2},
            ),
        ),
    ),
    (
        "snapshot-legacy-bare-list",
        PortfolioSnapshotRecorded(
            deployment_id="AccountantBaseline:fixture",
            snapshot_id=1,
            cycle_id="cycle-loop-001",
            execution_mode="paper",
            timestamp=ts("2026-05-09T00:01:00+00:00"),
            iteration_number=1,
            total_value_usd=Decimal("1001"),
            available_cash_usd=Decimal("0"),
            deployed_capital_usd=Decimal("1000.0"),
            wallet_total_value_usd=Decimal("1001"),
            positions=[],
            chain="arbitrum",
            created_at=ts("2026-05-09T00:01:00+00:00"),
            legacy=LegacySource(
                source_digest=LOOPING_DIGEST,
                table="portfolio_snapshots",
                primary_key={"id": 1},
                unmapped_columns={"strategy_id": "AccountantBaseline:fixture"},
            ),
        ),
    ),
    (
        "snapshot-retention",
        SnapshotRetentionApplied(
            deployment_id=UNI_DEP,
            retention_days=7,
            cutoff=ts("2026-08-04T18:58:21.883365+00:00"),
        ),
    ),
    (
        "metrics-saved",
        PortfolioMetricsSaved(
            deployment_id=UNI_DEP,
            initial_value_usd=Decimal("196217.2064905396872260184428"),
            initial_timestamp=ts("2026-08-11T18:58:21+00:00"),
            deposits_usd=None,
            withdrawals_usd=None,
            gas_spent_usd=Decimal("2.36123591637"),
            total_value_usd=Decimal("5043.31663500"),
            positions=[
                {
                    "initial_value_usd": "196217.2064905396872260184428",
                    "record_type": "accounting_baseline_provenance",
                    "schema_version": 1,
                    "source": "snapshot_available_cash_usd",
                }
            ],
            cycle_id="fef75276-24e8-401d-be24-3d43cc7b8a72",
            execution_mode="live",
            is_complete=True,
            updated_at=ts("2026-08-11T18:58:21.885084+00:00"),
        ),
    ),
    ("ledger-entry-bigint", LedgerEntryRecorded(entry=LP_OPEN_ENTRY)),
    (
        "ledger-entry-failed",
        LedgerEntryRecorded(
            entry=LedgerEntry(
                entry_id="e2bcde3a-3a25-4f89-a1f9-b792ce9e63c2",
                deployment_id="AccountingQuantLoopingStrategy:d3735bdfa434",
                cycle_id="4f158e68-914e-4cbc-bb58-ba8bb47e9f6e",
                execution_mode="live",
                timestamp=ts("2026-05-03T04:44:59+00:00"),
                intent_type="BORROW",
                token_in="WETH",
                amount_in=Decimal("0.000869"),
                gas_used=0,
                gas_usd=Decimal("0"),
                chain="arbitrum",
                protocol="aave_v3",
                success=False,
                error="Simulation failed: ('0x6d305815', '0x6d305815')",
                price_inputs={"WETH": {"price_usd": "2301.989216985", "confidence": "HIGH"}},
            ),
            legacy=LegacySource(
                source_digest="8627d98d49daaa9fafe4bada79fca92ee1c0661cbc47e51006e7c13b3b35f0ef",
                table="transaction_ledger",
                primary_key={"id": "e2bcde3a-3a25-4f89-a1f9-b792ce9e63c2"},
                unmapped_columns={"strategy_id": "AccountingQuantLoopingStrategy:d3735bdfa434"},
            ),
        ),
    ),
    (
        "ledger-and-registry",
        LedgerAndRegistryCommitted(
            ledger=SWAP_ENTRY,
            registry=msgspec.structs.replace(
                UNI_LP_REGISTRY, status=RegistryStatus.OPEN, closed_tx=None, handle="leg_a"
            ),
            handle=HandleMapping(handle="leg_a", deployment_id=UNI_DEP, accounting_category="lp"),
        ),
    ),
    (
        "registry-backfilled",
        RegistryRowBackfilled(
            row=UNI_LP_REGISTRY,
            legacy=LegacySource(
                source_digest=UNISWAP_DIGEST,
                table="position_registry",
                primary_key={
                    "deployment_id": UNI_DEP,
                    "chain": "arbitrum",
                    "primitive": "lp",
                    "physical_identity_hash": UNI_LP_REGISTRY.physical_identity_hash,
                },
            ),
        ),
    ),
    (
        "migration-upserted",
        MigrationStateUpserted(
            deployment_id=PENDLE_DEP,
            primitive="swap",
            cutover_key="pendle",
            created_at=ts("2026-06-24T00:12:04.795556+00:00"),
        ),
    ),
    (
        "migration-updated",
        MigrationStateUpdated(
            deployment_id=PENDLE_DEP,
            primitive="swap",
            cutover_key="pendle",
            updated_at=ts("2026-06-24T00:12:04.797500+00:00"),
            backfill_started_at=ts("2026-06-24T00:12:04.797222+00:00"),
            backfill_source_table="position_events",
            backfill_reader_version=1,
            notes={},
        ),
    ),
    (
        "migration-complete",
        MigrationBackfillMarkedComplete(
            deployment_id=PENDLE_DEP,
            primitive="swap",
            cutover_key="pendle",
            completed_at=ts("2026-06-24T00:12:04.799193+00:00"),
            updated_at=ts("2026-06-24T00:12:04.799417+00:00"),
            rows_synthesized=0,
            rows_skipped_already_present=0,
        ),
    ),
    (
        "position-event-pendle-open",
        PositionEventRecorded(
            position_event_id="00c3ce1e-08b0-462c-99e6-d0684bad4aec",
            deployment_id=PENDLE_DEP,
            cycle_id="8746a48b-5360-4be9-896c-e822f88342b4",
            execution_mode="live",
            position_id="pendle_pt:arbitrum:0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266:pt-wsteth-25jun2026",
            position_type="PENDLE_PT",
            position_event_type="OPEN",
            timestamp=ts("2026-06-24T00:13:27+00:00"),
            protocol="pendle",
            chain="arbitrum",
            token0="WSTETH",
            token1="PT-wstETH-25JUN2026",
            amount0=Decimal("0.009999527650963094"),
            amount1=Decimal("0.012377704392892707"),
            tx_hash="0xc9dec6eb1af16a6271f76cfe6a81a4602aabea0f2c67db15f010e51f297a972c",
            gas_usd=Decimal("0.60597219896"),
            ledger_entry_id="9cc23cdc-8ed7-419f-9983-ed86570e632b",
            attribution={
                "entry_state": {
                    "token0": "WSTETH",
                    "token1": "PT-wstETH-25JUN2026",
                    "amount0": "9.999527650963094E-21",
                    "amount1": "1.2377704392892707E-20",
                    "price0": "2065.1422549467247",
                    "price1": None,
                }
            },
            attribution_version=0,
        ),
    ),
    (
        "position-event-lending-nulls",
        PositionEventRecorded(
            position_event_id="pe-loop-00000000000000000000000000000003",
            deployment_id="AccountantBaseline:fixture",
            cycle_id="cycle-loop-001",
            execution_mode="paper",
            position_id="lending:arbitrum:aave_v3:wallet:WETH",
            position_type="LENDING_DEBT",
            position_event_type="INCREASE",
            timestamp=ts("2026-05-09T00:03:00+00:00"),
            protocol="aave_v3",
            chain="arbitrum",
            token0="WETH",
            amount0=Decimal("0.05"),
            value_usd=Decimal("0.05"),
            tx_hash="0xa3",
            gas_usd=Decimal("0.5"),
            ledger_entry_id="tl-loop-00000000000000000000000000000003",
            protocol_fees_usd=Decimal("0"),
            legacy=LegacySource(
                source_digest=LOOPING_DIGEST,
                table="position_events",
                primary_key={"id": "pe-loop-00000000000000000000000000000003"},
                null_columns=("leverage", "entry_price", "mark_price", "unrealized_pnl"),
            ),
        ),
    ),
    (
        "position-attribution",
        PositionAttributionUpdated(
            deployment_id=UNI_DEP,
            position_event_id="ded44bdf-da9b-47a0-92fc-7e6c808b932d",
            attribution={
                "version": 4,
                "position_type": "LP",
                "principal_deposited_usd": "10683.203470466018859287425",
                "principal_recovered_usd": "10685.695974441497417442790",
                "fee_pnl_usd": None,
                "net_pnl_usd": "0.867916053638558155365",
                "fee_adjusted": True,
            },
            attribution_version=4,
        ),
    ),
    (
        "accounting-event",
        AccountingEventRecorded(
            accounting_event_id="c6e96847-5985-5ee2-a1a9-f8ac62519c4c",
            deployment_id=UNI_DEP,
            cycle_id="c29f3454-7115-4879-af43-ffe6e73f91c0",
            execution_mode="live",
            timestamp=ts("2026-08-11T18:51:53+00:00"),
            chain="arbitrum",
            protocol="uniswap_v3",
            wallet_address="0x54776446Aa29Fc49d152B4850bD410eA1E4d24bF",
            accounting_event_type="LP_OPEN",
            position_key="lp:uniswap_v3:arbitrum:0x54776446aa29fc49d152b4850bd410ea1e4d24bf:weth/usdc/500",
            ledger_entry_id="ca0894c3-ddf5-4fb2-9878-5d00578b1363",
            tx_hash="0xd08f1f6ec468299540f1707e59c079490cd94f93d20919fd1473617624076b3a",
            confidence="HIGH",
            payload={
                "amount0": "2.709244538563652195",
                "amount1": "5635.569332",
                "cost_basis_usd": "10683.203470466018859287425",
                "current_tick": -201024,
                "event_type": "LP_OPEN",
                "in_range": True,
                "liquidity": 2537772603976605,
                "realized_pnl_usd": None,
            },
            payload_schema_version=1,
            position_reference={
                "accounting_category": "lp",
                "grouping_policy_version": "univ3_lp@v1",
                "matching_policy_version": 6,
                "physical_identity_hash": UNI_LP_REGISTRY.physical_identity_hash,
                "primitive": "lp",
                "registry_handle": None,
                "semantic_grouping_key": "arbitrum:0xc6962004f452be9203591991d15f6b388e09e8d0",
                "source": "registry",
            },
        ),
    ),
    (
        "legacy-row-teardown-request",
        LegacyRowImported(
            deployment_id="deployment:3e2129722c88",
            source_digest=LP_CURVE_DIGEST,
            source_name="lp_curve.sqlite",
            table="teardown_requests",
            primary_key={"deployment_id": "deployment:3e2129722c88"},
            row={
                "deployment_id": "deployment:3e2129722c88",
                "mode": "SOFT",
                "asset_policy": "target_token",
                "target_token": "USDC",
                "reason": None,
                "requested_at": "2026-06-25T19:45:59.022763+00:00",
                "status": "completed",
                "positions_total": 1,
                "result_json": '{"positions_closed": 1, "duration_s": 28.88237}',
                "owner_pid": 19108,
            },
        ),
    ),
    (
        "legacy-row-position-state-snapshot",
        LegacyRowImported(
            deployment_id="deployment:3e2129722c88",
            source_digest=LP_CURVE_DIGEST,
            source_name="lp_curve.sqlite",
            table="position_state_snapshots",
            primary_key={"id": 1},
            row={
                "id": 1,
                "snapshot_id": 1,
                "deployment_id": "deployment:3e2129722c88",
                "cycle_id": "0cef6f73-e9ab-42c8-9c7f-bc5d318c5e56",
                "captured_at": "2026-06-25T19:45:56.325284+00:00",
                "position_id": "curve_3pool_0x6c3F90f043a72FA612cbac8115EE7e52BDe6E490",
                "position_type": "LP",
                "in_range": None,
                "liquidity": "9622944479479046273",
                "value_confidence": "ESTIMATED",
                "schema_version": 1,
            },
        ),
    ),
    (
        "legacy-row-real-cell",
        LegacyRowImported(
            deployment_id="AccountantBaseline:fixture",
            source_digest=LOOPING_DIGEST,
            table="sqlite_sequence",
            primary_key={"rowid": 1},
            row={"name": "portfolio_snapshots", "seq": 6, "a_real_cell": 5.0},
        ),
    ),
]

SAMPLE_IDS = [name for name, _ in SAMPLES]
SAMPLE_EVENTS = [event for _, event in SAMPLES]


# --- round trips ------------------------------------------------------------


def test_every_event_type_has_a_sample() -> None:
    assert {type(event).event_type for event in SAMPLE_EVENTS} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=SAMPLE_IDS)
def test_round_trip(event: DomainEvent) -> None:
    event_type, schema_version, data = encode_event(event)
    assert event_type == type(event).event_type == type(event).__name__
    assert schema_version == type(event).schema_version == 1
    assert isinstance(data, bytes)

    decoded = decode_event(event_type, schema_version, data)

    assert type(decoded) is type(event)
    assert decoded == event
    # Deterministic: the same event always gives the same bytes, also after a trip.
    assert encode_event(event)[2] == data
    assert encode_event(decoded)[2] == data


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=SAMPLE_IDS)
def test_decimals_and_datetimes_keep_their_types(event: DomainEvent) -> None:
    decoded = decode_event(*encode_event(event))
    for name in type(event).__struct_fields__:
        original = getattr(event, name)
        restored = getattr(decoded, name)
        assert type(restored) is type(original), name
        if isinstance(original, Decimal):
            assert str(restored) == str(original), name
        if isinstance(original, datetime):
            assert restored.tzinfo is UTC, name


def test_state_checksum_rule_holds_for_the_legacy_row() -> None:
    digest = hashlib.sha256(json.dumps(LOOPING_STATE, sort_keys=True).encode()).hexdigest()
    assert digest == LOOPING_CHECKSUM


# --- Decimal exactness --------------------------------------------------------

EXACT_AMOUNTS = [
    "0.000000000000000001",
    "1234567890123456789012345678901234567890",
    "1234567890123456789012345678901234567890.000000000000000001",
    "-0.0000000000000000000000000000000000000001",
    "0E-24",
    "1.0",
    "1.2377704392892707E-20",
    "196217.2064905396872260184428",
]


@pytest.mark.parametrize("text", EXACT_AMOUNTS)
def test_decimal_amounts_survive_exactly(text: str) -> None:
    amount = Decimal(text)
    event = ClobOrderStatusUpdated(
        deployment_id="d",
        order_id="o",
        status=ClobOrderStatus.LIVE,
        filled_size=amount,
        average_fill_price=amount,
        fills=(msgspec.structs.replace(FILL, size=amount, fee=amount, price=amount),),
        updated_at=ts("2026-07-01T12:00:00+00:00"),
    )
    decoded = decode_event(*encode_event(event))
    assert isinstance(decoded, ClobOrderStatusUpdated)
    assert decoded.filled_size is not None and decoded.fills is not None
    for restored in (decoded.filled_size, decoded.average_fill_price, decoded.fills[0].fee):
        assert isinstance(restored, Decimal)
        assert str(restored) == str(amount)
        assert restored.as_tuple() == amount.as_tuple()


def test_decimal_travels_as_its_string() -> None:
    _, _, data = encode_event(SAMPLE_EVENTS[SAMPLE_IDS.index("metrics-saved")])
    raw = msgspec.msgpack.decode(data)
    assert raw["initial_value_usd"] == "196217.2064905396872260184428"
    assert raw["deposits_usd"] is None


def test_float_amounts_are_refused() -> None:
    with pytest.raises(FloatAmountError):
        ClobFill(
            fill_id="f",
            price=0.53,  # type: ignore[arg-type]
            size=Decimal("1"),
            fee=Decimal("0"),
            timestamp=ts("2026-07-01T12:00:00+00:00"),
        )


def test_int_amounts_become_decimals() -> None:
    fill = ClobFill(
        fill_id="f",
        price=Decimal("0.5"),
        size=40,  # type: ignore[arg-type]
        fee=Decimal("0"),
        timestamp=ts("2026-07-01T12:00:00+00:00"),
    )
    assert type(fill.size) is Decimal and fill.size == Decimal(40)


def test_integers_beyond_64_bits_in_json_blobs_survive() -> None:
    event = LedgerEntryRecorded(entry=LP_OPEN_ENTRY)
    decoded = decode_event(*encode_event(event))
    assert isinstance(decoded, LedgerEntryRecorded)
    assert decoded.entry.extracted_data is not None
    liquidity = decoded.entry.extracted_data["liquidity"]
    assert type(liquidity) is int and liquidity == BIG_LIQUIDITY
    negative = StateSaved(
        deployment_id="d",
        version=1,
        state={"nested": [{"v": -(2**70)}, 2**64 - 1, -(2**63)]},
        checksum="c",
        created_at=ts("2026-01-01T00:00:00+00:00"),
    )
    assert decode_event(*encode_event(negative)) == negative


# --- datetimes: naive refused, other zones normalized ----------------------------


def test_naive_datetimes_are_refused_on_construction() -> None:
    with pytest.raises(NaiveDatetimeError, match="naive"):
        StateDeleted(deployment_id="d", deleted_at=datetime(2026, 6, 24, 0, 20))
    with pytest.raises(NaiveDatetimeError):
        msgspec.structs.replace(FILL, timestamp=datetime(2026, 7, 1, 12, 0))


def test_naive_datetimes_are_refused_on_decode() -> None:
    payload = msgspec.msgpack.encode(
        {"deployment_id": "d", "last_version": None, "deleted_at": "2026-06-24T00:20:00"}
    )
    with pytest.raises(EventDecodeError, match="naive"):
        decode_event("StateDeleted", 1, payload)


def test_aware_datetimes_are_normalized_to_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    event = StateDeleted(
        deployment_id="d", deleted_at=datetime(2026, 6, 24, 2, 20, tzinfo=paris_summer)
    )
    assert event.deleted_at.tzinfo is UTC
    assert event.deleted_at == datetime(2026, 6, 24, 0, 20, tzinfo=UTC)
    decoded = decode_event(*encode_event(event))
    assert isinstance(decoded, StateDeleted)
    assert decoded.deleted_at.tzinfo is UTC


def test_iso_strings_with_offset_decode_as_utc() -> None:
    payload = msgspec.msgpack.encode(
        {"deployment_id": "d", "retention_days": 7, "cutoff": "2026-08-04T20:58:21+02:00"}
    )
    decoded = decode_event("SnapshotRetentionApplied", 1, payload)
    assert isinstance(decoded, SnapshotRetentionApplied)
    assert decoded.cutoff == datetime(2026, 8, 4, 18, 58, 21, tzinfo=UTC)
    assert decoded.cutoff.tzinfo is UTC


# --- unknown types, versions and bad bytes --------------------------------------


def test_unknown_event_type_raises_typed_error() -> None:
    _, _, data = encode_event(SAMPLE_EVENTS[0])
    with pytest.raises(UnknownEventType) as info:
        decode_event("StateTeleported", 1, data)
    assert info.value.event_type == "StateTeleported"
    assert isinstance(info.value, EventCodecError)
    assert isinstance(info.value, ValueError)


def test_encoding_an_unregistered_class_raises() -> None:
    class NotRegistered(DomainEvent, frozen=True, kw_only=True):
        event_type = "NotRegistered"
        note: str

    with pytest.raises(UnknownEventType):
        encode_event(NotRegistered(note="x"))


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unreadable_schema_versions_raise(version: int) -> None:
    _, _, data = encode_event(SAMPLE_EVENTS[0])
    with pytest.raises(UnknownSchemaVersion):
        decode_event("StateSaved", version, data)


def test_garbage_bytes_raise_decode_error() -> None:
    with pytest.raises(EventDecodeError):
        decode_event("StateSaved", 1, b"\xc1 not msgpack")
    with pytest.raises(EventDecodeError):
        decode_event("StateSaved", 1, msgspec.msgpack.encode({"deployment_id": 5}))


def test_upcasters_lift_old_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Version 1 of ClobOrderDeleted as it is stored today.
    v1 = ClobOrderDeleted(
        deployment_id="d", order_id="o", deleted_at=ts("2026-07-02T00:00:00+00:00"), reason="old"
    )
    _, _, data = encode_event(v1)

    # Pretend the current shape is version 3; v1 -> v2 renames the reason, v2 -> v3 tags it.
    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        payload["reason"] = "v2:" + payload.pop("reason")
        return payload

    def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "reason": payload["reason"] + "+v3"}

    monkeypatch.setattr(ClobOrderDeleted, "schema_version", 3)
    monkeypatch.setitem(UPCASTERS, ("ClobOrderDeleted", 1), v1_to_v2)
    with pytest.raises(MissingUpcaster):
        decode_event("ClobOrderDeleted", 1, data)
    monkeypatch.setitem(UPCASTERS, ("ClobOrderDeleted", 2), v2_to_v3)

    lifted = decode_event("ClobOrderDeleted", 1, data)
    assert isinstance(lifted, ClobOrderDeleted)
    assert lifted.reason == "v2:old+v3"
    assert lifted.deleted_at == v1.deleted_at
    assert encode_event(lifted)[1] == 3


# --- the vocabulary itself --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_event_types_are_named_and_documented(name: str) -> None:
    cls = EVENT_TYPES[name]
    assert cls.event_type == name == cls.__name__
    assert re.fullmatch(r"(?:[A-Z][a-z]+)+", name), name
    assert re.search(r"[a-z]ed(?:[A-Z]|$)", name), f"{name} is not past tense"
    assert issubclass(cls, DomainEvent)
    assert cls.__doc__ and len(cls.__doc__.split()) > 12
    assert cls.__struct_config__.frozen

"""The transaction ledger and its quant stats, kept as entries arrive.

Quant stats (counts, the exact gas sum, the first-action anchor) live in one row
per deployment, adjusted by each entry: reading them is one primary-key lookup
whatever the ledger's size. Re-recording an entry id replaces the entry, as the
legacy store's INSERT OR REPLACE did; the stats then take the old entry's
contribution back out before adding the new one, so they always describe the
entries as they stand.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import msgspec

from eventstore import EventStore, Placement, Statement

from ..events import DomainEvent, LedgerAndRegistryCommitted, LedgerEntry, LedgerEntryRecorded
from ..projection import Index, Projection, Table, dec, flag, from_json, to_json, ts, undec, unts


class LedgerQuantStats(msgspec.Struct, frozen=True):
    """Aggregates over every entry of a deployment, failed ones included."""

    total: int = 0
    with_tx_hash: int = 0
    with_cycle_id: int = 0
    with_price_inputs: int = 0
    with_pre_post_state: int = 0
    with_positive_gas_usd: int = 0
    gas_usd_sum: Decimal = Decimal("0")
    first_action_wallet_value_usd: Decimal | None = None


_ENTRY_COLUMNS = (
    "deployment_id, entry_id, cycle_id, execution_mode, ts, intent_type, token_in, amount_in, "
    "token_out, amount_out, effective_price, slippage_bps, gas_used, gas_usd, tx_hash, chain, "
    "protocol, success, error, extracted_data, price_inputs, pre_state, post_state"
)
_CONTRIBUTION_COLUMNS = "c_tx_hash, c_cycle_id, c_price_inputs, c_pre_post, c_gas_positive, c_gas"
_STATS_COLUMNS = (
    "total, with_tx_hash, with_cycle_id, with_price_inputs, with_pre_post_state, "
    "with_positive_gas_usd, gas_usd_sum, first_action_wallet_value_usd"
)


class LedgerProjection(Projection):
    name = "ledger"
    version = 1
    handles = (LedgerEntryRecorded, LedgerAndRegistryCommitted)
    tables = (
        Table(
            "ledger",
            """deployment_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            cycle_id TEXT NOT NULL,
            execution_mode TEXT NOT NULL,
            ts BIGINT NOT NULL,
            intent_type TEXT NOT NULL,
            token_in TEXT NOT NULL,
            amount_in TEXT,
            token_out TEXT NOT NULL,
            amount_out TEXT,
            effective_price TEXT,
            slippage_bps TEXT,
            gas_used BIGINT,
            gas_usd TEXT,
            tx_hash TEXT NOT NULL,
            chain TEXT NOT NULL,
            protocol TEXT NOT NULL,
            success BIGINT NOT NULL,
            error TEXT NOT NULL,
            extracted_data TEXT,
            price_inputs TEXT,
            pre_state TEXT,
            post_state TEXT,
            c_tx_hash BIGINT NOT NULL,
            c_cycle_id BIGINT NOT NULL,
            c_price_inputs BIGINT NOT NULL,
            c_pre_post BIGINT NOT NULL,
            c_gas_positive BIGINT NOT NULL,
            c_gas TEXT NOT NULL,
            anchor_value TEXT,
            PRIMARY KEY (deployment_id, entry_id)""",
            (
                Index("by_time", "INDEX {name} ON {table} (deployment_id, ts DESC, entry_id)"),
                Index("by_intent", "INDEX {name} ON {table} (deployment_id, intent_type, ts)"),
                Index(
                    "anchors",
                    "INDEX {name} ON {table} (deployment_id, ts, entry_id) "
                    "WHERE pre_state IS NOT NULL AND price_inputs IS NOT NULL",
                ),
            ),
        ),
        Table(
            "ledger_stats",
            """deployment_id TEXT PRIMARY KEY,
            total BIGINT NOT NULL,
            with_tx_hash BIGINT NOT NULL,
            with_cycle_id BIGINT NOT NULL,
            with_price_inputs BIGINT NOT NULL,
            with_pre_post_state BIGINT NOT NULL,
            with_positive_gas_usd BIGINT NOT NULL,
            gas_usd_sum TEXT NOT NULL,
            first_action_wallet_value_usd TEXT""",
        ),
    )

    def prepare(self) -> None:
        ledger, stats = self.t["ledger"], self.t["ledger_stats"]
        marks = ", ".join(f"${i}" for i in range(1, 31))
        updates = ", ".join(
            f"{column} = excluded.{column}"
            for column in (_ENTRY_COLUMNS + ", " + _CONTRIBUTION_COLUMNS + ", anchor_value")
            .replace(" ", "")
            .split(",")[2:]
        )
        self._upsert = (
            f"INSERT INTO {ledger} ({_ENTRY_COLUMNS}, {_CONTRIBUTION_COLUMNS}, anchor_value) "
            f"VALUES ({marks}) ON CONFLICT (deployment_id, entry_id) DO UPDATE SET {updates}"
        )
        # take a replaced entry's contribution back out (no-op for a new entry)
        self._retract = (
            f"UPDATE {stats} SET total = {stats}.total - 1, "
            f"with_tx_hash = {stats}.with_tx_hash - old.c_tx_hash, "
            f"with_cycle_id = {stats}.with_cycle_id - old.c_cycle_id, "
            f"with_price_inputs = {stats}.with_price_inputs - old.c_price_inputs, "
            f"with_pre_post_state = {stats}.with_pre_post_state - old.c_pre_post, "
            f"with_positive_gas_usd = {stats}.with_positive_gas_usd - old.c_gas_positive, "
            f"gas_usd_sum = chronicle_dec_sub({stats}.gas_usd_sum, old.c_gas) "
            f"FROM (SELECT {_CONTRIBUTION_COLUMNS} FROM {ledger} "
            "WHERE deployment_id = $1 AND entry_id = $2) AS old "
            f"WHERE {stats}.deployment_id = $1"
        )
        anchor = (
            f"(SELECT anchor_value FROM {ledger} WHERE deployment_id = $1 "
            "AND pre_state IS NOT NULL AND price_inputs IS NOT NULL "
            "AND anchor_value IS NOT NULL ORDER BY ts, entry_id LIMIT 1)"
        )
        self._add = (
            f"INSERT INTO {stats} (deployment_id, {_STATS_COLUMNS}) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {anchor}) "
            f"ON CONFLICT (deployment_id) DO UPDATE SET total = {stats}.total + excluded.total, "
            f"with_tx_hash = {stats}.with_tx_hash + excluded.with_tx_hash, "
            f"with_cycle_id = {stats}.with_cycle_id + excluded.with_cycle_id, "
            f"with_price_inputs = {stats}.with_price_inputs + excluded.with_price_inputs, "
            f"with_pre_post_state = {stats}.with_pre_post_state + excluded.with_pre_post_state, "
            f"with_positive_gas_usd = {stats}.with_positive_gas_usd "
            "+ excluded.with_positive_gas_usd, "
            f"gas_usd_sum = chronicle_dec_add({stats}.gas_usd_sum, excluded.gas_usd_sum), "
            "first_action_wallet_value_usd = excluded.first_action_wallet_value_usd"
        )
        self._select_stats = f"SELECT {_STATS_COLUMNS} FROM {stats} WHERE deployment_id = $1"
        self._select = f"SELECT {_ENTRY_COLUMNS} FROM {ledger}"
        self._gas_sum = (
            f"SELECT gas_usd FROM {ledger} WHERE deployment_id = $1 AND gas_usd IS NOT NULL"
        )

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        """One entry's row; the stats row only adds and subtracts, and the anchor
        is recomputed from the rows on every add, so entries commute."""
        if isinstance(event, LedgerEntryRecorded):
            return (event.entry.deployment_id, event.entry.entry_id)
        if isinstance(event, LedgerAndRegistryCommitted):
            return (event.ledger.deployment_id, event.ledger.entry_id)
        return None

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, LedgerEntryRecorded):
            entry = event.entry
        elif isinstance(event, LedgerAndRegistryCommitted):
            entry = event.ledger
        else:
            return
        c = _contribution(entry)
        yield Statement(self._retract, (entry.deployment_id, entry.entry_id))
        yield Statement(self._upsert, (*_entry_row(entry), *c, _anchor_value(entry)))
        yield Statement(self._add, (entry.deployment_id, 1, *c))

    def combine(self, statements: list[Statement]) -> list[Statement]:
        """One stats addition per deployment: its entries' contributions summed.

        The anchor is recomputed from the ledger rows by the last addition either
        way, so one addition after all of a batch's upserts leaves the same row.
        The gas sum is printed as ``chronicle_dec_add`` prints it.
        """
        merged: dict[str, list[Statement]] = {}
        out: list[Statement] = []
        for statement in statements:
            if statement.sql == self._add:
                merged.setdefault(statement.params[0], []).append(statement)
            else:
                out.append(statement)
        for deployment_id, adds in merged.items():
            if len(adds) == 1:
                out.extend(adds)
                continue
            counts = [sum(add.params[i] for add in adds) for i in range(1, 7)]
            gas = Decimal(0)
            for add in adds:
                gas = _EXACT.add(gas, Decimal(add.params[7]))
            out.append(Statement(self._add, (deployment_id, *counts, format(gas, "f"))))
        return out

    # -- queries ----------------------------------------------------------------------

    async def quant_stats(self, store: EventStore, deployment_id: str) -> LedgerQuantStats:
        rows = await store.query(self._select_stats, (deployment_id,))
        if not rows:
            return LedgerQuantStats()
        r = rows[0]
        return LedgerQuantStats(r[0], r[1], r[2], r[3], r[4], r[5], Decimal(r[6]), undec(r[7]))

    async def entries(
        self,
        store: EventStore,
        deployment_id: str,
        *,
        since: datetime | None = None,
        before: datetime | None = None,
        intent_type: str | None = None,
        limit: int = 100,
    ) -> list[LedgerEntry]:
        """Newest first (ties: higher entry id first); ``since`` exclusive, ``before`` strict."""
        sql = [f"{self._select} WHERE deployment_id = $1"]
        params: list[Any] = [deployment_id]
        if since is not None:
            params.append(ts(since))
            sql.append(f"AND ts > ${len(params)}")
        if before is not None:
            params.append(ts(before))
            sql.append(f"AND ts < ${len(params)}")
        if intent_type is not None:
            params.append(intent_type)
            sql.append(f"AND intent_type = ${len(params)}")
        params.append(max(limit, 0))
        sql.append(f"ORDER BY ts DESC, entry_id DESC LIMIT ${len(params)}")
        rows = await store.query(" ".join(sql), params)
        return [_entry(row) for row in rows]

    async def anchor_candidates(
        self, store: EventStore, deployment_id: str, limit: int = 64, offset: int = 0
    ) -> list[LedgerEntry]:
        """Oldest first (ties: lower id first): entries with both pre-state and price inputs."""
        if limit <= 0:
            return []
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 AND pre_state IS NOT NULL "
            "AND price_inputs IS NOT NULL ORDER BY ts, entry_id LIMIT $2 OFFSET $3",
            (deployment_id, limit, max(offset, 0)),
        )
        return [_entry(row) for row in rows]

    async def gas_usd_sum(self, store: EventStore, deployment_id: str) -> Decimal:
        rows = await store.query(
            f"SELECT gas_usd_sum FROM {self.t['ledger_stats']} WHERE deployment_id = $1",
            (deployment_id,),
        )
        return Decimal(rows[0][0]) if rows else Decimal("0")


_EXACT = Context(prec=1000)  # amounts are exact: never round to the default 28 digits


def _lenient(value: Decimal | None) -> Decimal:
    if value is None or not value.is_finite():
        return Decimal("0")
    return value


def _contribution(entry: LedgerEntry) -> tuple[int, int, int, int, int, str]:
    gas = _lenient(entry.gas_usd)
    return (
        int(bool(entry.tx_hash)),
        int(bool(entry.cycle_id)),
        int(entry.price_inputs is not None),
        int(entry.pre_state is not None and entry.post_state is not None),
        int(gas > 0),
        str(gas),
    )


def _anchor_value(entry: LedgerEntry) -> str | None:
    """The wallet's priced value before this action, when positive (the first-action anchor).

    Sum over the pre-state's wallet balances of balance x the price input's
    ``price_usd`` for that token; rows whose documents do not have that shape,
    or whose value is not positive, cannot anchor.
    """
    pre, prices = entry.pre_state, entry.price_inputs
    if not isinstance(pre, dict) or not isinstance(prices, dict):
        return None
    balances = pre.get("wallet_balances")
    if not isinstance(balances, dict):
        return None
    total = Decimal("0")
    for token, balance in balances.items():
        amount = _parse(balance)
        quote = prices.get(token)
        if amount == 0 or not isinstance(quote, dict):
            continue
        price = _parse(quote.get("price_usd"))
        if price == 0:
            continue
        total = _EXACT.add(total, _EXACT.multiply(amount, price))
    return str(total) if total > 0 else None


def _parse(value: Any) -> Decimal:
    if value is None or value == "" or isinstance(value, bool):
        return Decimal("0")
    try:
        parsed = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal("0")
    return parsed if parsed.is_finite() else Decimal("0")


def _entry_row(entry: LedgerEntry) -> tuple[Any, ...]:
    return (
        entry.deployment_id,
        entry.entry_id,
        entry.cycle_id,
        entry.execution_mode,
        ts(entry.timestamp),
        entry.intent_type,
        entry.token_in,
        dec(entry.amount_in),
        entry.token_out,
        dec(entry.amount_out),
        dec(entry.effective_price),
        dec(entry.slippage_bps),
        entry.gas_used,
        dec(entry.gas_usd),
        entry.tx_hash,
        entry.chain,
        entry.protocol,
        flag(entry.success),
        entry.error,
        _json_or_none(entry.extracted_data),
        _json_or_none(entry.price_inputs),
        _json_or_none(entry.pre_state),
        _json_or_none(entry.post_state),
    )


def _json_or_none(value: Any) -> str | None:
    return None if value is None else to_json(value)


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        deployment_id=row[0],
        entry_id=row[1],
        cycle_id=row[2],
        execution_mode=row[3],
        timestamp=unts(row[4]),  # type: ignore[arg-type]
        intent_type=row[5],
        token_in=row[6],
        amount_in=undec(row[7]),
        token_out=row[8],
        amount_out=undec(row[9]),
        effective_price=undec(row[10]),
        slippage_bps=undec(row[11]),
        gas_used=row[12],
        gas_usd=undec(row[13]),
        tx_hash=row[14],
        chain=row[15],
        protocol=row[16],
        success=bool(row[17]),
        error=row[18],
        extracted_data=from_json(row[19]),
        price_inputs=from_json(row[20]),
        pre_state=from_json(row[21]),
        post_state=from_json(row[22]),
    )

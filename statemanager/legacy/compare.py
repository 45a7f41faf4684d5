"""Judging a legacy cell against a read model's value, and what the source implies.

A read model keeps a canonical form of what it stores (times as instants, JSON
parsed, an absent decimal as ``None``), so each column is judged by meaning, with
the judge its kind calls for; decimal text is still compared as text. Aggregates
(the ledger's quant stats) are recomputed from the source rows with the
reference's definitions (docs/reference-semantics.md, 5.3 and 5.5), in exact
arithmetic as Chronicle keeps them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import msgspec

from projections.events import LegacyValue

from .source import Row

EXACT = Context(prec=1000)
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


def same_text(cell: LegacyValue, value: Any) -> bool:
    return bool(cell == value)


def same_decimal(cell: LegacyValue, value: Any) -> bool:
    if value is None:
        return cell is None or cell == ""
    return isinstance(cell, str) and str(value) == cell


def same_real(cell: LegacyValue, value: Any) -> bool:
    if value is None or cell is None:
        return value is None and cell is None
    return isinstance(cell, int | float) and float(value) == cell


def same_int(cell: LegacyValue, value: Any) -> bool:
    return bool(cell == value) and type(cell) is type(value)


def same_flag(cell: LegacyValue, value: Any) -> bool:
    return bool(cell == (None if value is None else int(value)))


def same_time(cell: LegacyValue, value: Any) -> bool:
    if isinstance(value, str):
        value = instant(value)
    return bool(instant(cell) == value)


def same_json(cell: LegacyValue, value: Any) -> bool:
    if isinstance(value, str):
        value = json.loads(value)
    return bool(parsed(cell) == value)


JUDGES: dict[str, Callable[[LegacyValue, Any], bool]] = {
    "text": same_text,
    "decimal": same_decimal,
    "real": same_real,
    "int": same_int,
    "flag": same_flag,
    "time": same_time,
    "json": same_json,
}


def instant(cell: Any) -> datetime | None:
    if not isinstance(cell, str):
        return None
    try:
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.utcoffset() is not None else None


def parsed(cell: LegacyValue) -> Any:
    if cell is None or cell == "":
        return None
    if not isinstance(cell, str):
        return cell
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def shown(value: Any) -> str:
    if isinstance(value, Decimal | datetime):
        return repr(str(value))
    if isinstance(value, msgspec.Struct):
        return repr(msgspec.to_builtins(value))
    return repr(value)


def key_text(key: Mapping[str, Any]) -> str:
    return ", ".join(f"{column}={value!r}" for column, value in key.items())


def lenient(value: Any) -> Decimal:
    if value is None or value == "" or isinstance(value, bool):
        return Decimal("0")
    try:
        parsed = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal("0")
    return parsed if parsed.is_finite() else Decimal("0")


def key_json(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def fills_meaning(fills: Any) -> Any:
    """Fills as comparable values: decimals as text, times as instants."""
    if not isinstance(fills, list):
        return fills if fills is not None else []
    out = []
    for fill in fills:
        if not isinstance(fill, dict):
            out.append(fill)
            continue
        meaning = {k: str(v) if isinstance(v, Decimal) else v for k, v in fill.items()}
        if "timestamp" in meaning:
            meaning["timestamp"] = instant(meaning["timestamp"]) or meaning["timestamp"]
        meaning.setdefault("counterparty", None)
        out.append(meaning)
    return out


def first_action_anchor(rows: Iterable[Row]) -> Decimal | None:
    """The first ledger row whose pre-state wallet has a positive priced value (5.5)."""

    def order(row: Row) -> tuple[int, datetime, str]:
        moment = instant(row.cells.get("timestamp"))
        return (0, BEGINNING, "") if moment is None else (1, moment, str(row.cells.get("id")))

    for row in sorted(rows, key=order):
        pre, prices = (
            parsed(row.cells.get("pre_state_json")),
            parsed(row.cells.get("price_inputs_json")),
        )
        if not isinstance(pre, dict) or not isinstance(prices, dict):
            continue
        balances = pre.get("wallet_balances")
        if not isinstance(balances, dict):
            continue
        total = Decimal("0")
        for token, balance in balances.items():
            amount, quote = lenient(balance), prices.get(token)
            if amount == 0 or not isinstance(quote, dict):
                continue
            price = lenient(quote.get("price_usd"))
            if price != 0:
                total = EXACT.add(total, EXACT.multiply(amount, price))
        if total > 0:
            return total
    return None


def expected_quant_stats(rows: Sequence[Row]) -> dict[str, Any]:
    """Quant stats recomputed from the source rows with the reference's definitions (5.3)."""

    def filled(row: Row, column: str) -> bool:
        return row.cells.get(column) not in (None, "")

    gas = [lenient(row.cells.get("gas_usd")) for row in rows]
    return {
        "total": len(rows),
        "with_tx_hash": sum(filled(r, "tx_hash") for r in rows),
        "with_cycle_id": sum(filled(r, "cycle_id") for r in rows),
        "with_price_inputs": sum(filled(r, "price_inputs_json") for r in rows),
        "with_pre_post_state": sum(
            filled(r, "pre_state_json") and filled(r, "post_state_json") for r in rows
        ),
        "with_positive_gas_usd": sum(g > 0 for g in gas),
        "gas_usd_sum": functools.reduce(EXACT.add, gas, Decimal("0")),
        "first_action_wallet_value_usd": first_action_anchor(rows),
    }

"""Exact decimal arithmetic on text, as SQL functions for SQLite.

Read models keep money as the exact text of a ``Decimal``. Sums kept in SQL
(a ledger's gas total) must stay exact, which SQLite's REAL arithmetic is not;
these functions give SQLite what PostgreSQL's ``numeric`` gives natively, and
print the result the way ``numeric::text`` does (plain notation, the larger
scale of the two operands), so both backends store the same text.
"""

from __future__ import annotations

from decimal import Context, Decimal

_EXACT = Context(prec=1000)


def _operand(text: str | None) -> Decimal:
    return Decimal(0) if text is None else Decimal(text)


def dec_add(a: str | None, b: str | None) -> str:
    return format(_EXACT.add(_operand(a), _operand(b)), "f")


def dec_sub(a: str | None, b: str | None) -> str:
    return format(_EXACT.subtract(_operand(a), _operand(b)), "f")

"""Read-model tables compared row for row, one deployment at a time, on any two stores.

Both sides are read in primary-key order, a page at a time, and merged: memory
stays flat whatever a deployment's size. Text keys are ordered by code point on
both backends (``COLLATE "C"`` on PostgreSQL, SQLite's default binary order),
which is also Python's order, so the merge sees one order on both sides.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from eventstore import EventStore
from projections.projection import Projection

PAGE = 5000

_PRIMARY_KEY = re.compile(r"^PRIMARY\s+KEY\s*\((?P<columns>[^)]*)\)$", re.IGNORECASE)
_CONSTRAINT_WORDS = ("PRIMARY", "UNIQUE", "CHECK", "CONSTRAINT", "FOREIGN")


@dataclass(frozen=True)
class Layout:
    """One read-model table as the comparison needs it, parsed from its definition."""

    projection: str
    table: str
    """The physical (live) table name."""
    columns: tuple[str, ...]
    deployment_column: str
    key: tuple[str, ...]
    """The primary key without the deployment column: what orders a deployment's rows."""
    text_key: tuple[bool, ...]

    def key_of(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[self.columns.index(column)] for column in self.key)


def layouts(projection: Projection) -> list[Layout]:
    """The tables of ``projection`` (an instance bound to its live tables).

    Table definitions are limited to TEXT and BIGINT columns and a primary key
    (``projections.projection.Table``); a table without a primary key is ordered
    by all of its columns.
    """
    out = []
    filters = projection.deployment_filter()
    for table in projection.tables:
        physical = table.physical(projection.shadow)
        columns: list[str] = []
        types: dict[str, str] = {}
        key: list[str] = []
        for part in _split_top_level(table.columns):
            match = _PRIMARY_KEY.match(part)
            if match:
                key = [c.strip() for c in match.group("columns").split(",")]
                continue
            words = part.split()
            if words[0].upper() in _CONSTRAINT_WORDS:
                continue
            columns.append(words[0])
            types[words[0]] = words[1].upper()
            if re.search(r"\bPRIMARY\s+KEY\b", part, re.IGNORECASE):
                key = [words[0]]
        deployment_column = filters[physical]
        ordering = [c for c in (key or columns) if c != deployment_column]
        out.append(
            Layout(
                projection=projection.name,
                table=physical,
                columns=tuple(columns),
                deployment_column=deployment_column,
                key=tuple(ordering),
                text_key=tuple(types[c] == "TEXT" for c in ordering),
            )
        )
    return out


def _split_top_level(definition: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in definition:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return [" ".join(part.split()) for part in parts]


class Difference(msgspec.Struct, frozen=True):
    """The first row of a table where the stored read model and the replay disagree.

    ``kind``: ``"differs"`` (same key, ``column`` has ``stored`` where the replay
    has ``replayed``), ``"missing"`` (the replay has the row, the store not),
    ``"extra"`` (the store has a row the replay does not produce).
    """

    deployment_id: str
    projection: str
    table: str
    key: dict[str, Any]
    kind: str
    column: str | None = None
    stored: Any = None
    replayed: Any = None


class TableComparison(msgspec.Struct, frozen=True):
    table: str
    rows_stored: int
    rows_replayed: int
    differing_rows: int
    first: Difference | None


async def compare_table(
    stored: EventStore, replayed: EventStore, layout: Layout, deployment_id: str
) -> TableComparison:
    """Merge the deployment's rows of ``layout.table`` from both stores, in key order."""
    left = _rows(stored, layout, deployment_id)
    right = _rows(replayed, layout, deployment_id)
    s, r = await anext(left, None), await anext(right, None)
    counts = {"stored": 0, "replayed": 0, "differing": 0}
    first: Difference | None = None

    def note(difference: Difference) -> None:
        nonlocal first
        counts["differing"] += 1
        if first is None:
            first = difference

    while s is not None or r is not None:
        if r is None or (s is not None and layout.key_of(s) < layout.key_of(r)):
            assert s is not None
            note(_difference(layout, deployment_id, s, "extra"))
            counts["stored"] += 1
            s = await anext(left, None)
        elif s is None or layout.key_of(r) < layout.key_of(s):
            note(_difference(layout, deployment_id, r, "missing"))
            counts["replayed"] += 1
            r = await anext(right, None)
        else:
            if s != r:
                column = next(i for i, (a, b) in enumerate(zip(s, r, strict=True)) if a != b)
                note(
                    _difference(
                        layout,
                        deployment_id,
                        s,
                        "differs",
                        column=layout.columns[column],
                        stored=s[column],
                        replayed=r[column],
                    )
                )
            counts["stored"] += 1
            counts["replayed"] += 1
            s, r = await anext(left, None), await anext(right, None)
    return TableComparison(
        layout.table, counts["stored"], counts["replayed"], counts["differing"], first
    )


def _difference(
    layout: Layout, deployment_id: str, row: Sequence[Any], kind: str, **values: Any
) -> Difference:
    key = {layout.deployment_column: deployment_id}
    key.update(zip(layout.key, layout.key_of(row), strict=True))
    return Difference(deployment_id, layout.projection, layout.table, key, kind, **values)


async def _rows(
    store: EventStore, layout: Layout, deployment_id: str
) -> AsyncIterator[tuple[Any, ...]]:
    """The deployment's rows in key order, fetched a page at a time (keyset paging)."""
    collate = ' COLLATE "C"' if store.backend == "postgresql" else ""
    order = [
        f"{column}{collate if text else ''}"
        for column, text in zip(layout.key, layout.text_key, strict=True)
    ]
    base = (
        f"SELECT {', '.join(layout.columns)} FROM {layout.table} "
        f"WHERE {layout.deployment_column} = $1"
    )
    if not order:  # at most one row per deployment
        for row in await store.query(base, (deployment_id,)):
            yield tuple(row)
        return
    tail = f" ORDER BY {', '.join(order)} LIMIT {PAGE}"
    marks = ", ".join(f"${i}" for i in range(2, len(order) + 2))
    after: tuple[Any, ...] | None = None
    while True:
        if after is None:
            rows = await store.query(base + tail, (deployment_id,))
        else:
            rows = await store.query(
                f"{base} AND ({', '.join(order)}) > ({marks}){tail}", (deployment_id, *after)
            )
        for row in rows:
            yield tuple(row)
        if len(rows) < PAGE:
            return
        after = layout.key_of(rows[-1])


async def deployments_with_rows(store: EventStore, layout: Layout) -> set[str]:
    """Every deployment that has a row in the table."""
    rows = await store.query(f"SELECT DISTINCT {layout.deployment_column} FROM {layout.table}")
    return {row[0] for row in rows}

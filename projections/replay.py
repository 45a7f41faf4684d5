"""Statements for many events at once, ordered so the driver can send them in bulk.

Applied one event at a time, a ledger entry's three statements alternate with
the next entry's, so each is its own call into the driver (and, on PostgreSQL,
its own round trip). A replay knows the whole batch in advance: events that
touch different rows commute, so their statements can be regrouped, all of one
SQL text together, and run as one ``executemany``.

A projection says which rows an event touches with :meth:`Projection.replay_key`.
Events of one key keep their order; the statements of each event keep theirs.
An event without a key is a barrier: nothing moves across it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from eventstore import Placement, Statement

from .events import DomainEvent
from .projection import Projection

Item = tuple[DomainEvent, Placement]


def replay_statements(projection: Projection, items: Sequence[Item]) -> list[Statement]:
    """The statements that apply ``items`` in order, regrouped by SQL where it is safe.

    Keyed events are placed in layers: an event goes one layer above the previous
    event of its key, so each layer holds at most one event per key. Layers run
    in order; inside a layer the events' first statements run together, then
    their second ones, and so on, each column sorted by SQL text. The effect is
    that of running the events one by one, because events of different keys
    change different rows (or add to shared counters, which commutes).
    """
    out: list[Statement] = []
    layers: list[list[list[Statement]]] = []
    depth: dict[Hashable, int] = {}
    for event, recorded in items:
        statements = list(projection.apply(event, recorded))
        if not statements:
            continue
        key = projection.replay_key(event)
        if key is None:  # a barrier: finish what came before, then this event alone
            _flush(layers, out)
            depth.clear()
            out.extend(statements)
            continue
        level = depth.get(key, 0)
        depth[key] = level + 1
        if level == len(layers):
            layers.append([])
        layers[level].append(statements)
    _flush(layers, out)
    return out


def _flush(layers: list[list[list[Statement]]], out: list[Statement]) -> None:
    for layer in layers:
        if len(layer) == 1:
            out.extend(layer[0])
            continue
        width = max(len(statements) for statements in layer)
        for column in range(width):
            cells = [s[column] for s in layer if column < len(s)]
            cells.sort(key=_sql)  # stable: one SQL text keeps event order
            out.extend(cells)
    layers.clear()


def _sql(statement: Statement) -> str:
    return statement.sql

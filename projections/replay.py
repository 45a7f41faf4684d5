"""Statements for many events at once, ordered so the driver can send them in bulk.

Applied one event at a time, a ledger entry's three statements alternate with
the next entry's, so each is its own call into the driver (and, on PostgreSQL,
its own round trip). A replay knows the whole batch in advance: events that
touch different rows commute, so their statements can be regrouped, all of one
SQL text together, and run as one ``executemany``.

A projection says which rows an event touches with :meth:`Projection.replay_key`.
Events of one key keep their order; the statements of each event keep theirs.
An event without a key is a barrier: nothing moves across it. A projection may
also fold a key's consecutive statements into one (the last of many saves of a
state row is the one that counts), so a replay writes fewer rows than it reads.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from eventstore import Placement, Statement

from .events import DomainEvent
from .projection import Projection

Item = tuple[DomainEvent, Placement]


def replay_statements(projection: Projection, items: Sequence[Item]) -> list[Statement]:
    """The statements that apply ``items`` in order, folded and regrouped where safe.

    Each key's statements queue up in order; a statement the projection can fold
    into the one before it (:meth:`Projection.fold`: a second save of a row, say)
    replaces it. The queues then run side by side: every key's first statement,
    sorted by SQL text, then every key's second one, and so on. The effect is that
    of running the events one by one, because events of different keys change
    different rows (or add to shared counters, which commutes).
    """
    out: list[Statement] = []
    queues: dict[Hashable, list[Statement]] = {}
    for event, recorded in items:
        statements = list(projection.apply(event, recorded))
        if not statements:
            continue
        key = projection.replay_key(event)
        if key is None:  # a barrier: finish what came before, then this event alone
            _flush(projection, queues, out)
            out.extend(statements)
            continue
        queue = queues.get(key)
        if queue is None:
            queues[key] = statements
            continue
        for statement in statements:
            folded = projection.fold(queue[-1], statement)
            if folded is None:
                queue.append(statement)
            else:
                queue[-1] = folded
    _flush(projection, queues, out)
    return out


def _flush(
    projection: Projection, queues: dict[Hashable, list[Statement]], out: list[Statement]
) -> None:
    if len(queues) == 1:
        out.extend(next(iter(queues.values())))
    elif queues:
        width = max(len(queue) for queue in queues.values())
        for column in range(width):
            cells = [queue[column] for queue in queues.values() if column < len(queue)]
            cells.sort(key=_sql)  # stable: one SQL text keeps event order
            out.extend(projection.combine(cells))
    queues.clear()


def _sql(statement: Statement) -> str:
    return statement.sql

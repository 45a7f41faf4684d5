"""What a read model is: tables, the events it handles, and how an event changes rows.

A projection turns one domain event into SQL statements (``$1`` placeholders,
the same text on SQLite and PostgreSQL) against its own tables. It never reads
in ``apply``: invariants live in the tables (unique and partial unique indexes,
guarded upserts), so the same statements serve the append transaction (inline),
the projector (async) and a rebuild into shadow tables, and give the same rows.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from eventstore import Placement, Statement
from eventstore.encoding import datetime_to_micros, micros_to_datetime

from .events import DomainEvent

TABLE_PREFIX = "rm_"
SHADOW_SUFFIX = "__shadow"


@dataclass(frozen=True)
class Index:
    """An index of a read-model table; ``{table}`` stands for the physical table name."""

    name: str
    definition: str  # e.g. "UNIQUE INDEX {name} ON {table} (a, b) WHERE c IS NULL"


@dataclass(frozen=True)
class Table:
    """A read-model table: logical name, column definitions, indexes.

    Column types are limited to TEXT and BIGINT so one definition serves both
    backends: money is exact ``Decimal`` text, times are UTC microseconds, JSON
    documents are text.
    """

    name: str
    columns: str
    indexes: tuple[Index, ...] = ()

    def physical(self, shadow: bool = False) -> str:
        return f"{TABLE_PREFIX}{self.name}{SHADOW_SUFFIX if shadow else ''}"

    def create(self, physical: str, generation: int) -> list[Statement]:
        statements = [Statement(f"CREATE TABLE IF NOT EXISTS {physical} ({self.columns})")]
        for index in self.indexes:
            name = f"{TABLE_PREFIX}{self.name}_{index.name}_g{generation}"
            definition = index.definition.format(name=name, table=physical)
            head, _, rest = definition.partition("INDEX ")
            statements.append(Statement(f"CREATE {head}INDEX IF NOT EXISTS {rest}"))
        return statements


class Projection(abc.ABC):
    """A read model built from the log.

    Subclasses declare ``name``, ``version`` (bump it whenever the tables or the
    meaning of ``apply`` change: the engine rebuilds a projection whose stored
    version differs), ``tables`` and ``handles``; then write ``apply``. An
    instance is bound to physical table names (live or shadow) so SQL text is
    built once, not per event.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]
    handles: ClassVar[tuple[type[DomainEvent], ...]]
    inline: ClassVar[bool] = True
    """Applied inside the append transaction (read-your-writes, invariants
    refused at once) unless the engine is told to run it asynchronously."""

    def __init__(self, shadow: bool = False) -> None:
        self.shadow = shadow
        self.t = {table.name: table.physical(shadow) for table in self.tables}
        self.prepare()

    def prepare(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Build SQL text from ``self.t``; called once per instance."""

    @abc.abstractmethod
    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        """The statements that bring this model's rows up to date with ``event``."""

    def replay_key(self, event: DomainEvent) -> Hashable | None:
        """The rows ``event`` changes, so a replay may regroup statements across events.

        Events with different keys must commute: they change different rows, or
        add to a shared counter. ``None`` (the default) makes the event a barrier
        that nothing is moved across; see :mod:`projections.replay`.
        """
        return None

    def fold(self, earlier: Statement, later: Statement) -> Statement | None:
        """One statement with the effect of ``earlier`` then ``later`` (both for the
        same replay key), or ``None`` to run both. Replays only."""
        return None

    def combine(self, statements: list[Statement]) -> list[Statement]:
        """Statements of different replay keys, sorted by SQL, merged where they only
        add to a shared row (a per-deployment counter): one addition instead of many.
        Returns them unchanged by default. Replays only."""
        return statements

    @classmethod
    def event_types(cls) -> tuple[str, ...]:
        return tuple(kind.event_type for kind in cls.handles)

    def deployment_filter(self) -> Mapping[str, str]:
        """Physical table -> its deployment column, for per-deployment rebuilds."""
        return {physical: "deployment_id" for physical in self.t.values()}


def marks(first: int, count: int) -> str:
    """``$first, ..., $(first + count - 1)``: the placeholders of an ``IN`` list."""
    return ", ".join(f"${i}" for i in range(first, first + count))


# -- column codecs shared by the read models ---------------------------------------


def dec(value: Decimal | None) -> str | None:
    """A Decimal as the exact text stored in a read model (``None`` stays ``None``)."""
    return None if value is None else str(value)


def undec(text: str | None) -> Decimal | None:
    return None if text is None or text == "" else Decimal(text)


def ts(moment: datetime | None) -> int | None:
    return None if moment is None else datetime_to_micros(moment)


def unts(micros: int | None) -> datetime | None:
    return None if micros is None else micros_to_datetime(micros)


_json_encoder = msgspec.json.Encoder(decimal_format="string")


def to_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def unflag(value: int | None) -> bool | None:
    return None if value is None else bool(value)


Rows = Sequence[Sequence[Any]]

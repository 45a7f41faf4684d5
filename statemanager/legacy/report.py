"""What an import and its check report: plain structs, printable and JSON-encodable."""

from __future__ import annotations

import msgspec


class TableCount(msgspec.Struct, frozen=True):
    """One legacy table: rows read, events they became, and what this run wrote.

    ``already_present`` counts events an earlier import of the same file had
    written (a re-import reports them here and writes nothing). No row is ever
    skipped: ``rows`` always equals the source table's row count.
    """

    table: str
    rows: int
    events: int
    written: int
    already_present: int


class ImportReport(msgspec.Struct, frozen=True):
    source: str
    source_digest: str
    generation: str
    deployments: tuple[str, ...]
    tables: tuple[TableCount, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def events(self) -> int:
        return sum(t.events for t in self.tables)

    @property
    def written(self) -> int:
        return sum(t.written for t in self.tables)

    @property
    def already_present(self) -> int:
        return sum(t.already_present for t in self.tables)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Difference(msgspec.Struct, frozen=True):
    """One way the store disagrees with the source file.

    ``source`` and ``store`` are the two values as text (``repr`` of what each
    side holds), so a difference reads the same in a terminal and in JSON.
    """

    area: str
    """The source table (or ``ledger_quant_stats``) the difference belongs to."""
    key: str
    """The row, e.g. ``id='tl-1'``, as the source table keys it."""
    column: str
    source: str
    store: str

    def __str__(self) -> str:
        return f"{self.area} {self.key}: {self.column}: source {self.source}, store {self.store}"


class CheckReport(msgspec.Struct, frozen=True):
    compared: dict[str, int]
    """Rows (or aggregates) compared, per area."""
    differences: tuple[Difference, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.differences

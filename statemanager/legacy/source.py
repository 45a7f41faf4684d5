"""Reading a legacy state database: refuse what is not one, then hold every row of every table.

The file is never written. Without a ``-wal``/``-journal`` sidecar it is opened
``immutable`` (a plain read-only open of a WAL file would leave ``-wal``/``-shm``
files next to it); with one, a copy of the file and its sidecar is opened in a
temporary directory, where SQLite replays the sidecar, so the rows read are the
committed state. The digest (SHA-256) is taken of the bytes the rows were read
from, which makes it the identity of exactly that content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from projections.events import LegacyValue

from .errors import LegacyInputError, LegacyRowError

SQLITE_HEADER = b"SQLite format 3\x00"
SIDECARS = ("-wal", "-journal")

CORE_TABLES = (
    "accounting_events",
    "portfolio_metrics",
    "portfolio_snapshots",
    "position_events",
    "transaction_ledger",
)
"""Tables every legacy state database has (the SDK creates them all at start-up)."""

IDENTITY_COLUMNS = ("deployment_id", "strategy_id")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "strategy_state": ("version", "state_data", "checksum", "created_at", "updated_at"),
    "transaction_ledger": ("id", "timestamp", "intent_type"),
    "portfolio_snapshots": (
        "id",
        "timestamp",
        "total_value_usd",
        "available_cash_usd",
        "positions_json",
        "created_at",
    ),
    "portfolio_metrics": ("initial_value_usd", "initial_timestamp", "updated_at"),
    "position_events": ("id", "position_id", "position_type", "event_type", "timestamp"),
    "accounting_events": (
        "id",
        "timestamp",
        "chain",
        "protocol",
        "wallet_address",
        "event_type",
        "position_key",
        "confidence",
        "payload_json",
    ),
    "position_registry": (
        "deployment_id",
        "chain",
        "primitive",
        "accounting_category",
        "physical_identity_hash",
        "semantic_grouping_key",
        "grouping_policy_version",
        "status",
    ),
    "migration_state": ("deployment_id", "primitive", "cutover_key", "created_at", "updated_at"),
    "clob_orders": (
        "order_id",
        "market_id",
        "token_id",
        "side",
        "status",
        "price",
        "size",
        "submitted_at",
        "updated_at",
    ),
}
"""The columns a typed table must have for its rows to become events."""

_NEEDS_IDENTITY = frozenset(REQUIRED_COLUMNS) - {"clob_orders"}


@dataclass(frozen=True)
class Row:
    rowid: int
    """SQLite's rowid (insertion order); a running number in a WITHOUT ROWID table."""
    cells: dict[str, LegacyValue]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    """The declared primary key, in key order; empty when the table has none."""
    rows: tuple[Row, ...]

    def key(self, row: Row) -> dict[str, LegacyValue]:
        """The row's identity: its primary-key cells, else ``{"rowid": n}``."""
        if not self.key_columns:
            return {"rowid": row.rowid}
        return {column: row.cells[column] for column in self.key_columns}


@dataclass(frozen=True)
class LegacyFile:
    path: Path
    digest: str
    """SHA-256 (hex) of the database's bytes, after replaying any sidecar."""
    generation: str
    """G1, G2 or G3 (docs/legacy-schema.md, section 1), inferred from the tables."""
    tables: dict[str, Table]
    """Every table of the file (SQLite's own ``sqlite_sequence`` included), by name."""

    @property
    def rows(self) -> int:
        return sum(len(t.rows) for t in self.tables.values())


def read_legacy(path: str | os.PathLike[str]) -> LegacyFile:
    """Validate and read a legacy state database; raises :class:`LegacyInputError`."""
    file = Path(path)
    _check_is_sqlite(file)
    present = [file.with_name(file.name + suffix) for suffix in SIDECARS]
    if any(p.exists() for p in present):
        with tempfile.TemporaryDirectory(prefix="chronicle-import-") as scratch:
            copy = Path(scratch) / file.name
            shutil.copyfile(file, copy)
            for sidecar in present:
                if sidecar.exists():
                    shutil.copyfile(sidecar, copy.with_name(sidecar.name))
            _replay_sidecars(copy)
            digest = _digest(copy)
            with _open(copy) as db:
                tables = _read_tables(file, db)
    else:
        before = _fingerprint(file)
        digest = _digest(file)
        with _open(file) as db:
            tables = _read_tables(file, db)
        if _fingerprint(file) != before:
            raise LegacyInputError(
                f"{file} changed while it was being read; stop the runner that writes it "
                "and import again"
            )
    return LegacyFile(file, digest, _generation(tables), tables)


def _check_is_sqlite(file: Path) -> None:
    if not file.exists():
        raise LegacyInputError(
            f"{file}: no such file; give the path of a legacy state database (a .sqlite file)"
        )
    if file.is_dir():
        raise LegacyInputError(
            f"{file} is a directory; give the path of a legacy state database (a .sqlite file)"
        )
    try:
        with file.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise LegacyInputError(
            f"{file} cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    if not header:
        raise LegacyInputError(f"{file} is empty, not a SQLite database")
    if header != SQLITE_HEADER:
        raise LegacyInputError(
            f"{file} is not a SQLite database (it does not start with the SQLite header); "
            "give the path of a legacy state database"
        )


def _fingerprint(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _digest(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _replay_sidecars(copy: Path) -> None:
    """Fold a copied ``-wal`` (or roll back a hot ``-journal``) into the copied file."""
    try:
        db = sqlite3.connect(copy)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls a hot journal back
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise LegacyInputError(f"{copy.name} cannot be read as a SQLite database ({exc})") from exc


@contextlib.contextmanager
def _open(file: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        yield db
    finally:
        db.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_tables(file: Path, db: sqlite3.Connection) -> dict[str, Table]:
    try:
        schema = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise LegacyInputError(
            f"{file} cannot be read as a SQLite database ({exc}); it is damaged or not SQLite"
        ) from exc
    names = {name for name, _ in schema}
    if "chronicle_events" in names:
        raise LegacyInputError(
            f"{file} is a Chronicle store, not a legacy state database; "
            "to use it, pass it as the store: --url sqlite:///" + str(file)
        )
    missing = [name for name in CORE_TABLES if name not in names]
    if missing:
        raise LegacyInputError(
            f"{file} is a SQLite database but not a legacy state database (it lacks the "
            f"{', '.join(missing)} table{'s' if len(missing) > 1 else ''}); give the path of one"
        )
    tables: dict[str, Table] = {}
    try:
        for name, sql in schema:
            tables[name] = _read_table(file, db, name, sql or "")
    except sqlite3.DatabaseError as exc:
        raise LegacyInputError(f"{file} cannot be read ({exc}); it may be damaged") from exc
    return tables


def _read_table(file: Path, db: sqlite3.Connection, name: str, sql: str) -> Table:
    info = db.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
    columns = tuple(str(row[1]) for row in info)
    keyed = sorted((int(row[5]), str(row[1])) for row in info if int(row[5]) > 0)
    key_columns = tuple(column for _, column in keyed)
    lacking = [c for c in REQUIRED_COLUMNS.get(name, ()) if c not in columns]
    if name in _NEEDS_IDENTITY and not any(c in columns for c in IDENTITY_COLUMNS):
        lacking.append("deployment_id (or strategy_id)")
    if lacking:
        raise LegacyInputError(
            f"{file} is not a legacy state database this importer knows: table {name} has "
            f"no {', '.join(lacking)} column; nothing was imported"
        )
    without_rowid = "WITHOUT ROWID" in " ".join(sql.upper().split())
    if without_rowid:
        order = ", ".join(_quote(c) for c in key_columns)
        cursor = db.execute(f"SELECT * FROM {_quote(name)} ORDER BY {order}")
        raw = [(index, tuple(values)) for index, values in enumerate(cursor, start=1)]
    else:
        cursor = db.execute(f"SELECT rowid, * FROM {_quote(name)} ORDER BY rowid")
        raw = [(int(values[0]), tuple(values[1:])) for values in cursor]
    rows = []
    for rowid, values in raw:
        cells = dict(zip(columns, values, strict=True))
        for column, value in cells.items():
            if isinstance(value, bytes):
                raise LegacyRowError(
                    f"{name} row {rowid}: column {column} holds a BLOB, which no legacy "
                    "writer stores; nothing was imported"
                )
        rows.append(Row(rowid, cells))
    table = Table(name, columns, key_columns, tuple(rows))
    for row in table.rows:
        key = table.key(row)
        if any(value is None for value in key.values()):
            raise LegacyRowError(
                f"{name} row {row.rowid}: its primary key {key} holds NULL; give the row a "
                "key (or delete it) in a copy of the file, then import the copy"
            )
    return table


def _generation(tables: dict[str, Table]) -> str:
    if "position_registry" in tables:
        return "G3"
    if "strategy_state" in tables:
        return "G1"
    return "G2"

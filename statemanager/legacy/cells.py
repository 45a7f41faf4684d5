"""Turning one legacy row's cells into event fields, without losing what a field cannot say.

A typed event field holds the parsed value (``Decimal``, aware ``datetime``,
parsed JSON, ``bool``). When that value would not give back the exact cell (SQL
NULL where the field can only say "absent", a decimal written as ``1e5``, a time
with a ``Z``, JSON with compact separators, text that does not parse), the cell
is noted: NULLs in ``LegacySource.null_columns``, every other exact cell in
``LegacySource.unmapped_columns`` next to the columns the event has no field for.
So the typed event carries the meaning, and its legacy record the bytes.

Rules, the same for every column:

* an empty text (``''``) in a Decimal or JSON field is "absent" (``None``);
* a value that does not fit the field becomes ``None`` when the field allows it,
  else the field's default; only a required field without a default refuses the
  file (:class:`LegacyRowError`), since inventing a number would be worse;
* a time without a timezone refuses the file: Chronicle stores UTC instants, and
  the file does not say which zone was meant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from projections.events import LegacySource, LegacyValue

from .errors import LegacyRowError

T = TypeVar("T")
V = TypeVar("V", int, bool)

_MISSING = object()


class RowReader:
    """Reads the cells of one row, recording NULLs and cells a field cannot reproduce."""

    def __init__(
        self,
        table: str,
        key: Mapping[str, LegacyValue],
        cells: Mapping[str, LegacyValue],
        deployment_id: str,
    ) -> None:
        self.table = table
        self.key = dict(key)
        self._cells = cells
        self._used: set[str] = set()
        self._nulls: list[str] = []
        self._exact: dict[str, LegacyValue] = {}
        self.deployment_id = deployment_id
        # the identity is the event's own field when it says the same thing; a
        # different raw value (G1's '' twin, an overridden id) stays in the record
        if cells.get("deployment_id", _MISSING) == deployment_id:
            self._used.add("deployment_id")

    # -- plumbing -----------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.table} row {self.key}"

    def _take(self, column: str) -> Any:
        self._used.add(column)
        return self._cells.get(column, _MISSING)

    def _null(self, column: str) -> None:
        self._nulls.append(column)

    def _keep(self, column: str, value: LegacyValue) -> None:
        self._exact[column] = value

    def refuse(self, column: str, why: str) -> LegacyRowError:
        return LegacyRowError(
            f"{self._where()}: column {column} {why}; nothing was imported "
            "(fix the row in a copy of the file, then import the copy)"
        )

    def legacy(self, digest: str) -> LegacySource:
        """The row's legacy record: key, NULL columns, and every cell not carried exactly."""
        unmapped: dict[str, LegacyValue] = {
            column: value for column, value in self._cells.items() if column not in self._used
        }
        unmapped.update(self._exact)
        return LegacySource(
            source_digest=digest,
            table=self.table,
            primary_key=self.key,
            null_columns=tuple(self._nulls),
            unmapped_columns=unmapped,
        )

    # -- text ---------------------------------------------------------------------------

    def text(self, column: str, default: str = "") -> str:
        """A text field that cannot be ``None``: NULL reads as ``default`` and is noted."""
        value = self._take(column)
        if value is _MISSING:
            return default
        if value is None:
            self._null(column)
            return default
        if isinstance(value, str):
            return value
        self._keep(column, value)
        return str(value)

    def optional_text(self, column: str) -> str | None:
        value = self._take(column)
        if value is _MISSING or value is None:
            return None
        if isinstance(value, str):
            return value
        self._keep(column, value)
        return str(value)

    # -- numbers ------------------------------------------------------------------------

    def decimal(self, column: str) -> Decimal | None:
        """Exact decimal text to ``Decimal``; ``''`` is absent (``None``), NULL is noted."""
        value = self._take(column)
        if value is _MISSING:
            return None
        if value is None:
            self._null(column)
            return None
        if isinstance(value, str):
            if value == "":
                return None
            try:
                parsed = Decimal(value)
            except InvalidOperation:
                self._keep(column, value)
                return None
            if str(parsed) != value:
                self._keep(column, value)
            return parsed
        if isinstance(value, bool | int):
            self._keep(column, value)
            return Decimal(int(value))
        if isinstance(value, float):
            # a REAL cell: repr gives the shortest text that converts back to the same float
            parsed = Decimal(repr(value))
            if not parsed.is_finite() or float(parsed) != value:
                self._keep(column, value)
                return None
            return parsed
        self._keep(column, value)
        return None

    def required_decimal(self, column: str, default: Decimal | None = None) -> Decimal:
        value = self._cells.get(column, _MISSING)
        parsed = self.decimal(column)
        if parsed is not None:
            return parsed
        if default is None:
            raise self.refuse(column, f"holds {value!r}, but the event needs a number")
        if value is not None and value is not _MISSING:
            self._keep(column, cast(LegacyValue, value))  # '' where the field cannot be absent
        return default

    def integer(self, column: str) -> int | None:
        value = self._take(column)
        if value is _MISSING or value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self._keep(column, value)
        try:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value)
        except ValueError:
            pass
        return None

    def integer_or(self, column: str, default: int) -> int:
        return self._or(column, self.integer, default)

    def flag(self, column: str) -> bool | None:
        """A 0/1 cell as ``bool`` (NULL: ``None``); anything else is kept exactly."""
        value = self._take(column)
        if value is _MISSING or value is None:
            return None
        if value in (0, 1) and isinstance(value, int):
            return bool(value)
        self._keep(column, value)
        if isinstance(value, int | float):
            return bool(value)
        return None

    def flag_or(self, column: str, default: bool) -> bool:
        return self._or(column, self.flag, default)

    def _or(self, column: str, parse: Callable[[str], V | None], default: V) -> V:
        """``parse(column)``, or ``default`` for a cell it cannot read (a SQL NULL is
        recorded in ``null_columns``, anything else was kept by ``parse``)."""
        value = self._cells.get(column, _MISSING)
        parsed = parse(column)
        if parsed is None:
            if value is None:
                self._null(column)
            return default
        return parsed

    # -- times ----------------------------------------------------------------------------

    def time(self, column: str) -> datetime | None:
        """ISO-8601 text with an offset to an aware UTC ``datetime``."""
        value = self._take(column)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str):
            self._keep(column, value)
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self._keep(column, value)
            return None
        if parsed.utcoffset() is None:
            raise self.refuse(
                column, f"holds {value!r}, a time without a timezone (UTC is not certain)"
            )
        moment = parsed.astimezone(UTC)
        if moment.isoformat() != value:
            self._keep(column, value)
        return moment

    def required_time(self, column: str) -> datetime:
        value = self._cells.get(column, _MISSING)
        moment = self.time(column)
        if moment is None:
            raise self.refuse(column, f"holds {value!r}, but the event needs a time")
        return moment

    # -- JSON ---------------------------------------------------------------------------

    def json(self, column: str, kind: type[T]) -> T | None:
        """A JSON document of the given kind (``dict`` or ``list``); ``''`` is absent."""
        value = self._take(column)
        if value is _MISSING:
            return None
        if value is None:
            self._null(column)
            return None
        if not isinstance(value, str):
            self._keep(column, value)
            return None
        if value == "":
            return None
        try:
            parsed = json.loads(value)
        except ValueError:
            self._keep(column, value)
            return None
        if not isinstance(parsed, kind):
            self._keep(column, value)
            return None
        if json.dumps(parsed) != value:
            self._keep(column, value)  # other separators or escaping: keep the exact bytes
        return parsed

    def json_or(self, column: str, kind: type[T], default: T) -> T:
        value = self._cells.get(column, _MISSING)
        parsed = self.json(column, kind)
        if parsed is None:
            if value is not None and value is not _MISSING:
                self._keep(column, cast(LegacyValue, value))
            return default
        return parsed

    def document(self, column: str) -> dict[str, Any] | list[Any]:
        """A required JSON object or array (``positions_json`` has had both shapes)."""
        value = self._cells.get(column, _MISSING)
        parsed = self.json(column, object)
        if isinstance(parsed, dict | list):
            return parsed
        raise self.refuse(column, f"holds {value!r}, not a JSON object or array")

    # -- enumerations and whole cells -----------------------------------------------------

    def choice(self, column: str, allowed: Mapping[str, T], default: T) -> T:
        """One of a fixed set of texts; anything else reads as ``default``, kept exactly."""
        value = self._take(column)
        if isinstance(value, str) and value in allowed:
            return allowed[value]
        if value is None:
            self._null(column)
        elif value is not _MISSING:
            self._keep(column, value)
        return default

    def required_choice(self, column: str, allowed: Mapping[str, T]) -> T:
        value = self._take(column)
        if isinstance(value, str) and value in allowed:
            return allowed[value]
        raise self.refuse(column, f"holds {value!r}; expected one of {', '.join(allowed)}")

    def note_null(self, column: str) -> None:
        """A NULL a field was given a value for (a completion needs a time): say so."""
        self._null(column)

    def keep(self, column: str) -> None:
        """Keep a cell exactly, for a column read but not carried by any event field."""
        value = self._take(column)
        if value is not _MISSING:
            self._keep(column, value)

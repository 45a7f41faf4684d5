"""``chronicle import``: a legacy table-based state database into the event log.

Three steps, each usable on its own (the benchmark times them apart):

    plan = prepare_import("state.sqlite")          # read, validate, map: no store yet
    report = await import_legacy(engine, plan)     # append through the projection engine
    check = await check_legacy(engine, plan)       # read models against the source tables

``prepare_import`` refuses bad input (:class:`LegacyInputError`) before any store is
opened; ``import_legacy`` refuses a deployment that holds someone else's events
(:class:`ImportConflict`) before writing anything, and writes nothing twice.
docs/legacy-schema.md maps every legacy column to the event field that carries it.
"""

from .check import check_legacy
from .errors import ImportConflict, LegacyImportError, LegacyInputError, LegacyRowError
from .importer import import_legacy
from .mapping import IMPORT_NAMESPACE, ImportPlan, event_id, prepare_import
from .report import CheckReport, Difference, ImportReport, TableCount
from .source import LegacyFile, read_legacy

__all__ = [
    "IMPORT_NAMESPACE",
    "CheckReport",
    "Difference",
    "ImportConflict",
    "ImportPlan",
    "ImportReport",
    "LegacyFile",
    "LegacyImportError",
    "LegacyInputError",
    "LegacyRowError",
    "TableCount",
    "check_legacy",
    "event_id",
    "import_legacy",
    "prepare_import",
    "read_legacy",
]

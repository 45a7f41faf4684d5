"""Why an import refuses to start, each with a message that says what to do instead.

Every refusal is raised before the first append (the file, every row and every
target stream are checked first), so a refused import leaves the store exactly
as it was.
"""

from __future__ import annotations


class LegacyImportError(Exception):
    """Base of every refusal of ``chronicle import``."""


class LegacyInputError(LegacyImportError):
    """The input is not a readable legacy state database (missing, not SQLite, wrong tables)."""


class LegacyRowError(LegacyInputError):
    """A row holds something no event can carry (a NULL key, a naive time, a BLOB, ...).

    Names the table, the row's key and the column, so the operator can look at it.
    """


class ImportConflict(LegacyImportError):
    """The target deployment already holds events that did not come from this file.

    Importing a second legacy file into a deployment that another file (or a live
    runner) already wrote would mix two histories; the import is refused before
    anything is written. Import into another store, or under another deployment
    id (``--deployment``).
    """

    def __init__(self, deployment_id: str, message: str) -> None:
        self.deployment_id = deployment_id
        super().__init__(message)

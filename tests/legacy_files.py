"""Where the real legacy state databases (``chronicle import``'s input) are found.

They live beside the repository, not in it (``../shared/fixtures/legacy-sqlite``,
as the workplace lays it out); ``$CHRONICLE_LEGACY_FIXTURES`` points elsewhere.
Tests that need them skip without them, except under ``CI=true``, where their
absence fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CHRONICLE_LEGACY_FIXTURES"
_BESIDE_CLONE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "legacy-sqlite"
_WORKPLACE = Path("/work/shared/fixtures/legacy-sqlite")

DIRECTORY = (
    Path(os.environ[ENV])
    if os.environ.get(ENV)
    else next((place for place in (_BESIDE_CLONE, _WORKPLACE) if place.is_dir()), _BESIDE_CLONE)
)
FILES = sorted(DIRECTORY.glob("*.sqlite"))

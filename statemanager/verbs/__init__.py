"""The verbs of the ``chronicle`` command, one module each.

Each module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (async or not). Exit codes are shared by every verb: 0 when
all is well, 1 when what the verb checks failed, 2 when its input is bad.
"""

from __future__ import annotations

from types import ModuleType

from . import demo, export, import_, rebuild, replay, stats, verify, writer_role

VERBS: tuple[ModuleType, ...] = (demo, rebuild, replay, verify, import_, export, stats, writer_role)

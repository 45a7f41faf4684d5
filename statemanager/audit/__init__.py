"""What the operator verbs ``replay``, ``verify``, ``export`` and ``stats`` do, as a library.

Each module has one job: :mod:`.source` opens a store that must already exist,
:mod:`.replay` rebuilds a deployment's read models from its log in a scratch
store, :mod:`.compare` compares read-model tables row for row, :mod:`.check`
verifies a live store (chains, then replay against the stored read models),
:mod:`.export` writes and verifies JSON Lines exports, :mod:`.stats` counts.
Nothing here writes to the store it inspects.
"""

from .source import AuditInputError

__all__ = ["AuditInputError"]

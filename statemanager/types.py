"""The value types the ``StateManager`` API hands to runners: tiers, state, metrics.

These are plain containers with the reference's exact serialisation
(docs/reference-semantics.md sections 2.1, 2.4 and 2.5), because runners persist
``to_dict()`` output, compare checksums written by the SDK, and feed metrics to
their own dashboards. Nothing here touches storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

__all__ = ["StateData", "StateTier", "TierMetrics", "compute_checksum"]


class StateTier(IntEnum):
    """Where a state was served from, ordered fastest first (HOT < WARM)."""

    HOT = 1
    """The in-process cache."""
    WARM = 2
    """The durable store (Chronicle's event log and its read models)."""


def compute_checksum(state: dict[str, Any]) -> str:
    """SHA-256 hex of ``json.dumps(state, sort_keys=True, default=str)`` in UTF-8.

    Exactly the reference's formula, so checksums written by the SDK verify here
    and ours verify there: default separators (``", "``, ``": "``), ASCII escapes
    for non-ASCII text, and objects JSON cannot encode (``Decimal``, ``datetime``)
    hashed as the JSON string of their ``str()``. For a JSON-native state this is
    the hash of the legacy ``strategy_state.state_data`` text itself
    (docs/legacy-schema.md section 3.1).
    """
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(init=False)
class StateData:
    """One version of a deployment's strategy state.

    The constructor takes the seed's keyword defaults (``StateData()`` is valid):
    ``state=None`` becomes ``{}`` and ``created_at=None`` becomes now (UTC), so the
    attributes themselves are never ``None``. An empty ``checksum`` is computed from
    ``state`` (in :meth:`__post_init__`); a given one is kept as is, so
    :meth:`verify_checksum` can tell a damaged or edited state from its record.

    ``created_at`` after a load or save is the deployment's *first* save time, as
    the reference returns it, not the time this version was written (the seed's
    "when this state version was created" is not what the SDK does).
    """

    deployment_id: str
    version: int
    """The CAS counter: a save with ``expected_version=v`` writes ``v + 1``."""
    state: dict[str, Any]
    schema_version: int
    """The state's schema version, for :mod:`statemanager.migrations`."""
    checksum: str
    created_at: datetime
    loaded_from: StateTier | None

    def __init__(
        self,
        deployment_id: str = "",
        version: int = 0,
        state: dict[str, Any] | None = None,
        schema_version: int = 1,
        checksum: str = "",
        created_at: datetime | None = None,
        loaded_from: StateTier | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.version = version
        self.state = {} if state is None else state
        self.schema_version = schema_version
        self.checksum = checksum
        self.created_at = datetime.now(UTC) if created_at is None else created_at
        self.loaded_from = loaded_from
        self.__post_init__()

    def __post_init__(self) -> None:
        """Fill in the checksum when none was given."""
        if not self.checksum:
            self.checksum = compute_checksum(self.state)

    def verify_checksum(self) -> bool:
        """Whether ``checksum`` still matches ``state`` (integrity check)."""
        return self.checksum == compute_checksum(self.state)

    def to_dict(self) -> dict[str, Any]:
        """The reference's dict: ISO ``created_at``, ``loaded_from`` as the tier name.

        ``state`` is the object itself, not a copy.
        """
        return {
            "deployment_id": self.deployment_id,
            "version": self.version,
            "state": self.state,
            "schema_version": self.schema_version,
            "checksum": self.checksum,
            "created_at": self.created_at.isoformat(),
            "loaded_from": self.loaded_from.name if self.loaded_from else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateData:
        """Rebuild from :meth:`to_dict` output.

        ``deployment_id``, ``version`` and ``state`` are required (``KeyError``);
        a dict from an SDK before the rename may carry ``strategy_id`` instead of
        ``deployment_id``. A missing ``schema_version`` is 1; a missing checksum is
        recomputed; a string ``created_at`` is parsed with ``fromisoformat`` and a
        missing one is now (UTC); ``loaded_from`` is looked up by tier name
        (``KeyError`` for an unknown one).
        """
        legacy = "deployment_id" not in data and "strategy_id" in data
        identity = data["strategy_id"] if legacy else data["deployment_id"]
        loaded_from = StateTier[data["loaded_from"]] if data.get("loaded_from") else None
        created_at = data.get("created_at")
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        return cls(
            deployment_id=identity,
            version=data["version"],
            state=data["state"],
            schema_version=data.get("schema_version", 1),
            checksum=data.get("checksum", ""),
            created_at=created_at,
            loaded_from=loaded_from,
        )


@dataclass
class TierMetrics:
    """One timed tier operation, as recorded by the manager and passed to
    ``StateManagerConfig.metrics_callback``.

    ``operation`` is ``load``, ``save`` or ``delete`` for state calls and the
    method name for everything else; a HOT miss is ``success=True`` with
    ``error="cache_miss"``.
    """

    tier: StateTier
    operation: str
    latency_ms: float
    success: bool
    error: str | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """For logs and metric sinks: the tier by name, the timestamp in ISO form."""
        return {
            "tier": self.tier.name,
            "operation": self.operation,
            "latency_ms": self.latency_ms,
            "success": self.success,
            "error": self.error,
            "timestamp": self.timestamp.isoformat(),
        }

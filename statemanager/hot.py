"""The HOT tier: an in-process LRU of the latest state per deployment.

An entry keeps the state as MessagePack bytes, not as the caller's dict, and
every load decodes a fresh dict from them (about a microsecond for a runner's
state): a caller may mutate what it loaded without corrupting the cache, and
the hot path needs no deep copy.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import msgspec

from eventstore.encoding import ext_hook, shield_big_ints
from projections.models.state import CurrentState

from .types import StateData, StateTier

_encoder = msgspec.msgpack.Encoder(decimal_format="string")
_decoder = msgspec.msgpack.Decoder(dict[str, Any], ext_hook=ext_hook)


class _Entry:
    __slots__ = (
        "checksum",
        "created_at",
        "current",
        "packed",
        "schema_version",
        "stored_at",
        "version",
    )

    def __init__(self, current: CurrentState, packed: bytes, stored_at: float) -> None:
        self.current = current  # for the next CAS: its stream version
        self.version = current.version
        self.schema_version = current.schema_version
        self.checksum = current.checksum
        self.created_at: datetime | None = current.created_at
        self.packed = packed
        self.stored_at = stored_at


class HotCache:
    """LRU bounded by ``max_size``; entries expire ``ttl_seconds`` after their set (0: never)."""

    def __init__(self, max_size: int = 1000, ttl_seconds: float = 0) -> None:
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, deployment_id: str) -> StateData | None:
        entry = self._live(deployment_id)
        if entry is None:
            return None
        return StateData(
            deployment_id,
            entry.version,
            _decoder.decode(entry.packed),
            entry.schema_version,
            entry.checksum,
            entry.created_at,
            StateTier.HOT,
        )

    def current(self, deployment_id: str) -> CurrentState | None:
        """The cached row behind the entry (what a CAS save needs), if fresh."""
        entry = self._live(deployment_id)
        return None if entry is None else entry.current

    def set(self, current: CurrentState) -> None:
        if self.max_size <= 0:
            return
        try:
            packed = _encoder.encode(current.state)
        except OverflowError:
            packed = _encoder.encode(shield_big_ints(current.state))
        key = current.deployment_id
        self._entries[key] = _Entry(current, packed, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def delete(self, deployment_id: str) -> bool:
        return self._entries.pop(deployment_id, None) is not None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get_stats(self) -> dict[str, Any]:
        return {
            "size": len(self._entries),
            "max_size": self.max_size,
            "ttl_seconds": self.ttl_seconds,
        }

    def _live(self, deployment_id: str) -> _Entry | None:
        entry = self._entries.get(deployment_id)
        if entry is None:
            return None
        if self.ttl_seconds > 0 and time.monotonic() - entry.stored_at > self.ttl_seconds:
            del self._entries[deployment_id]
            return None
        self._entries.move_to_end(deployment_id)
        return entry

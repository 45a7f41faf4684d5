"""Chain-aware position bookkeeping that a strategy keeps inside its state dict.

``PositionManager`` is an in-memory index ``chain -> position_id -> record``;
its :meth:`PositionManager.to_dict` output is what a strategy stores in
``StateData.state`` and :meth:`PositionManager.from_dict` restores it. It never
touches storage. Behaviour follows the reference (docs/reference-semantics.md
section 12): every chain is declared up front, and naming an undeclared chain
is a :class:`ChainNotFoundError` rather than a silent empty answer, so a typo in
a chain name cannot look like "no positions there".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from .errors import ChainNotFoundError

__all__ = ["PositionManager", "PositionRecord", "PositionType"]

logger = logging.getLogger(__name__)


class PositionType(StrEnum):
    """The kind of exposure a position is (each value equals its name)."""

    TOKEN = "TOKEN"
    LP = "LP"
    BORROW = "BORROW"
    SUPPLY = "SUPPLY"
    PERP = "PERP"
    VAULT = "VAULT"
    """Listed by the seed page; no stored SDK version has it, value inferred."""


def _parse_time(value: Any) -> Any:
    """ISO text -> ``datetime``; missing -> now (UTC); anything else as given."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if value is None:
        return datetime.now(UTC)
    return value


@dataclass
class PositionRecord:
    """One position on one chain: what it is, where, how much, and its USD value.

    ``amount`` and ``value_usd`` are ``Decimal`` and serialise as their exact
    ``str()``, never through ``float``, so values round-trip digit for digit.
    """

    position_id: str
    chain: str
    position_type: PositionType
    protocol: str | None
    token: str
    """The token symbol, or the pool identifier for an LP position."""
    amount: Decimal
    value_usd: Decimal
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the type's value, decimals as ``str``, times as ISO."""
        return {
            "position_id": self.position_id,
            "chain": self.chain,
            "position_type": self.position_type.value,
            "protocol": self.protocol,
            "token": self.token,
            "amount": str(self.amount),
            "value_usd": str(self.value_usd),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PositionRecord:
        """Inverse of :meth:`to_dict`.

        Missing required keys raise ``KeyError``, an unknown ``position_type``
        ``ValueError``, a non-numeric amount ``decimal.InvalidOperation``. Numbers
        go through ``Decimal(str(x))``; missing timestamps become now (UTC); a
        missing ``protocol`` is ``None`` and missing ``metadata`` is ``{}``.
        """
        return cls(
            position_id=data["position_id"],
            chain=data["chain"],
            position_type=PositionType(data["position_type"]),
            protocol=data.get("protocol"),
            token=data["token"],
            amount=Decimal(str(data["amount"])),
            value_usd=Decimal(str(data["value_usd"])),
            created_at=_parse_time(data.get("created_at")),
            updated_at=_parse_time(data.get("updated_at")),
            metadata=data.get("metadata", {}),
        )


class PositionManager:
    """Positions across the chains a strategy runs on, with per-chain queries.

    Iteration order is deterministic: chains in the configured order, positions
    in insertion order within a chain (replacing a position keeps its slot).
    """

    def __init__(
        self, chains: Iterable[str], initial_positions: Iterable[PositionRecord] | None = None
    ) -> None:
        self._chains = list(chains)
        self._positions: dict[str, dict[str, PositionRecord]] = {c: {} for c in self._chains}
        for position in initial_positions or ():
            self.add_position(position)

    def _chain(self, chain: str) -> dict[str, PositionRecord]:
        try:
            return self._positions[chain]
        except KeyError:
            raise ChainNotFoundError(chain, self._chains) from None

    @property
    def chains(self) -> list[str]:
        """The configured chains (a copy)."""
        return list(self._chains)

    @property
    def positions(self) -> list[PositionRecord]:
        """Every position, chain by chain in configured order."""
        return [p for by_id in self._positions.values() for p in by_id.values()]

    @property
    def total_value_usd(self) -> Decimal:
        """Exact ``Decimal`` sum of ``value_usd`` over all chains (0 when empty)."""
        return sum((p.value_usd for p in self.positions), Decimal("0"))

    def positions_on(self, chain: str) -> list[PositionRecord]:
        """The positions on ``chain``; :class:`ChainNotFoundError` if not configured."""
        return list(self._chain(chain).values())

    def total_value_on(self, chain: str) -> Decimal:
        """Sum of ``value_usd`` on ``chain``; :class:`ChainNotFoundError` if not configured."""
        return sum((p.value_usd for p in self._chain(chain).values()), Decimal("0"))

    def add_position(self, position: PositionRecord) -> None:
        """Add, or replace the one with the same ``(chain, position_id)`` in place.

        :class:`ChainNotFoundError` when ``position.chain`` is not configured.
        """
        self._chain(position.chain)[position.position_id] = position
        logger.debug(
            "Added position %s on %s: %s = $%s",
            position.position_id,
            position.chain,
            position.token,
            position.value_usd,
        )

    def remove_position(self, position_id: str, chain: str) -> bool:
        """Remove it; ``False`` when absent. :class:`ChainNotFoundError` for an unknown chain."""
        by_id = self._chain(chain)
        if position_id not in by_id:
            return False
        del by_id[position_id]
        logger.debug("Removed position %s from %s", position_id, chain)
        return True

    def get_position(self, position_id: str, chain: str) -> PositionRecord | None:
        """The record or ``None``. :class:`ChainNotFoundError` for an unknown chain."""
        return self._chain(chain).get(position_id)

    def find_position(self, position_id: str) -> PositionRecord | None:
        """The first record with this id, searching chains in configured order."""
        for by_id in self._positions.values():
            if position_id in by_id:
                return by_id[position_id]
        return None

    def positions_by_type(self, position_type: PositionType) -> list[PositionRecord]:
        """Every position of one type, across chains."""
        return [p for p in self.positions if p.position_type == position_type]

    def positions_by_protocol(self, protocol: str) -> list[PositionRecord]:
        """Every position held on one protocol, across chains."""
        return [p for p in self.positions if p.protocol == protocol]

    def clear(self, chain: str | None = None) -> None:
        """Drop the positions on ``chain``, or on every chain when ``None``.

        The chains stay configured. :class:`ChainNotFoundError` for an unknown chain.
        """
        if chain is not None:
            self._chain(chain).clear()
            return
        for by_id in self._positions.values():
            by_id.clear()

    def to_dict(self) -> dict[str, Any]:
        """``{"chains": [...], "positions": {chain: {position_id: record dict}}}``.

        Every configured chain appears under ``positions``, empty ones included.
        """
        return {
            "chains": list(self._chains),
            "positions": {
                chain: {pid: p.to_dict() for pid, p in by_id.items()}
                for chain, by_id in self._positions.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PositionManager:
        """Restore from :meth:`to_dict` output, leniently.

        Chains come from ``data["chains"]`` (none when absent). Positions listed
        under a chain that is not configured are dropped, and each record is
        filed under the chain key it was found under. A record that does not
        parse (missing key, unknown type, bad timestamp, non-numeric amount) is
        skipped with a warning, so one damaged entry does not make a strategy's
        whole state unloadable. (The reference only skips ``KeyError`` and
        ``ValueError``; a non-numeric amount is skipped here too.)
        """
        manager = cls(chains=data.get("chains", []))
        for chain, by_id in data.get("positions", {}).items():
            if chain not in manager._positions:
                continue
            for raw in by_id.values():
                try:
                    position = PositionRecord.from_dict(raw)
                except (KeyError, ValueError, InvalidOperation) as exc:
                    logger.warning("Failed to deserialize position: %s", exc)
                    continue
                manager._positions[chain][position.position_id] = position
        return manager

    def get_summary(self) -> dict[str, Any]:
        """Counts and USD values (as ``str``) in total and per configured chain."""
        return {
            "total_positions": len(self.positions),
            "total_value_usd": str(self.total_value_usd),
            "chains": {
                chain: {
                    "position_count": len(self._positions[chain]),
                    "value_usd": str(self.total_value_on(chain)),
                    "positions": list(self._positions[chain]),
                }
                for chain in self._chains
            },
        }

    def __repr__(self) -> str:
        return (
            f"PositionManager(chains={self._chains}, positions={len(self.positions)}, "
            f"total_value_usd={self.total_value_usd})"
        )

"""The position registry: one row per physical position, its status moving only forward.

The registry's invariants are what make a runner's position bookkeeping safe, so
they live in the table and are checked inside the append transaction: a second
open, handle-less position in one semantic group, or a handle used twice in one
accounting category, refuses the append and nothing (log, ledger, registry)
lands. :meth:`RegistryProjection.explain` turns that refusal into an error that
names the row in the way.

Side effects of the reference ``save_ledger_and_registry`` reproduced here, as
statements that never read: releasing the handle from terminal rows of other
physical positions (so a reopened logical slot can reuse it), the status-gated
upsert (``handle`` kept when set, close anchors coalesced, ``opened_*`` never
touched; an equal or lower priority leaves the whole row as it is), and filling
in a missing handle even when the upsert was a no-op. Left out, because the event
cannot say it: the ``registry_reconciliation`` mode (a registry write without a
ledger row); the writer-side validations (blank hashes and handles, a
``HandleMapping`` that contradicts the row) run before the append.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from eventstore import EventStore, InlineStepFailed, Placement, Statement

from ..errors import RegistryAutoCollisionError, RegistryHandleConflict
from ..events import (
    DomainEvent,
    LedgerAndRegistryCommitted,
    RegistryRow,
    RegistryRowBackfilled,
    RegistryStatus,
)
from ..projection import TABLE_PREFIX, Index, Projection, Table, from_json, to_json

_COLUMNS = (
    "deployment_id, chain, primitive, accounting_category, physical_identity_hash, "
    "semantic_grouping_key, grouping_policy_version, handle, status, payload, "
    "opened_at_block, opened_tx, closed_at_block, closed_tx, last_reconciled_at_block, "
    "matching_policy_version"
)
_COLUMN_NAMES = tuple(_COLUMNS.replace(" ", "").split(","))
_KEY = ("deployment_id", "chain", "primitive", "physical_identity_hash")
_AUTO_MODE_KEY = ("deployment_id", "chain", "accounting_category", "semantic_grouping_key")
_HANDLE_KEY = ("deployment_id", "accounting_category", "handle")
_TERMINAL = ("closed", "reorg_invalidated")


def _priority(column: str) -> str:
    """REGISTRY_STATUS_PRIORITY as SQL (anything unknown ranks below ``open``)."""
    return (
        f"CASE {column} WHEN 'open' THEN 0 WHEN 'closed' THEN 1 "
        "WHEN 'reorg_invalidated' THEN 1 ELSE -1 END"
    )


class RegistryProjection(Projection):
    name = "registry"
    version = 1
    handles = (LedgerAndRegistryCommitted, RegistryRowBackfilled)
    tables = (
        Table(
            "registry",
            """deployment_id TEXT NOT NULL,
            chain TEXT NOT NULL,
            primitive TEXT NOT NULL,
            accounting_category TEXT NOT NULL,
            physical_identity_hash TEXT NOT NULL,
            semantic_grouping_key TEXT NOT NULL,
            grouping_policy_version TEXT NOT NULL,
            handle TEXT,
            status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'reorg_invalidated')),
            payload TEXT NOT NULL,
            opened_at_block BIGINT,
            opened_tx TEXT,
            closed_at_block BIGINT,
            closed_tx TEXT,
            last_reconciled_at_block BIGINT,
            matching_policy_version BIGINT NOT NULL,
            PRIMARY KEY (deployment_id, chain, primitive, physical_identity_hash)""",
            (
                Index(
                    "auto_mode",
                    f"UNIQUE INDEX {{name}} ON {{table}} ({', '.join(_AUTO_MODE_KEY)}) "
                    "WHERE status = 'open' AND handle IS NULL",
                ),
                Index(
                    "handle",
                    f"UNIQUE INDEX {{name}} ON {{table}} ({', '.join(_HANDLE_KEY)}) "
                    "WHERE handle IS NOT NULL",
                ),
                Index(
                    "open",
                    "INDEX {name} ON {table} (deployment_id, opened_at_block, opened_tx) "
                    "WHERE status = 'open'",
                ),
            ),
        ),
    )

    def prepare(self) -> None:
        table = self.t["registry"]
        marks = ", ".join(f"${i}" for i in range(1, len(_COLUMN_NAMES) + 1))
        key = ", ".join(_KEY)
        insert = f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks}) ON CONFLICT ({key}) "
        self._backfill = insert + "DO NOTHING"
        self._upsert = (
            insert + "DO UPDATE SET status = excluded.status, payload = excluded.payload, "
            f"handle = coalesce({table}.handle, excluded.handle), "
            f"closed_at_block = coalesce(excluded.closed_at_block, {table}.closed_at_block), "
            f"closed_tx = coalesce(excluded.closed_tx, {table}.closed_tx), "
            "last_reconciled_at_block = coalesce(excluded.last_reconciled_at_block, "
            f"{table}.last_reconciled_at_block), "
            "grouping_policy_version = excluded.grouping_policy_version, "
            "matching_policy_version = excluded.matching_policy_version, "
            "semantic_grouping_key = excluded.semantic_grouping_key, "
            "accounting_category = excluded.accounting_category "
            f"WHERE {_priority('excluded.status')} > {_priority(f'{table}.status')}"
        )
        self._release_handle = (
            f"UPDATE {table} SET handle = NULL WHERE deployment_id = $1 "
            "AND accounting_category = $2 AND handle = $3 "
            "AND status IN ('closed', 'reorg_invalidated') AND physical_identity_hash <> $4"
        )
        self._fill_handle = (
            f"UPDATE {table} SET handle = $5 WHERE deployment_id = $1 AND chain = $2 "
            "AND primitive = $3 AND physical_identity_hash = $4 AND handle IS NULL"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table}"
        self._auto_mode_row = (
            "SELECT physical_identity_hash, opened_tx, primitive "
            f"FROM {table} WHERE deployment_id = $1 AND chain = $2 AND accounting_category = $3 "
            "AND semantic_grouping_key = $4 AND status = 'open' AND handle IS NULL"
        )
        self._handle_holders = (
            f"SELECT chain, primitive, physical_identity_hash, status, semantic_grouping_key "
            f"FROM {table} WHERE deployment_id = $1 AND accounting_category = $2 "
            "AND handle = $3 ORDER BY chain, primitive, physical_identity_hash"
        )
        # how each backend names the two indexes in a failure
        self._index_names = {
            f"{TABLE_PREFIX}{self.tables[0].name}_{index}_g": index
            for index in ("auto_mode", "handle")
        }
        self._physical_tables = {table, self.tables[0].physical(), self.tables[0].physical(True)}

    def apply(self, event: DomainEvent, recorded: Placement) -> Iterable[Statement]:
        if isinstance(event, RegistryRowBackfilled):
            yield Statement(self._backfill, _row_params(event.row, event.row.handle))
        elif isinstance(event, LedgerAndRegistryCommitted):
            row = event.registry
            handle = _effective_handle(event)
            if handle is not None:
                yield Statement(
                    self._release_handle,
                    (
                        row.deployment_id,
                        row.accounting_category,
                        handle,
                        row.physical_identity_hash,
                    ),
                )
            yield Statement(self._upsert, _row_params(row, handle))
            if handle is not None:
                yield Statement(self._fill_handle, (*_key_params(row), handle))

    # -- explaining a refused append --------------------------------------------------

    async def explain(
        self, store: EventStore, failure: InlineStepFailed, event: DomainEvent
    ) -> Exception | None:
        """The registry error behind a refused append, when this event caused it.

        Looks at the rows as they stand after the rollback: a collision between
        two events of the same append has no committed row to name, so it is
        left to the engine's generic refusal.
        """
        index = self._violated_index(failure)
        if index is None:
            return None
        if isinstance(event, LedgerAndRegistryCommitted):
            row, handle, releases = event.registry, _effective_handle(event), True
        elif isinstance(event, RegistryRowBackfilled):
            row, handle, releases = event.row, event.row.handle, False
        else:
            return None
        if index == "auto_mode":
            if handle is not None or row.status != RegistryStatus.OPEN:
                return None
            return await self._auto_mode_collision(store, row)
        if handle is None:
            return None
        return await self._handle_conflict(store, row, handle, releases)

    def _violated_index(self, failure: InlineStepFailed) -> str | None:
        """``auto_mode``, ``handle`` or ``None``, from either backend's way of saying it.

        PostgreSQL names the index (``rm_registry_auto_mode_g3``); SQLite names
        the index only for expression indexes and otherwise lists the indexed
        columns (``UNIQUE constraint failed: rm_registry.deployment_id, ...``).
        """
        text = failure.constraint or ""
        quoted = re.search(r"index '([^']+)'", text)
        name = quoted.group(1) if quoted else text.strip()
        for prefix, index in self._index_names.items():
            if re.fullmatch(re.escape(prefix) + r"\d+", name):
                return index
        if "UNIQUE" not in str(failure.cause).upper():
            return None
        tables, columns = set(), []
        for part in text.split(","):
            table, _, column = part.strip().rpartition(".")
            tables.add(table)
            columns.append(column)
        if not tables <= self._physical_tables:
            return None
        if tuple(columns) == _AUTO_MODE_KEY:
            return "auto_mode"
        if tuple(columns) == _HANDLE_KEY:
            return "handle"
        return None

    async def _auto_mode_collision(
        self, store: EventStore, row: RegistryRow
    ) -> RegistryAutoCollisionError | None:
        found = await store.query(
            self._auto_mode_row,
            (row.deployment_id, row.chain, row.accounting_category, row.semantic_grouping_key),
        )
        others = [r for r in found if r[0] != row.physical_identity_hash]
        if not others:
            return None
        existing_hash, opened_tx, primitive = others[0]
        colliding: dict[str, object] = {
            "semantic_grouping_key": row.semantic_grouping_key,
            "existing_physical_identity_hash": existing_hash,
            "opened_tx": opened_tx or "",
            "accounting_category": row.accounting_category,
        }
        message = (
            f"registry auto-mode collision in deployment {row.deployment_id!r}: an open "
            f"position without a registry handle already exists for accounting_category "
            f"{row.accounting_category!r}, semantic_grouping_key {row.semantic_grouping_key!r} "
            f"on chain {row.chain!r}; give the new position a registry handle to hold two "
            "positions in this group, or close the existing row first.\n"
            f"existing row: primitive {primitive!r}, physical_identity_hash {existing_hash!r}, "
            f"opened_tx {opened_tx or ''!r}\n"
            f"refused row: primitive {row.primitive!r}, physical_identity_hash "
            f"{row.physical_identity_hash!r}; nothing was written"
        )
        return RegistryAutoCollisionError(message, colliding)

    async def _handle_conflict(
        self, store: EventStore, row: RegistryRow, handle: str, releases: bool
    ) -> RegistryHandleConflict | None:
        found = await store.query(
            self._handle_holders, (row.deployment_id, row.accounting_category, handle)
        )
        own = (row.chain, row.primitive, row.physical_identity_hash)
        holders = [
            h
            for h in found
            if (h[0], h[1], h[2]) != own
            # a committed row releases the handle from terminal rows of other positions
            and not (releases and h[3] in _TERMINAL and h[2] != row.physical_identity_hash)
        ]
        if not holders:
            return None
        chain, primitive, identity, status, group = holders[0]
        return RegistryHandleConflict(
            f"registry handle {handle!r} is already held in deployment {row.deployment_id!r}, "
            f"accounting_category {row.accounting_category!r}, by the {status} row on chain "
            f"{chain!r}, primitive {primitive!r}, physical_identity_hash {identity!r} "
            f"(semantic_grouping_key {group!r}); choose another handle for physical_identity_hash "
            f"{row.physical_identity_hash!r}, or close the row holding it first; "
            "nothing was written"
        )

    # -- queries ----------------------------------------------------------------------

    async def open_rows(
        self,
        store: EventStore,
        deployment_id: str,
        *,
        chain: str | None = None,
        primitive: str | None = None,
        accounting_category: str | None = None,
    ) -> list[dict[str, Any]]:
        """Open rows as ``get_position_registry_open_rows`` dicts, ``payload`` parsed.

        Ordered by ``opened_at_block`` then ``opened_tx``, NULLs first (as the
        reference), then by the key (chain, primitive, physical_identity_hash)
        so rows the reference leaves tied come back in one fixed order.
        """
        sql = [f"{self._select} WHERE deployment_id = $1 AND status = 'open'"]
        params: list[Any] = [deployment_id]
        for column, value in (
            ("chain", chain),
            ("primitive", primitive),
            ("accounting_category", accounting_category),
        ):
            if value is not None:
                params.append(value)
                sql.append(f"AND {column} = ${len(params)}")
        sql.append(
            "ORDER BY opened_at_block ASC NULLS FIRST, opened_tx ASC NULLS FIRST, "
            "chain, primitive, physical_identity_hash"
        )
        rows = await store.query(" ".join(sql), params)
        return [_row_dict(row) for row in rows]

    async def find_open_auto_mode_row(
        self,
        store: EventStore,
        *,
        deployment_id: str,
        chain: str,
        accounting_category: str,
        semantic_grouping_key: str,
    ) -> dict[str, str] | None:
        """The open, handle-less row of a semantic group (the index allows one at most)."""
        rows = await store.query(
            f"{self._auto_mode_row} LIMIT 1",
            (deployment_id, chain, accounting_category, semantic_grouping_key),
        )
        if not rows:
            return None
        return {"physical_identity_hash": rows[0][0], "opened_tx": rows[0][1] or ""}

    async def rows(self, store: EventStore, deployment_id: str) -> list[RegistryRow]:
        """Every row of a deployment, whatever its status, in key order."""
        rows = await store.query(
            f"{self._select} WHERE deployment_id = $1 "
            "ORDER BY chain, primitive, physical_identity_hash",
            (deployment_id,),
        )
        return [_registry_row(row) for row in rows]


def _effective_handle(event: LedgerAndRegistryCommitted) -> str | None:
    """The row's own handle, else the mapping's (the reference's ``effective_handle``)."""
    mapping = event.handle.handle if event.handle is not None else None
    return event.registry.handle or mapping or None


def _key_params(row: RegistryRow) -> tuple[str, str, str, str]:
    return (row.deployment_id, row.chain, row.primitive, row.physical_identity_hash)


def _row_params(row: RegistryRow, handle: str | None) -> tuple[Any, ...]:
    return (
        row.deployment_id,
        row.chain,
        row.primitive,
        row.accounting_category,
        row.physical_identity_hash,
        row.semantic_grouping_key,
        row.grouping_policy_version,
        handle,
        str(row.status),
        to_json(row.payload),
        row.opened_at_block,
        row.opened_tx,
        row.closed_at_block,
        row.closed_tx,
        row.last_reconciled_at_block,
        row.matching_policy_version,
    )


def _row_dict(row: Any) -> dict[str, Any]:
    values = dict(zip(_COLUMN_NAMES, row, strict=True))
    values["payload"] = from_json(values["payload"])
    return values


def _registry_row(row: Any) -> RegistryRow:
    values = _row_dict(row)
    values["status"] = RegistryStatus(values["status"])
    return RegistryRow(**values)

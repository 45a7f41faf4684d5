"""A deployment's log as JSON Lines, and the offline check of such a file.

The file holds a header line, one line per event in deployment order, and a
trailer line, each a JSON object tagged by ``kind``::

    {"kind":"header","format":"chronicle-export","version":1,"deployment_id":...,"events":N,...}
    {"kind":"event","deployment_id":...,"deployment_seq":1,"position":...,"stream":...,
     "stream_version":1,"event_id":...,"type":...,"schema_version":1,"recorded_at":...,
     "prev_hash":"<hex>","hash":"<hex>","data_msgpack":"<base64>","metadata_msgpack":"<base64>",
     "data":{...},"metadata":{...}}
    {"kind":"trailer","events":N,"last_hash":"<hex>","sha256":"<hex>"}

``data_msgpack`` and ``metadata_msgpack`` are the stored bytes, exactly: with the
other fields they are what each hash covers, so the chain can be recomputed
offline with eventstore's own ``chain_fault``. ``data`` and ``metadata`` are the
same bytes decoded, for people; ``position`` is the source store's global
position, which no hash covers (it differs between backends).

Offline verification fails on any changed byte: the trailer's ``sha256`` covers
every byte before it; each event line must be exactly what this module renders
from the line's own stored bytes (so the readable ``data`` cannot be edited
apart from ``data_msgpack``); each hash must match, each link hold, the
sequence run 1..N without a gap, and the counts and last hash agree with the
header and trailer, so a truncated file fails too. A self-consistent forgery
of a whole file (every hash recomputed) cannot be caught offline: compare the
trailer's ``last_hash`` with the store, or with a copy kept elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from eventstore import EventStore, RecordedEvent
from eventstore.encoding import decode_payload

from .replay import ChainCheck, walk
from .source import AuditInputError, require_deployment

FORMAT = "chronicle-export"
VERSION = 1

Progress = Callable[[int], None]


class Header(msgspec.Struct, tag_field="kind", tag="header", forbid_unknown_fields=True):
    format: str
    version: int
    deployment_id: str
    events: int
    backend: str
    exported_at: datetime


class Event(msgspec.Struct, tag_field="kind", tag="event", forbid_unknown_fields=True):
    deployment_id: str
    deployment_seq: int
    position: int
    stream: str
    stream_version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    recorded_at: datetime
    prev_hash: str
    hash: str
    data_msgpack: bytes
    metadata_msgpack: bytes
    data: Any
    metadata: Any


class Trailer(msgspec.Struct, tag_field="kind", tag="trailer", forbid_unknown_fields=True):
    events: int
    last_hash: str
    sha256: str


def _view_hook(value: Any) -> Any:
    if isinstance(value, msgspec.msgpack.Ext):
        return {"msgpack_ext": value.code, "base64": base64.b64encode(value.data).decode()}
    raise TypeError(f"{type(value).__name__} has no JSON view")


_encoder = msgspec.json.Encoder(enc_hook=_view_hook)
_decoder = msgspec.json.Decoder(Header | Event | Trailer)


def _view(raw: bytes) -> Any:
    """The payload decoded for people; ``None`` when the bytes do not decode."""
    try:
        value = decode_payload(raw)
        _encoder.encode(value)
    except (msgspec.DecodeError, TypeError, ValueError, OverflowError):
        return None
    return value


def render_event(event: RecordedEvent) -> bytes:
    """One event's line, newline included: the only way lines are written or checked."""
    line = Event(
        deployment_id=event.deployment_id,
        deployment_seq=event.deployment_seq,
        position=event.position,
        stream=event.stream,
        stream_version=event.stream_version,
        event_id=event.event_id,
        type=event.type,
        schema_version=event.schema_version,
        recorded_at=event.recorded_at,
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
        data_msgpack=event.raw_data,
        metadata_msgpack=event.raw_metadata,
        data=_view(event.raw_data),
        metadata=_view(event.raw_metadata),
    )
    return _encoder.encode(line) + b"\n"


def _recorded(line: Event) -> RecordedEvent:
    return RecordedEvent(
        position=line.position,
        deployment_id=line.deployment_id,
        deployment_seq=line.deployment_seq,
        stream=line.stream,
        stream_version=line.stream_version,
        event_id=line.event_id,
        type=line.type,
        schema_version=line.schema_version,
        raw_data=line.data_msgpack,
        raw_metadata=line.metadata_msgpack,
        recorded_at=line.recorded_at,
        prev_hash=bytes.fromhex(line.prev_hash),
        hash=bytes.fromhex(line.hash),
    )


# -- writing ------------------------------------------------------------------------------


class ExportSummary(msgspec.Struct, frozen=True):
    deployment_id: str
    events: int
    bytes: int
    last_hash: str
    chain_ok: bool
    chain_fault: str | None
    chain_fault_seq: int | None


async def export_deployment(
    store: EventStore, deployment_id: str, out: IO[bytes], progress: Progress | None = None
) -> ExportSummary:
    """Write the deployment's log, as it stands when the export starts, to ``out``.

    The chain is checked on the way (the file is written whatever it finds): an
    export of a broken log fails offline verification, and the summary says so.
    """
    length = await require_deployment(store, deployment_id)
    digest = hashlib.sha256()
    written = 0

    def write(line: bytes) -> None:
        nonlocal written
        digest.update(line)
        out.write(line)
        written += len(line)

    header = Header(FORMAT, VERSION, deployment_id, length, store.backend, datetime.now(UTC))
    write(_encoder.encode(header) + b"\n")
    chain = ChainCheck()
    count = 0
    async for batch in walk(store, deployment_id, length):
        for event in batch:
            chain.check(event)
            write(render_event(event))
        count += len(batch)
        if progress is not None:
            progress(count)
    trailer = Trailer(count, chain.prev.hex(), digest.hexdigest())
    tail = _encoder.encode(trailer) + b"\n"
    out.write(tail)
    return ExportSummary(
        deployment_id,
        count,
        written + len(tail),
        chain.prev.hex(),
        chain.fault is None,
        chain.fault,
        None if chain.fault_event is None else chain.fault_event.deployment_seq,
    )


def open_output(path: str) -> tuple[IO[bytes], Callable[[bool], None]]:
    """A file to export into, and ``finish(ok)``: it appears at ``path`` whole, or not at all."""
    target = Path(path)
    if not target.parent.exists():
        raise AuditInputError(f"cannot write {path}: directory {target.parent} does not exist")
    if target.is_dir():
        raise AuditInputError(f"cannot write {path}: it is a directory; name a file in it")
    partial = target.with_name(f".{target.name}.partial")
    try:
        handle = open(partial, "wb")  # noqa: SIM115 - closed by finish()
    except OSError as exc:
        raise AuditInputError(f"cannot write {path}: {exc.strerror}") from exc

    def finish(ok: bool) -> None:
        handle.close()
        if not ok:
            partial.unlink(missing_ok=True)
            return
        try:
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise AuditInputError(f"cannot write {path}: {exc.strerror}") from exc

    return handle, finish


# -- verifying a file offline ---------------------------------------------------------------


class FileReport(msgspec.Struct, frozen=True):
    ok: bool
    file: str
    deployment_id: str
    events_checked: int
    last_hash: str | None
    first_bad_line: int | None = None
    first_bad_deployment_seq: int | None = None
    reason: str | None = None


class _Bad(Exception):
    def __init__(self, line: int, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.line, self.reason, self.seq = line, reason, seq


class _Reading:
    """One pass over an export's lines after the header."""

    def __init__(self, header: Header, first: bytes, progress: Progress | None) -> None:
        self.header = header
        self.digest = hashlib.sha256(first)
        self.chain = ChainCheck()
        self.events = 0
        self.progress = progress

    def run(self, handle: IO[bytes]) -> None:
        number = 1  # the header
        for raw in handle:
            number += 1
            try:
                line = _decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise _Bad(number, f"not a valid export line: {exc}") from exc
            if isinstance(line, Trailer):
                self._trailer(number, raw, line)
                if handle.read(1):
                    raise _Bad(number + 1, "data after the trailer line")
                return
            if not isinstance(line, Event):
                raise _Bad(number, "a second header line")
            self.digest.update(raw)
            self._event(number, raw, line)
        raise _Bad(number + 1, "the file ends without its trailer line: it was truncated")

    def _event(self, number: int, raw: bytes, line: Event) -> None:
        seq = line.deployment_seq
        if line.deployment_id != self.header.deployment_id:
            raise _Bad(number, f"an event of deployment {line.deployment_id!r}", seq)
        try:
            event = _recorded(line)
        except ValueError as exc:
            raise _Bad(number, f"a hash is not hexadecimal: {exc}", seq) from exc
        if render_event(event) != raw:
            raise _Bad(
                number,
                "the line is not as exported: its readable fields (data, metadata, times, "
                "ids) disagree with its stored bytes, or it was re-encoded",
                seq,
            )
        if not self.chain.check(event):
            raise _Bad(number, self.chain.fault or "broken chain", seq)
        self.events += 1
        if self.progress is not None:
            self.progress(self.events)

    def _trailer(self, number: int, raw: bytes, trailer: Trailer) -> None:
        if _encoder.encode(trailer) + b"\n" != raw:
            raise _Bad(number, "the trailer line is not as exported")
        if trailer.events != self.events or self.header.events != self.events:
            raise _Bad(
                number,
                f"the file holds {self.events} events; its header says {self.header.events}, "
                f"its trailer {trailer.events}",
            )
        if trailer.last_hash != self.chain.prev.hex():
            raise _Bad(number, "the trailer's last_hash is not the last event's hash")
        if trailer.sha256 != self.digest.hexdigest():
            raise _Bad(number, "the bytes before the trailer do not match its sha256")


def verify_file(path: str, progress: Progress | None = None) -> FileReport:
    """Check an export without a database. Not an export at all: ``AuditInputError``."""
    file = Path(path)
    if not file.is_file():
        raise AuditInputError(f"no export file at {path}; give the path `chronicle export` wrote")
    with open(file, "rb") as handle:
        first = handle.readline()
        header = _header(path, first)
        reading = _Reading(header, first, progress)
        try:
            reading.run(handle)
        except _Bad as bad:
            return FileReport(
                ok=False,
                file=path,
                deployment_id=header.deployment_id,
                events_checked=reading.events,
                last_hash=reading.chain.prev.hex() if reading.events else None,
                first_bad_line=bad.line,
                first_bad_deployment_seq=bad.seq,
                reason=bad.reason,
            )
    return FileReport(True, path, header.deployment_id, reading.events, reading.chain.prev.hex())


def _header(path: str, first: bytes) -> Header:
    not_export = f"{path} is not a Chronicle export (its first line is not an export header)"
    try:
        header = _decoder.decode(first)
    except msgspec.DecodeError as exc:
        raise AuditInputError(f"{not_export}: {exc}") from exc
    if not isinstance(header, Header) or header.format != FORMAT:
        raise AuditInputError(not_export)
    if header.version != VERSION:
        raise AuditInputError(
            f"{path} is a version {header.version} export; this release reads version {VERSION}"
        )
    return header

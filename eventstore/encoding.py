"""Bytes on disk: payload encoding, timestamps and the hash chain.

Payloads are MessagePack (compact, fast, and exact for ``Decimal``, which msgspec
writes as a string). The chain hash of an event covers its predecessor's hash and
a canonical MessagePack array of every stored field except the global position,
which depends on the backend; so a deployment's chain verifies the same on
SQLite, on PostgreSQL and in an exported file.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from .errors import EncodingError

T = TypeVar("T")

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of a deployment's first event."""

BIGINT_EXT_CODE = 1
"""MessagePack ext type of an integer outside 64 bits: its decimal digits, in ASCII.

Real payloads carry such integers (a Uniswap position's 160-bit liquidity);
MessagePack has no type for them, so they travel as this ext and decode to ``int``.
"""

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def ext_hook(code: int, data: memoryview) -> Any:
    """Decoder hook: :data:`BIGINT_EXT_CODE` back to ``int``, other exts untouched."""
    if code == BIGINT_EXT_CODE:
        return int(bytes(data).decode("ascii"))
    return msgspec.msgpack.Ext(code, bytes(data))


def shield_big_ints(value: Any) -> Any:
    """Replace integers MessagePack cannot hold with :data:`BIGINT_EXT_CODE` exts."""
    if type(value) is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return msgspec.msgpack.Ext(BIGINT_EXT_CODE, str(value).encode("ascii"))
    if isinstance(value, dict):
        return {key: shield_big_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [shield_big_ints(item) for item in value]
    return value


_encoder = msgspec.msgpack.Encoder(decimal_format="string", uuid_format="canonical")
_decoder = msgspec.msgpack.Decoder(ext_hook=ext_hook)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_payload(value: Any) -> bytes:
    """Encode event data or metadata, refusing what cannot round-trip."""
    try:
        try:
            return _encoder.encode(value)
        except OverflowError:
            builtins = msgspec.to_builtins(value, builtin_types=(Decimal, datetime, uuid.UUID))
            return _encoder.encode(shield_big_ints(builtins))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise EncodingError(
            f"event payload cannot be encoded: {exc}; use msgspec Structs or dicts of "
            "str, int, bool, None, Decimal, datetime (timezone-aware), lists and dicts"
        ) from exc


def decode_payload(raw: bytes) -> Any:
    return _decoder.decode(raw)


def decode_payload_as(raw: bytes, type: type[T]) -> T:
    return msgspec.msgpack.decode(raw, type=type, ext_hook=ext_hook)


def now_micros() -> int:
    """Microseconds since the epoch, UTC: the stored form of ``recorded_at``."""
    return time.time_ns() // 1000


def micros_to_datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware (UTC) datetime")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def chain_hash(
    prev_hash: bytes,
    deployment_id: str,
    deployment_seq: int,
    stream: str,
    stream_version: int,
    event_id: uuid.UUID,
    type: str,
    schema_version: int,
    recorded_at_micros: int,
    data: bytes,
    metadata: bytes,
) -> bytes:
    """SHA-256 over the previous link and the event's canonical bytes."""
    canonical = _encoder.encode(
        (
            deployment_id,
            deployment_seq,
            stream,
            stream_version,
            event_id.bytes,
            type,
            schema_version,
            recorded_at_micros,
            data,
            metadata,
        )
    )
    return hashlib.sha256(prev_hash + canonical).digest()

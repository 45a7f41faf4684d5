"""Appending: compare-and-swap, atomicity, idempotent retries, refusals of bad input.

Every test runs on SQLite and on PostgreSQL (see conftest.py) and checks, after
each refusal, that the log is exactly as it was: a refused append writes nothing.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

import eventstore
from eventstore import EventStore, ExpectedVersion, NewEvent


def ev(kind: str = "Happened", **data: Any) -> NewEvent:
    return NewEvent(kind, data or {"n": 1})


async def snapshot(store: EventStore) -> list[tuple[Any, ...]]:
    """Everything the log holds, for before/after comparisons.

    Read with SQL, not ``read_all``: on PostgreSQL a transaction open anywhere on
    the server holds ``read_all`` back, and an empty read would make every
    comparison pass without checking anything.
    """
    rows = await store.query(
        "SELECT position, deployment_id, stream, stream_version, hash FROM chronicle_events "
        "ORDER BY position"
    )
    return [tuple(row) for row in rows]


# -- compare-and-swap ---------------------------------------------------------


async def test_no_stream_creates_then_refuses(store: EventStore) -> None:
    first = await store.append("dep", "s", [ev()], expected_version=ExpectedVersion.NO_STREAM)
    assert (first.stream_version, first.deployment_seq, first.replayed) == (1, 1, False)
    before = await snapshot(store)
    with pytest.raises(eventstore.WrongExpectedVersion) as info:
        await store.append("dep", "s", [ev()], expected_version=ExpectedVersion.NO_STREAM)
    assert info.value.expected is ExpectedVersion.NO_STREAM
    assert info.value.actual == 1
    assert await snapshot(store) == before


async def test_stream_exists_refuses_missing_stream(store: EventStore) -> None:
    with pytest.raises(eventstore.WrongExpectedVersion) as info:
        await store.append("dep", "s", [ev()], expected_version=ExpectedVersion.STREAM_EXISTS)
    assert info.value.actual == 0
    assert await snapshot(store) == []
    await store.append("dep", "s", [ev()])
    result = await store.append("dep", "s", [ev()], expected_version=ExpectedVersion.STREAM_EXISTS)
    assert result.stream_version == 2


async def test_exact_version_accepts_only_the_current_version(store: EventStore) -> None:
    assert (await store.append("dep", "s", [ev()], expected_version=0)).stream_version == 1
    assert (await store.append("dep", "s", [ev()], expected_version=1)).stream_version == 2
    before = await snapshot(store)
    for stale in (0, 1, 3, 99):
        with pytest.raises(eventstore.WrongExpectedVersion) as info:
            await store.append("dep", "s", [ev()], expected_version=stale)
        assert (info.value.expected, info.value.actual) == (stale, 2)
    assert await snapshot(store) == before


async def test_any_always_appends(store: EventStore) -> None:
    for expected_version in range(1, 4):
        result = await store.append("dep", "s", [ev()], expected_version=ExpectedVersion.ANY)
        assert result.stream_version == expected_version
    assert await store.stream_version("dep", "s") == 3


async def test_streams_version_independently_within_a_deployment(store: EventStore) -> None:
    await store.append("dep", "a", [ev(), ev()])
    result = await store.append("dep", "b", [ev()], expected_version=0)
    assert (result.stream_version, result.deployment_seq) == (1, 3)
    other = await store.append("other", "a", [ev()], expected_version=0)
    assert (other.stream_version, other.deployment_seq) == (1, 1)


async def test_a_cas_conflict_seen_by_a_second_client(store_url: str) -> None:
    """A client whose view of the stream is stale is refused, not silently ahead."""
    async with eventstore.connect(store_url) as a, eventstore.connect(store_url) as b:
        await a.append("dep", "s", [ev()], expected_version=0)
        await b.append("dep", "s", [ev()], expected_version=1)
        with pytest.raises(eventstore.WrongExpectedVersion) as info:
            await a.append("dep", "s", [ev()], expected_version=1)
        assert info.value.actual == 2
        assert (await a.append("dep", "s", [ev()], expected_version=2)).stream_version == 3
        assert [e.stream_version for e in await b.read_stream("dep", "s")] == [1, 2, 3]
        assert (await a.verify()).ok


# -- atomicity ------------------------------------------------------------------


async def test_a_batch_lands_whole_with_consecutive_numbers(store: EventStore) -> None:
    result = await store.append("dep", "s", [ev(n=i) for i in range(5)])
    events = await store.read_stream("dep", "s")
    assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
    assert [e.deployment_seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4]
    assert result.position == events[-1].position
    assert [e.position for e in events] == sorted({e.position for e in events})


async def test_a_batch_with_one_bad_event_writes_nothing(store: EventStore) -> None:
    await store.append("dep", "s", [ev()])
    before = await snapshot(store)
    with pytest.raises(eventstore.EncodingError):
        await store.append("dep", "s", [ev(n=1), NewEvent("Bad", {"x": object()})])
    assert await snapshot(store) == before


async def test_a_failing_inline_statement_rolls_the_append_back(store: EventStore) -> None:
    await store.append("dep", "s", [ev()])
    before = await snapshot(store)
    with pytest.raises(eventstore.InlineStepFailed):
        await store.append(
            "dep",
            "s",
            [ev(), ev()],
            inline=lambda events: [eventstore.Statement("SELECT * FROM no_such_table")],
        )
    assert await snapshot(store) == before
    assert (await store.append("dep", "s", [ev()], expected_version=1)).stream_version == 2


async def test_inline_statements_see_the_recorded_events(store: EventStore) -> None:
    seen: list[tuple[int, int, str]] = []

    def step(events: Any) -> list[eventstore.Statement]:
        seen.extend((e.stream_version, e.deployment_seq, e.type) for e in events)
        return []

    result = await store.append("dep", "s", [ev("A"), ev("B")], inline=step)
    assert seen == [(1, 1, "A"), (2, 2, "B")]
    stored = await store.read_stream("dep", "s")
    assert stored[-1].position == result.position


# -- idempotent retries -----------------------------------------------------------


async def test_retrying_the_same_events_returns_the_original_result(store: EventStore) -> None:
    batch = [NewEvent("A", {"n": 1}, event_id=uuid.uuid4()), NewEvent("B", {"n": 2})]
    original = await store.append("dep", "s", batch, expected_version=0)
    before = await snapshot(store)
    # the same append again, as a client that lost the reply would send it
    retry = await store.append("dep", "s", batch, expected_version=0)
    assert retry.replayed
    assert (retry.stream_version, retry.position, retry.deployment_seq) == (
        original.stream_version,
        original.position,
        original.deployment_seq,
    )
    again = await store.append("dep", "s", batch, expected_version=ExpectedVersion.ANY)
    assert again.replayed and again.position == original.position
    assert await snapshot(store) == before


async def test_reusing_an_event_id_for_other_content_is_refused(store: EventStore) -> None:
    event_id = uuid.uuid4()
    await store.append("dep", "s", [NewEvent("A", {"n": 1}, event_id=event_id)])
    before = await snapshot(store)
    for clash in (
        NewEvent("A", {"n": 2}, event_id=event_id),
        NewEvent("Other", {"n": 1}, event_id=event_id),
        NewEvent("A", {"n": 1}, event_id=event_id, metadata={"cycle_id": "x"}),
    ):
        with pytest.raises(eventstore.DuplicateEventId) as info:
            await store.append("dep", "s", [clash])
        assert info.value.event_id == str(event_id)
    with pytest.raises(eventstore.DuplicateEventId):
        await store.append("dep", "elsewhere", [NewEvent("A", {"n": 1}, event_id=event_id)])
    with pytest.raises(eventstore.DuplicateEventId):  # a retry may not carry new events
        await store.append("dep", "s", [NewEvent("A", {"n": 1}, event_id=event_id), ev()])
    assert await snapshot(store) == before


async def test_event_ids_are_unique_within_one_append(store: EventStore) -> None:
    event_id = uuid.uuid4()
    with pytest.raises(eventstore.InvalidInput):
        await store.append(
            "dep", "s", [NewEvent("A", {}, event_id=event_id), NewEvent("B", {}, event_id=event_id)]
        )
    assert await snapshot(store) == []


# -- bad input ---------------------------------------------------------------------


BAD_IDENTIFIERS = ["", "x" * 201, "tab\there", "nul\x00", "newline\n", "del\x7f"]


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS, ids=repr)
async def test_bad_deployment_ids_and_streams_are_refused(store: EventStore, bad: str) -> None:
    with pytest.raises(eventstore.InvalidIdentifier):
        await store.append(bad, "s", [ev()])
    with pytest.raises(eventstore.InvalidIdentifier):
        await store.append("dep", bad, [ev()])
    assert await snapshot(store) == []


async def test_identifiers_at_the_limit_are_accepted(store: EventStore) -> None:
    long_name = "é" * 200
    result = await store.append(long_name, long_name, [ev()])
    assert result.stream_version == 1
    assert (await store.read_stream(long_name, long_name))[0].deployment_id == long_name


@pytest.mark.parametrize(
    "expected", [-1, -2, True, 1.0, "1", None], ids=["-1", "-2", "True", "1.0", "'1'", "None"]
)
async def test_bad_expected_versions_are_refused(store: EventStore, expected: Any) -> None:
    with pytest.raises(eventstore.InvalidExpectedVersion):
        await store.append("dep", "s", [ev()], expected_version=expected)
    assert await snapshot(store) == []


async def test_empty_and_malformed_batches_are_refused(store: EventStore) -> None:
    with pytest.raises(eventstore.EmptyAppend):
        await store.append("dep", "s", [])
    with pytest.raises(eventstore.InvalidInput):
        await store.append("dep", "s", ev())  # type: ignore[arg-type]
    with pytest.raises(eventstore.InvalidInput):
        await store.append("dep", "s", [{"type": "A"}])  # type: ignore[list-item]
    with pytest.raises(eventstore.InvalidInput):
        await store.append("dep", "s", [NewEvent("A", [1, 2])])  # type: ignore[arg-type]
    with pytest.raises(eventstore.InvalidIdentifier):
        await store.append("dep", "s", [NewEvent("", {})])
    assert await snapshot(store) == []


@pytest.mark.parametrize(
    "data",
    [{"x": object()}, {"x": {1, 2, object()}}, {"when": lambda: None}],
    ids=["object", "set-of-objects", "function"],
)
async def test_unencodable_data_is_refused(store: EventStore, data: dict[str, Any]) -> None:
    with pytest.raises(eventstore.EncodingError):
        await store.append("dep", "s", [NewEvent("A", data)])
    with pytest.raises(eventstore.EncodingError):
        await store.append("dep", "s", [NewEvent("A", {}, metadata=data)])
    assert await snapshot(store) == []


async def test_payload_size_limit(store_url: str) -> None:
    async with eventstore.connect(store_url, max_event_bytes=1000) as small:
        await small.append("dep", "s", [NewEvent("A", {"blob": "x" * 900})])
        with pytest.raises(eventstore.EventTooLarge):
            await small.append("dep", "s", [NewEvent("A", {"blob": "x" * 1001})])
        assert await small.stream_version("dep", "s") == 1


async def test_default_payload_limit_is_one_mebibyte(store: EventStore) -> None:
    assert store.max_event_bytes == 1024 * 1024
    with pytest.raises(eventstore.EventTooLarge):
        await store.append("dep", "s", [NewEvent("A", {"blob": b"x" * (1024 * 1024)})])
    assert await snapshot(store) == []


async def test_negative_read_arguments_are_refused(store: EventStore) -> None:
    with pytest.raises(eventstore.InvalidInput):
        await store.read_all(-1)
    with pytest.raises(eventstore.InvalidInput):
        await store.read_stream("dep", "s", limit=-5)
    with pytest.raises(eventstore.InvalidInput):
        await store.read_deployment("dep", from_seq=-1)


# -- encoding --------------------------------------------------------------------


class Fill(msgspec.Struct, frozen=True):
    size: Decimal
    price: Decimal
    order_id: str


async def test_decimals_stay_exact_and_structs_round_trip(store: EventStore) -> None:
    amount = Decimal("12345678901234567890.123456789012345678")
    await store.append(
        "dep",
        "s",
        [
            NewEvent("Dict", {"amount": amount, "tiny": Decimal("1E-18")}),
            NewEvent("Fill", Fill(Decimal("0.5"), Decimal("3012.75"), "o-1")),
        ],
    )
    as_dict, as_struct = await store.read_stream("dep", "s")
    assert Decimal(as_dict.data["amount"]) == amount
    assert Decimal(as_dict.data["tiny"]) == Decimal("1E-18")
    assert as_struct.decode(Fill) == Fill(Decimal("0.5"), Decimal("3012.75"), "o-1")


async def test_metadata_and_schema_version_are_kept(store: EventStore) -> None:
    meta = {"cycle_id": "c-7", "correlation_id": str(uuid.uuid4()), "writer": "runner-1"}
    await store.append("dep", "s", [NewEvent("A", {}, metadata=meta, schema_version=3)])
    (event,) = await store.read_stream("dep", "s")
    assert event.metadata == meta
    assert event.schema_version == 3
    assert event.recorded_at.utcoffset() is not None
    assert event.recorded_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

"""Requests matched to their answers by id (``jointreview.pending_calls``), as the worker
channel and the bus between nodes use them: what the caller gets for each kind of answer,
for none, and when the channel closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jointreview.pending_calls import PendingCalls
from signaling.errors import ServiceError, Unavailable
from signaling.state import StoreUnavailable

# the answer sent back (id filled in) -> what the call returns, or the error it raises
TABLE: list[tuple[str, dict[str, Any] | None, Any]] = [
    ("a result", {"result": {"hosted": True}}, {"hosted": True}),
    ("an empty result", {"result": {}}, {}),
    (
        "an error",
        {"error": {"code": "no_media", "message": "offer first"}},
        (ServiceError, "no_media", 400),
    ),
    (
        "the other side's store is down",
        {"error": {"code": "store_unavailable", "message": "redis"}},
        (StoreUnavailable, "store_unavailable", 503),
    ),
    ("no answer", None, (Unavailable, "media_unavailable", 503)),
]


@pytest.mark.parametrize(("answer", "expected"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
async def test_a_call_gets_what_its_answer_says(
    answer: dict[str, Any] | None, expected: Any
) -> None:
    calls = PendingCalls(timeout_s=0.05)
    sent: list[str] = []

    async def send(rid: str) -> None:
        sent.append(rid)
        if answer is not None:  # answered later, as a channel's reader would
            asyncio.get_running_loop().call_soon(calls.answer, {"id": rid, **answer})

    if isinstance(expected, tuple):
        kind, code, status = expected
        with pytest.raises(kind) as caught:
            await calls.call(send, "nobody answered")
        assert (caught.value.code, caught.value.status) == (code, status)
    else:
        assert await calls.call(send, "nobody answered") == expected
    assert len(sent) == 1 and len(calls) == 0  # nothing left waiting
    assert not calls.answer({"id": sent[0], "result": {}})  # too late: matches nothing


async def test_answers_find_their_own_call_whatever_the_order() -> None:
    calls = PendingCalls(timeout_s=5)
    sent: list[str] = []
    both = asyncio.Event()

    async def send(rid: str) -> None:
        sent.append(rid)
        if len(sent) == 2:
            both.set()

    first = asyncio.create_task(calls.call(send, "-"))
    second = asyncio.create_task(calls.call(send, "-"))
    await both.wait()
    assert len(set(sent)) == 2
    assert not calls.answer({"id": "someone-else-1", "result": {}})
    assert calls.answer({"id": sent[1], "result": {"n": 2}})
    assert calls.answer({"id": sent[0], "result": {"n": 1}})
    assert await first == {"n": 1} and await second == {"n": 2}


async def test_ids_differ_between_instances() -> None:
    """A late answer meant for an earlier worker or node incarnation matches nothing."""
    sent: list[str] = []

    async def send(rid: str) -> None:
        sent.append(rid)
        raise ConnectionError("gone")

    for calls in (PendingCalls(1), PendingCalls(1)):
        with pytest.raises(ConnectionError):
            await calls.call(send, "-")
        assert len(calls) == 0  # a send that failed leaves nothing waiting
    assert sent[0] != sent[1]


async def test_a_closing_channel_fails_every_waiting_call() -> None:
    calls = PendingCalls(timeout_s=5)
    all_sent = asyncio.Event()

    async def send(rid: str) -> None:
        if len(calls) == 3:
            all_sent.set()

    waiting = [asyncio.create_task(calls.call(send, "-")) for _ in range(3)]
    await all_sent.wait()
    calls.fail_all(Unavailable("media_unavailable", "media worker 1 stopped"))
    for task in waiting:
        with pytest.raises(Unavailable, match="worker 1 stopped"):
            await task
    assert len(calls) == 0

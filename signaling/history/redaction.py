"""Chat purged from the record (retention's chat period, #18): each purged chat event's
``events`` row becomes its stub (``recording.redaction``: no actor, data only the
``purged`` mark with the event's hash) and its ``chat`` row loses text, sender and
participant. An UPDATE of existing columns (no migration); applying it again changes
nothing. The live store has forgotten the session by then (``signaling.evict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from recording.archive import CHAT

from . import schema as s
from .repo import History


async def redact_chat(history: History, case_id: str, stubs: Mapping[int, dict[str, Any]]) -> int:
    """Each ``seq`` of ``stubs`` (its stub's ``data``) redacted; returns how many
    ``events`` rows are stubs now (fewer than asked: the record lacks some)."""
    if not stubs:
        return 0
    e, c = s.events, s.chat
    seqs = sorted(stubs)
    async with history.engine.begin() as conn:
        for seq in seqs:
            where = sa.and_(e.c.case_id == case_id, e.c.seq == seq, e.c.type == CHAT)
            await conn.execute(sa.update(e).where(where).values(actor=None, data=stubs[seq]))
        where = sa.and_(c.c.case_id == case_id, c.c.seq.in_(seqs))
        gone = {"text": "", "sender": None, "participant_id": None}
        await conn.execute(sa.update(c).where(where).values(**gone))
        count = sa.select(sa.func.count()).select_from(e)
        count = count.where(e.c.case_id == case_id, e.c.seq.in_(seqs), e.c.type == CHAT)
        return int(await conn.scalar(count) or 0)


async def whole_chat(history: History, case_id: str, seqs: Sequence[int]) -> int:
    """How many of these chat events are still whole in the record (not stubs: a chat
    event always has its sender as actor, a stub none)."""
    if not seqs:
        return 0
    e = s.events
    count = sa.select(sa.func.count()).select_from(e)
    where = (e.c.case_id == case_id, e.c.seq.in_(sorted(seqs)), e.c.type == CHAT)
    async with history.engine.connect() as conn:
        return int(await conn.scalar(count.where(*where, e.c.actor.is_not(None))) or 0)

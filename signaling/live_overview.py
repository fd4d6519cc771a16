"""The supervisors' live overview (issue #15): the sessions in progress now, who is in
each and for how long, each person's media health as the SFU counts it, who observes,
and the invitations ringing now with how long they have rung.

Read from the live store (not the record: it is about now) and from the media host of
each session through the ``MediaPort``; newest session first, a page at a time. The
page polls it (``poll_s``): media health changes every second, so a push "when it
changes" would be a push a second per session to every supervisor's socket, and each
needs its own policy-filtered, paginated view; a poll costs only while someone looks,
and any node answers it alike.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel

from . import paging, policy
from .auth import Identity
from .core import OPEN
from .directory import Directory
from .media_port import MediaPort
from .models import Actor, Invitation, Session
from .observation import Observations

LIVE = "lv"  # the cursor kind of the overview's sessions
POLL_S = 2.0  # how often the page asks again
SCAN_PAGES = paging.SCAN_PAGES  # ended sessions not yet evicted are read past, boundedly


class TrackHealth(BaseModel):
    track_id: str
    kind: str
    source: str
    loss: float  # fraction lost (after repair) in the last second, 0..1
    lost: int  # packets lost since the track (re)started
    received: int
    jitter_ms: float
    fps: float | None = None  # video: frames per second now (0 while frozen)
    frames: int | None = None
    freezes: int | None = None  # gaps of more than 1 s between frames
    frozen: bool | None = None


class MediaHealth(BaseModel):
    connection: str  # the SFU's view of the peer connection (new, connecting, connected…)
    loss: float  # the worst of its published tracks
    fps: float | None  # its camera's, if it sends one
    freezes: int
    frozen: bool  # its camera stands still now
    receiving: int  # tracks flowing to it
    tracks: list[TrackHealth]


class LiveParticipant(BaseModel):
    participant_id: str
    identity: Actor
    state: Literal["joined", "disconnected"]
    joined_at: float
    in_for_s: float
    media: MediaHealth | None = None  # None: no media connection to the SFU now


class LiveInvitation(BaseModel):
    invitation_id: str
    session_id: str
    case_id: str
    dept: str | None
    dept_name: str | None
    level: str | None
    reviewer: str | None
    reviewer_name: str | None
    status: str
    created_at: float
    ringing_for_s: float  # since it was made (it rings from then on)


class LiveObserver(BaseModel):
    observation_id: str
    observer: Actor
    mode: str
    started_at: float
    watching_for_s: float


class LiveSession(BaseModel):
    session_id: str
    case_id: str
    matter: str | None
    window: str | None
    applicant_name: str | None
    clerk: Actor
    created_at: float
    running_for_s: float
    recording: bool
    participants: list[LiveParticipant]
    invitations: list[LiveInvitation]  # open: pending, ringing or unanswered
    observers: list[LiveObserver]


class LiveOverview(BaseModel):
    server_time: float
    poll_s: float
    observation: str  # the setting: announced, silent or off
    sessions: list[LiveSession]
    next_cursor: str | None
    ringing: list[LiveInvitation]  # pending or ringing now, every session, oldest first
    ringing_more: bool  # more are ringing than the page's limit


class LiveView:
    def __init__(
        self,
        service: Any,
        media: MediaPort,
        observations: Observations,
        directory: Directory,
    ) -> None:
        self.service = service
        self.store = service.store
        self.media = media
        self.observations = observations
        self.directory = directory

    async def overview(self, who: Identity, limit: int, cursor: str | None) -> LiveOverview:
        policy.can_watch_live(who)
        now = self.service.clock()
        sessions, next_cursor = await self._active(who, limit, cursor)
        live = await asyncio.gather(*(self._session(s, now) for s in sessions))
        ringing, more = await self._ringing(now, limit)
        return LiveOverview(
            server_time=now,
            poll_s=POLL_S,
            observation=self.observations.mode,
            sessions=list(live),
            next_cursor=next_cursor,
            ringing=ringing,
            ringing_more=more,
        )

    async def _active(
        self, who: Identity, limit: int, cursor: str | None
    ) -> tuple[list[Session], str | None]:
        """Active sessions the caller may read, newest first, after the cursor. Reads at
        most ``SCAN_PAGES`` pages' worth of the index (it also holds ended sessions until
        they are evicted); a cursor then says where to go on."""
        at = paging.decode(LIVE, cursor, {"t": float, "i": str})
        top = None if at is None else at["t"]
        out: list[Session] = []
        budget = SCAN_PAGES * (limit + 1)
        last: tuple[float, str] | None = None
        while budget > 0:
            chunk = min(budget, limit + 1)
            ids = await self.store.index_range("sessions", max_score=top, limit=chunk, reverse=True)
            docs = await self.store.get_many([f"session:{i}" for i in ids]) if ids else []
            budget -= len(ids)
            fresh = 0
            for doc in docs:
                if doc is None:
                    continue
                s = Session.model_validate(doc)
                key = (s.created_at, s.session_id)
                if at is not None and key >= (at["t"], at["i"]):
                    continue  # at the cursor's own time: on an earlier page
                if last is not None and key >= last:
                    continue
                fresh += 1
                last = key
                if s.status == "active" and policy.in_scope(who, s.case_id, s.session_id):
                    out.append(s)
                    if len(out) > limit:
                        break
            if len(out) > limit or len(ids) < chunk:
                break
            if fresh == 0:
                break
            top = last[0] if last is not None else top
        page = out[:limit]
        more = len(out) > limit or (budget <= 0 and last is not None)
        end = page[-1] if len(out) > limit else None
        if end is not None:
            return page, paging.encode(LIVE, t=end.created_at, i=end.session_id)
        if more and last is not None:
            return page, paging.encode(LIVE, t=last[0], i=last[1])
        return page, None

    async def _session(self, s: Session, now: float) -> LiveSession:
        sid = s.session_id
        slots, invitations, observers, recording, health = await asyncio.gather(
            self.service.participants(sid),
            self.service.invitations(sid),
            self.observations.of_session(sid),
            self.media.recording_active(sid),
            self.media.media_health(sid),
        )
        media = {h["participant_id"]: h for h in health}
        return LiveSession(
            session_id=sid,
            case_id=s.case_id,
            matter=s.matter,
            window=s.window,
            applicant_name=s.applicant_name,
            clerk=s.created_by,
            created_at=s.created_at,
            running_for_s=round(now - s.created_at, 3),
            recording=recording,
            participants=[
                LiveParticipant(
                    participant_id=p.participant_id,
                    identity=p.identity,
                    state=p.state,
                    joined_at=p.joined_at,
                    in_for_s=round(now - p.joined_at, 3),
                    media=_health(media.get(p.participant_id)),
                )
                for p in slots
                if p.state != "left"
            ],
            invitations=[self._invitation(i, now) for i in invitations if i.status in OPEN],
            observers=[
                LiveObserver(
                    observation_id=o.observation_id,
                    observer=o.observer,
                    mode=o.mode,
                    started_at=o.started_at,
                    watching_for_s=round(now - o.started_at, 3),
                )
                for o in observers
            ],
        )

    def _invitation(self, i: Invitation, now: float) -> LiveInvitation:
        dept = self.directory.department(i.dept) if i.dept else None
        return LiveInvitation(
            invitation_id=i.invitation_id,
            session_id=i.session_id,
            case_id=i.case_id,
            dept=i.dept,
            dept_name=dept.name if dept else None,
            level=i.level,
            reviewer=i.reviewer,
            reviewer_name=i.reviewer_name,
            status=i.status,
            created_at=i.created_at,
            ringing_for_s=round(now - i.created_at, 3),
        )

    async def _ringing(self, now: float, limit: int) -> tuple[list[LiveInvitation], bool]:
        """Invitations pending or ringing now (the ``ringing`` index holds each new one
        until the sweeper marks it unanswered), oldest first."""
        ids = await self.store.index_range("ringing", limit=limit + 1)
        docs = await self.store.get_many([f"invitation:{i}" for i in ids]) if ids else []
        found = [
            Invitation.model_validate(d)
            for d in docs
            if d is not None and d.get("status") in ("pending", "ringing")
        ]
        return [self._invitation(i, now) for i in found[:limit]], len(ids) > limit


def _health(h: dict[str, Any] | None) -> MediaHealth | None:
    return MediaHealth.model_validate(h) if h is not None else None

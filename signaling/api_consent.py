"""The applicant's recording consent (issue #16), registered on import.

Before joining, the applicant's page shows the recording notice and asks for an explicit
answer. ``GET /api/sessions/{sid}/consent`` tells the page what declining means here
(``applicant_consent_declined``: join by voice only, or not at all);
``POST /api/sessions/{sid}/consent`` files the answer in the case timeline as
``consent.given`` or ``consent.declined`` (with what follows: ``audio_only`` or
``leave``), so the case file holds it. Bounded: ``MAX_ANSWERS`` answers per applicant
and session (a changed mind, a reload), then 409 ``consent_limit``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from . import policy
from .api import Ctx, readable_session, route
from .appkeys import CONFIG, STORE
from .core import actor_of
from .errors import Conflict

MAX_ANSWERS = 5  # per applicant and session: enough for a reload or a changed mind
NOTICE = "recording.v1"  # which notice the applicant answered (web_client's text)


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    accepted: bool
    camera: bool = True  # the choice made on the pre-join screen (informative)
    microphone: bool = True


class ConsentPolicy(BaseModel):
    declined: Literal["audio_only", "leave"]  # what declining means on this service
    notice: str = NOTICE


class ConsentFiled(BaseModel):
    accepted: bool
    then: Literal["join", "audio_only", "leave"]
    seq: int  # the event's place in the case timeline


@route(
    "GET",
    "/api/sessions/{session_id}/consent",
    "Read what declining the recording notice means",
    policy.EVERYONE,
    response=ConsentPolicy,
)
async def consent_policy(ctx: Ctx) -> Any:
    session, invitations = await readable_session(ctx)
    policy.can_give_consent(ctx.identity, session, invitations)
    return ConsentPolicy(declined=ctx.request.app[CONFIG].applicant_consent_declined)


@route(
    "POST",
    "/api/sessions/{session_id}/consent",
    "File the applicant's answer to the recording notice",
    policy.EVERYONE,
    body=ConsentBody,
    response=ConsentFiled,
    status=201,
)
async def give_consent(ctx: Ctx) -> Any:
    who, body = ctx.identity, ctx.body
    session, invitations = await readable_session(ctx)
    policy.can_give_consent(who, session, invitations)
    await ctx.service.require_active(session.session_id)
    # One slot per answer, held as long as the token lives: bounded without a sweeper.
    ttl = max(60.0, float(who.exp or 0) - ctx.service.clock())
    store, sid = ctx.request.app[STORE], session.session_id
    for n in range(MAX_ANSWERS):
        if await store.create_ephemeral(f"consent:{sid}:{who.sub}:{n}", {"n": n}, ttl):
            break
    else:
        raise Conflict("consent_limit", "this applicant has answered the notice too often")
    declined = ctx.request.app[CONFIG].applicant_consent_declined
    then = "join" if body.accepted else declined
    event = await ctx.service.record(
        session.case_id,
        "consent.given" if body.accepted else "consent.declined",
        session_id=sid,
        actor=actor_of(who),
        notice=NOTICE,
        then=then,
        camera=body.camera and body.accepted,
        microphone=body.microphone,
    )
    return ConsentFiled(accepted=body.accepted, then=then, seq=event.seq)

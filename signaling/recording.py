"""The control plane's side of recording: policy and consent, the indicator everyone
sees, timeline events, error reports, and sealing the case file when a session ends.

Whether a session is being recorded is one document in the store,
``recording:<session_id>`` = ``{active, policy, since, by}``, so every node answers the
same (the ``joined`` reply carries it). A change is published on the session's topic as
``{"type": "recording", "active": ...}``: every participant's socket shows it, and the
node hosting the session's media starts or stops its recorder on it.

Policies (``recording_policy``): ``always`` — joint reviews are recorded from their
first media to their end, nobody can stop it; ``clerk`` — off until staff send
``recording.start``, and ``recording.stop`` stops it; ``off`` — never recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from recording import archive

from . import policy
from .auth import Identity
from .core import ServiceCore, actor_of
from .errors import Conflict, Forbidden, ServiceError
from .models import Actor

log = logging.getLogger(__name__)

SUPERVISORS = "supervisors"  # bus topic: what supervisors must hear about at once


class RecordingControl:
    def __init__(self, service: ServiceCore, policy_name: str) -> None:
        self.service = service
        self.store = service.store
        self.policy = policy_name
        self.archive_dir = service.archive_dir
        # Called with (case id, session id, manifest) once a case file is sealed: the
        # composite export queues itself here (signaling.exports).
        self.after_seal: list[Callable[[str, str, dict[str, Any]], Awaitable[None]]] = []

    # -- state ------------------------------------------------------------------------
    async def active(self, session_id: str) -> bool:
        doc = await self.store.get(f"recording:{session_id}")
        if doc is not None:
            return bool(doc.get("active"))
        return self.policy == "always"  # recorded from its first media on

    async def _set(
        self, session_id: str, case_id: str, active: bool, actor: Actor | None, reason: str
    ) -> bool:
        """Record the change, the timeline event and the indicator; False: no change."""
        key = f"recording:{session_id}"
        now = self.service.clock()
        by = actor.model_dump() if actor else None
        await self.store.create(key, {"active": False, "policy": self.policy, "since": now})

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if bool(doc.get("active")) == active:
                return None
            return dict(doc, active=active, since=now, by=by, policy=self.policy)

        _, changed = await self.store.update(key, change)
        if not changed:
            return False
        await self.service.record(
            case_id,
            "recording.started" if active else "recording.stopped",
            session_id=session_id,
            actor=actor,
            policy=self.policy,
            reason=reason,
        )
        await self.store.publish(
            f"session:{session_id}",
            {
                "type": "recording",
                "v": 1,
                "session_id": session_id,
                "case_id": case_id,
                "active": active,
                "by": by,
                "reason": reason,
            },
        )
        return True

    # -- from the clerk (WebSocket) -----------------------------------------------------
    async def request(self, who: Identity, session_id: str, active: bool) -> bool:
        """``recording.start`` / ``recording.stop`` from staff; returns the new state."""
        session = await self.service.session(session_id)
        policy.can_manage_session(who, session)
        await self.service.require_active(session_id)
        if self.policy == "off":
            raise Forbidden("recording_disabled", "recording is turned off on this service")
        if self.policy == "always":
            if not active:
                raise Conflict(
                    "recording_required", "joint reviews are always recorded here; it can't stop"
                )
            return True
        await self._set(session_id, session.case_id, active, actor_of(who), "clerk")
        return active

    # -- from the media node ----------------------------------------------------------
    async def room_opening(self, session_id: str) -> str | None:
        """This node starts hosting the session's media: the case id if it must record."""
        if self.policy == "off":
            return None
        try:
            session = await self.service.session(session_id)
        except ServiceError:
            return None
        if session.status != "active":
            return None
        if self.policy == "always":
            await self._set(session_id, session.case_id, True, None, "policy")
            return session.case_id
        return session.case_id if await self.active(session_id) else None

    async def case_of(self, session_id: str) -> str | None:
        try:
            return (await self.service.session(session_id)).case_id
        except ServiceError:
            return None

    async def failed(self, session_id: str, msg: dict[str, Any]) -> None:
        """A recording error: the session (the clerk sees it), supervisors, the timeline."""
        report = {"v": 1, **msg, "type": "recording.error", "session_id": session_id}
        await self.store.publish(f"session:{session_id}", report)
        await self.store.publish(SUPERVISORS, report)
        case_id = msg.get("case_id") or await self.case_of(session_id)
        if case_id:
            await self.service.record(
                case_id,
                "recording.failed",
                session_id=session_id,
                code=msg.get("code"),
                track_id=msg.get("track_id"),
                file=msg.get("file"),
                message=msg.get("message"),
            )

    async def recovered(self, result: dict[str, Any]) -> None:
        """At start: recordings a crash left open were repaired; say so in the timeline."""
        case_id, session_id = result.get("case_id"), result.get("session_id")
        if not case_id or not session_id:
            return
        await self.service.record(
            str(case_id),
            "recording.recovered",
            session_id=str(session_id),
            state="recovered_after_crash",
            files=result.get("recovered", []),
            failed=result.get("failed", []),
        )

    async def session_ended(self, session_id: str) -> dict[str, Any] | None:
        """The session ended and its recording is closed: mark it stopped, then seal."""
        case_id = await self.case_of(session_id)
        if case_id is None:
            return None
        doc = await self.store.get(f"recording:{session_id}")
        if doc is not None and doc.get("active"):
            await self._set(session_id, case_id, False, None, "session_ended")
        return await self.seal(session_id)

    async def seal(self, session_id: str) -> dict[str, Any] | None:
        """Write manifest.json and timeline.jsonl for an ended session; the manifest's
        hash and the chain head go into the store's timeline (``archive.sealed``)."""
        session = await self.service.session(session_id)
        if session.status != "ended":
            return None
        docs = await self.store.read_log(f"case:{session.case_id}:events")
        events = [d for d in docs if d.get("session_id") == session_id]
        events = [e for e in events if e.get("type") != "archive.sealed"]
        try:
            manifest = await asyncio.to_thread(
                archive.write_manifest, self.archive_dir, session.model_dump(), events
            )
        except (OSError, ValueError) as exc:
            log.error("sealing the case file of %s failed: %s", session_id, exc)
            await self.failed(
                session_id,
                {"case_id": session.case_id, "code": "archive_failed", "message": str(exc)},
            )
            return None
        await self.service.record(
            session.case_id,
            "archive.sealed",
            session_id=session_id,
            manifest_sha256=manifest["manifest_sha256"],
            chain_head=manifest["timeline"]["head"],
            files=len(manifest["files"]),
            events=manifest["timeline"]["count"],
        )
        for hook in self.after_seal:
            try:
                await hook(session.case_id, session_id, manifest)
            except Exception:  # the case file is sealed; an export can be run by hand
                log.exception("after sealing %s", session_id)
        return manifest

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

Every ended session is sealed, recorded or not, by exactly one node (the
``sealing:<session>`` claim). The node hosting its media seals it once the track files
are final (``MediaBridge``). A session without a media node (nobody joined, nobody sent
media, or the room closed before the end) is sealed at once by the node that ends it,
from the ``session.ended`` event hook. ``end_session`` puts the session in the
``unsealed`` index before it ends it, and sealing takes it out, so a node that dies in
between leaves it to the sweeper every node runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from recording import archive, track_index
from recording.paths import session_dir
from recording.seal import Sealer

from . import policy, recording_gaps, storage
from .auth import Identity
from .background import stopping
from .core import UNSEALED, ServiceCore, actor_of
from .errors import Conflict, Forbidden, InsufficientStorage, ServiceError
from .models import Actor, Event
from .opinion_sheet import OpinionSheets
from .state import Outage, StoreUnavailable

log = logging.getLogger(__name__)

SUPERVISORS = "supervisors"  # bus topic: what supervisors must hear about at once
SEALING_CLAIM_S = 600.0  # one sealer per session; a sealer that died is replaced after it
SWEEP_EVERY_S = 5.0
# The sweeper leaves a session this long to the nodes that seal it normally.
SWEEP_GRACE_S = 10.0


class RecordingControl:
    def __init__(self, service: ServiceCore, policy_name: str) -> None:
        self.service = service
        self.store = service.store
        self.policy = policy_name
        self.archive_dir = service.archive_dir
        # Called with (case id, session id, manifest) once a case file is sealed: the
        # composite export queues itself here (signaling.export_jobs).
        self.after_seal: list[Callable[[str, str, dict[str, Any]], Awaitable[None]]] = []
        self.node_id = "?"
        self._sweeper: asyncio.Task[None] | None = None
        # Below this much free space in the archive no recording starts (a full disk
        # would silently end it halfway); set by the app from disk_min_free_bytes.
        self.min_free_bytes = 0
        self.quota_bytes = 0  # archive_quota_bytes (signaling/storage.py)
        # The opinion sheet made into each case file as it is sealed (None: none).
        self.sheets: OpinionSheets | None = None
        # The node's seal: its hash and signature on each manifest (None: unsigned).
        self.sealer: Sealer | None = None

    async def check_room(self) -> None:
        """Refuse to start a recording the archive's disk (or quota) has no room for (507)."""
        if self.policy == "off":
            return
        try:
            await storage.check_room(self.archive_dir, self.quota_bytes, self.min_free_bytes)
        except InsufficientStorage:
            log.error("recording refused: no room in %s", self.archive_dir)
            raise

    # -- lifecycle (MediaBridge.start / close) ------------------------------------------
    def start(self, node_id: str) -> None:
        self.node_id = node_id
        self.service.event_hooks.append(self._on_event)
        self._sweeper = asyncio.create_task(self._sweep(), name="seal-sweeper")

    async def close(self) -> None:
        if self._on_event in self.service.event_hooks:
            self.service.event_hooks.remove(self._on_event)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

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
        if active:
            await self.check_room()
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

    async def interrupted(self, session_id: str, reason: str, since: float | None = None) -> None:
        """The session's media host died (at ``since``, default now): if it was
        recording, a gap opens."""
        if await self.active(session_id):
            start = self.service.clock() if since is None else since
            await recording_gaps.open_gap(self.service, session_id, start, reason)

    async def resumed(self, session_id: str, case_id: str) -> None:
        """A recorder started on the session's new host: its gap (if any) is filed."""
        await recording_gaps.close_gap(self.service, case_id, session_id, resumed=True)

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

    # -- sealing ------------------------------------------------------------------------
    async def _on_event(self, event: Event) -> None:
        """The event hook: a session that ended with no media node is sealed here, now
        (before the end is answered, so a replay right after finds it sealed)."""
        if event.type == "session.ended" and event.session_id:
            await self.seal_unhosted(event.session_id)

    async def seal_unhosted(self, session_id: str) -> dict[str, Any] | None:
        """Seal the ended session unless a node hosts its media: that node seals it once
        its files are final (or, if it dies, the recovery at the next start does)."""
        if await self.store.get_ephemeral(f"media-owner:{session_id}") is not None:
            return None
        return await self.seal_once(session_id)

    async def seal_once(self, session_id: str, files_final: bool = False) -> dict[str, Any] | None:
        """Seal the ended session's case file if no other node does; None if another node
        has it, or the session is not ended, or a recording of it is still being written.

        ``files_final``: the caller has just closed the session's recording itself.
        Otherwise an open track index means a writer is still at it (or died: the
        crash repair seals after repairing), and sealing now would vouch for half a file.
        """
        try:
            session = await self.service.session(session_id)
        except ServiceError:
            return None
        if session.status != "ended":
            return None  # (a claim taken now would hold off the real sealer)
        case_id = session.case_id
        if not files_final and await asyncio.to_thread(self._being_written, case_id, session_id):
            return None
        claim = {"node": self.node_id}
        if not await self.store.create_ephemeral(f"sealing:{session_id}", claim, SEALING_CLAIM_S):
            return None
        return await self.session_ended(session_id)

    def _being_written(self, case_id: str, session_id: str) -> bool:
        try:
            index = track_index.load(session_dir(self.archive_dir, case_id, session_id))
        except (OSError, ValueError):
            return False  # no readable track index: nothing is being recorded here
        return index is not None and track_index.is_open(index)

    async def sweep_unsealed(self) -> int:
        """Seal the ended sessions that nobody sealed (their node died, or they ended while
        a recording was still closing); returns how many were sealed here."""
        now = self.service.clock()
        sealed = 0
        for sid in await self.store.index_range(UNSEALED, max_score=now - SWEEP_GRACE_S, limit=50):
            try:
                session = await self.service.session(sid)
            except ServiceError:
                await self.store.index_remove(UNSEALED, sid)
                continue
            if session.status != "ended":
                # Its end never happened (the node died before); a real end adds it again.
                await self.store.index_remove(UNSEALED, sid)
                continue
            docs = await self.store.read_log(f"case:{session.case_id}:events")
            if any(d.get("type") == "archive.sealed" and d.get("session_id") == sid for d in docs):
                await self.store.index_remove(UNSEALED, sid)  # sealed; the removal was lost
                continue
            if await self.seal_unhosted(sid) is not None:
                sealed += 1
        return sealed

    async def _sweep(self) -> None:
        outage = Outage("sealing sweeper", log)
        while not stopping():
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                if count := await self.sweep_unsealed():
                    log.warning("sealed %d case file(s) that their node left unsealed", count)
            except StoreUnavailable as exc:
                outage.failed(exc)
                continue
            except Exception:
                log.exception("sweeping unsealed sessions failed")
            outage.ok()

    async def session_ended(self, session_id: str) -> dict[str, Any] | None:
        """The session ended and its recording is closed: mark it stopped, then seal."""
        case_id = await self.case_of(session_id)
        if case_id is None:
            return None
        # A gap still open: the media never came back before the end.
        await recording_gaps.close_gap(self.service, case_id, session_id, resumed=False)
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
        doc = session.model_dump()
        sheet = self.sheets.for_sealing(doc, events) if self.sheets is not None else None
        try:
            manifest = await asyncio.to_thread(
                archive.write_manifest,
                self.archive_dir,
                doc,
                events,
                before_listing=sheet,
                sealer=self.sealer,
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
            **_seal_facts(manifest),
        )
        await self.store.index_remove(UNSEALED, session_id)
        if sheet is not None and self.sheets is not None:
            await self.sheets.sealed(sheet)
        for hook in self.after_seal:
            try:
                await hook(session.case_id, session_id, manifest)
            except Exception:  # the case file is sealed; an export can be run by hand
                log.exception("after sealing %s", session_id)
        return manifest


def _seal_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """Who signed the manifest, for ``archive.sealed`` (verify: a seal taken out)."""
    seal = manifest.get("seal") or {}
    if not seal.get("key_id"):
        return {}
    return {"seal_key_id": seal["key_id"], "seal_algorithm": seal.get("algorithm")}

"""Records of the control plane and the bodies of the HTTP API (pydantic, no I/O)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .auth import Level, Role
from .directory import ID_PATTERN

CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

SessionStatus = Literal["active", "ended"]
InvitationStatus = Literal["pending", "ringing", "unanswered", "accepted", "declined", "cancelled"]
ParticipantState = Literal["joined", "disconnected", "left"]


class Actor(BaseModel):
    sub: str
    name: str
    role: Role
    dept: str | None = None
    level: Level | None = None


class Session(BaseModel):
    session_id: str
    case_id: str
    status: SessionStatus
    created_at: float
    created_by: Actor
    ended_at: float | None = None
    ended_by: Actor | None = None
    applicant_name: str | None = None
    matter: str | None = None
    window: str | None = None


class Invitation(BaseModel):
    invitation_id: str
    session_id: str
    case_id: str
    # Exactly one of dept / reviewer: a whole department or one named reviewer.
    dept: str | None = None
    level: Level | None = None
    reviewer: str | None = None
    reviewer_name: str | None = None
    status: InvitationStatus
    created_at: float
    created_by: Actor
    rang_at: float | None = None
    unanswered_at: float | None = None
    responded_at: float | None = None
    responded_by: Actor | None = None
    reason: str | None = None
    note: str | None = None
    join_url: str | None = None


class Participant(BaseModel):
    participant_id: str
    session_id: str
    identity: Actor
    state: ParticipantState
    joined_at: float
    left_at: float | None = None
    disconnected_at: float | None = None
    # Bumped on every (re)connection: a timer or socket of an older epoch acts on nothing.
    epoch: int = 0
    resume_hash: str = Field(default="", exclude=True)


class Event(BaseModel):
    seq: int
    ts: float
    type: str
    case_id: str
    session_id: str | None = None
    actor: Actor | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class CaseView(BaseModel):
    """The first page of a case, only of the sessions the caller may read."""

    case_id: str
    sessions: list[Session]
    invitations: list[Invitation]  # of the sessions listed
    events: list[Event]
    opinions: list[Opinion] = Field(default_factory=list)  # of the sessions listed
    snapshots: list[Snapshot] = Field(default_factory=list)  # of the sessions listed
    # More events: GET /api/cases/{case}/events?cursor=...; more sessions (with their
    # invitations): GET /api/cases/{case}/sessions?cursor=... . None: nothing more.
    events_next_cursor: str | None = None
    sessions_next_cursor: str | None = None


class EventPage(BaseModel):
    case_id: str
    events: list[Event]
    next_cursor: str | None = None


class CaseSessionPage(BaseModel):
    case_id: str
    sessions: list[Session]
    invitations: list[Invitation]  # of the sessions listed
    next_cursor: str | None = None


# -- request bodies -------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateInvitationBody(_Body):
    dept: str | None = Field(None, pattern=ID_PATTERN)
    level: Level | None = None
    reviewer: str | None = Field(None, pattern=ID_PATTERN)
    note: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_target(self) -> CreateInvitationBody:
        if (self.dept is None) == (self.reviewer is None):
            raise ValueError("give exactly one of 'dept' or 'reviewer'")
        return self

    def key(self) -> tuple[str | None, str | None]:
        """Who is invited: a department (whatever its level) or a named reviewer."""
        return (self.dept, self.reviewer)


# At most this many invitations in the call that starts a session (the directory holds
# far fewer departments; more would be a mistake or abuse, not a joint review).
START_INVITES_MAX = 20


class CreateSessionBody(_Body):
    applicant_name: str | None = Field(None, max_length=100)
    matter: str | None = Field(None, max_length=500)
    window: str | None = Field(None, max_length=100)
    # Invited at once (signaling/session_start.py): a department's id, or an invitation's
    # body ({dept, level} or {reviewer}, with a note). Validated before anything is created.
    invite: list[Annotated[str, Field(pattern=ID_PATTERN)] | CreateInvitationBody] = Field(
        default_factory=list,
        max_length=START_INVITES_MAX,
        description="invited at once: department ids, or invitation bodies "
        "({dept, level?, note?} or {reviewer, note?}); all checked before anything is created",
    )

    @model_validator(mode="after")
    def _distinct(self) -> CreateSessionBody:
        keys = [t.key() for t in self.targets()]
        if len(set(keys)) != len(keys):
            raise ValueError("'invite' names the same department or reviewer twice")
        return self

    def targets(self) -> list[CreateInvitationBody]:
        return [CreateInvitationBody(dept=t) if isinstance(t, str) else t for t in self.invite]


class DeclineBody(_Body):
    reason: str = Field(min_length=1, max_length=500)


class DemoLoginBody(_Body):
    sub: str = Field(pattern=ID_PATTERN)


class ApplicantLinkBody(_Body):
    name: str | None = Field(None, max_length=100)


Decision = Literal["approve", "materials_missing", "refer", "note"]


class OpinionBody(_Body):
    """A reviewer's formal opinion (会办意见)."""

    decision: Decision
    missing: list[str] = Field(default_factory=list, max_length=50)
    refer_to: str | None = Field(None, pattern=ID_PATTERN)
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _complete(self) -> OpinionBody:
        self.missing = [m.strip() for m in self.missing if m.strip()]
        if any(len(m) > 200 for m in self.missing):
            raise ValueError("each missing item is at most 200 characters")
        if self.decision == "materials_missing" and not self.missing:
            raise ValueError("'materials_missing' needs the list of what is missing")
        if self.decision == "refer" and not self.refer_to:
            raise ValueError("'refer' needs 'refer_to', the department to refer to")
        if self.decision == "note" and not self.note:
            raise ValueError("'note' needs the note")
        return self


class Opinion(BaseModel):
    opinion_id: str
    session_id: str
    case_id: str
    author: Actor
    decision: Decision
    missing: list[str] = Field(default_factory=list)
    refer_to: str | None = None
    note: str | None = None
    created_at: float


class Snapshot(BaseModel):
    """A full-resolution still of a document, shown to everyone and kept in the case."""

    snapshot_id: str
    session_id: str
    case_id: str
    taken_by: Actor
    content_type: str
    size: int
    sha256: str
    created_at: float
    url: str
    path: str = Field(exclude=True)  # within the archive, never sent


class OpinionList(BaseModel):
    opinions: list[Opinion]


class SnapshotList(BaseModel):
    snapshots: list[Snapshot]


# -- responses ------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class StoreCheck(BaseModel):
    ok: bool
    kind: str  # "memory" (journal in data_dir) or "redis"
    error: str | None = None


class DataDirCheck(BaseModel):
    ok: bool  # writable and at least min_free_bytes free
    writable: bool
    free_bytes: int
    min_free_bytes: int  # the setting disk_min_free_bytes
    error: str | None = None


class MediaWorkerCheck(BaseModel):
    worker: int  # its index on the node (media_workers)
    pid: int
    alive: bool  # false between its death and its restart
    rooms: int = 0  # sessions whose media it hosts
    streams: int = 0  # forwarded streams (published track x subscriber)
    cpu: float = 0.0  # its process's CPU, a fraction of one core, over the last seconds
    restarts: int = 0  # times it died and was started again
    recorder: Literal["off", "idle", "running", "stopped"] = "off"


class MediaCheck(BaseModel):
    ok: bool
    enabled: bool  # media_enabled: this node runs the SFU
    rooms: int = 0  # sessions whose media this node hosts now
    recorder: Literal["off", "idle", "running", "stopped"] = "off"
    error: str | None = None
    draining: bool = False  # no new session is placed on this node (jointreview drain)
    workers: list[MediaWorkerCheck] = []  # media_workers > 1: each worker process


class ArchiveCheck(BaseModel):
    """Room in the archive (signaling/storage.py, #18): the disk's and the quota's."""

    ok: bool  # room for a recorded session (else 507 insufficient_storage/archive_quota_full)
    free_bytes: int | None
    total_bytes: int | None
    used_bytes: int | None  # what the archive holds (measured with a quota only)
    quota_bytes: int  # archive_quota_bytes (0: none)
    quota_left_bytes: int | None
    quota_used_ratio: float | None
    min_free_bytes: int


class HealthChecks(BaseModel):
    store: StoreCheck
    data_dir: DataDirCheck
    media: MediaCheck
    archive: ArchiveCheck | None = None


class ProcessFigures(BaseModel):
    """The node process's resources now (Linux /proc; None where unreadable): what a soak
    watches for growth."""

    pid: int
    rss_bytes: int | None
    fds: int | None  # open file descriptors
    threads: int | None
    tasks: int  # asyncio tasks of the event loop


class Health(BaseModel):
    status: Literal["ok", "degraded"]  # ok: every check ok (200); else degraded (503)
    node: str
    state: str
    version: str
    checks: HealthChecks
    process: ProcessFigures | None = None  # with an admin's bearer token only


class SessionResponse(BaseModel):
    session: Session
    invitations: list[Invitation]
    participants: list[Participant]


class CreatedSession(BaseModel):
    session_id: str
    session: Session
    join_url: str
    invitations: list[Invitation] = Field(default_factory=list)  # those of ``invite``


class InvitationList(BaseModel):
    invitations: list[Invitation]


class ApplicantLink(BaseModel):
    url: str
    short_url: str  # /j/<code>: the same link, short (what the QR code carries)
    token: str
    expires_at: int
    qr_svg: str  # the link as a QR code, for a remote applicant's phone


class TokenResponse(BaseModel):
    token: str
    expires_at: int
    identity: dict[str, Any]


class SessionList(BaseModel):
    sessions: list[Session]
    next_cursor: str | None = None


class InvitationPage(BaseModel):
    """Invitations newest first, with when they rang and were answered, and by whom."""

    invitations: list[Invitation]
    next_cursor: str | None = None

"""The signaling wire format: versioned JSON messages, each with a ``type``.

Pure parsing and validation (pydantic), no I/O. ``parse`` turns one text frame into a
typed message or a ``ProtocolError`` with a precise code; docs/protocol.md lists them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

VERSION = 1


class ProtocolError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        ref: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.details = details


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    v: Literal[1] = 1
    # Echoed in the reply (and in an error) so a client can match answers to requests.
    ref: str | None = Field(None, max_length=64)


class Ping(_Msg):
    type: Literal["ping"]


class Join(_Msg):
    type: Literal["join"]
    session_id: str = Field(min_length=1, max_length=64)


class Resume(_Msg):
    type: Literal["resume"]
    resume_token: str = Field(min_length=3, max_length=200)


class Leave(_Msg):
    type: Literal["leave"]


class AcceptInvitation(_Msg):
    type: Literal["invitation.accept"]
    invitation_id: str = Field(min_length=1, max_length=64)


class DeclineInvitation(_Msg):
    type: Literal["invitation.decline"]
    invitation_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class Chat(_Msg):
    type: Literal["chat"]
    text: str = Field(min_length=1, max_length=4000)


class PublishItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mid: str = Field(min_length=1, max_length=32)
    source: Literal["microphone", "camera", "document", "screen"]


class SubscribeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mid: str = Field(min_length=1, max_length=32)
    track_id: str = Field(min_length=1, max_length=100)


class MediaOffer(_Msg):
    """The participant's offer: what each of its m-lines publishes or receives."""

    type: Literal["media.offer"]
    sdp: str = Field(min_length=10, max_length=60_000)
    publish: list[PublishItem] = Field(default_factory=list, max_length=16)
    subscribe: list[SubscribeItem] = Field(default_factory=list, max_length=64)


class MediaSync(_Msg):
    """Ask for the session's published tracks (before offering anything)."""

    type: Literal["media.sync"]


class MediaReady(_Msg):
    """The latest ``media.answer`` is applied: media may flow to its new receivers."""

    type: Literal["media.ready"]


class RecordingStart(_Msg):
    """Staff: start recording the session (policy "clerk")."""

    type: Literal["recording.start"]


class RecordingStop(_Msg):
    """Staff: stop recording the session (policy "clerk")."""

    type: Literal["recording.stop"]


class Refresh(_Msg):
    type: Literal["auth.refresh"]
    token: str = Field(min_length=10, max_length=8192)


ClientMessage = Annotated[
    Ping
    | Join
    | Resume
    | Leave
    | AcceptInvitation
    | DeclineInvitation
    | Chat
    | Refresh
    | MediaOffer
    | MediaSync
    | MediaReady
    | RecordingStart
    | RecordingStop,
    Field(discriminator="type"),
]
CLIENT_TYPES: tuple[str, ...] = (
    "ping",
    "join",
    "resume",
    "leave",
    "invitation.accept",
    "invitation.decline",
    "chat",
    "auth.refresh",
    "media.offer",
    "media.sync",
    "media.ready",
    "recording.start",
    "recording.stop",
)
_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def parse(text: str, max_bytes: int) -> Any:
    """One text frame → one client message, or ProtocolError."""
    size = len(text.encode("utf-8")) if len(text) * 4 > max_bytes else len(text)
    if size > max_bytes:
        raise ProtocolError(
            "message_too_large", f"a message may be at most {max_bytes} bytes, this one is {size}"
        )
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not valid JSON: {exc}") from None
    # JSON lets a \u escape name half a surrogate pair; no UTF-8 file or frame can hold
    # that string, so it would break the journal or the reply that echoes it.
    if "\\u" in text and _has_lone_surrogate(raw):
        raise ProtocolError("bad_json", "not valid JSON text: a \\u escape is a lone surrogate")
    if not isinstance(raw, dict):
        raise ProtocolError("not_an_object", "a message must be a JSON object")
    ref = raw.get("ref") if isinstance(raw.get("ref"), str) else None
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_type", "a message needs a string field 'type'", ref)
    if raw.get("v", VERSION) != VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {raw.get('v')!r} is not supported; use 1",
            ref,
        )
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind[:64]!r}; known: {', '.join(CLIENT_TYPES)}",
            ref,
        )
    try:
        return _adapter.validate_python(raw)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(x) for x in e["loc"][1:]) or e["loc"][0], "problem": e["msg"]}
            for e in exc.errors()
        ]
        first = details[0]
        raise ProtocolError(
            "invalid_message", f"{kind}: {first['field']}: {first['problem']}", ref, details
        ) from None


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False  # NaN and deep nesting are judged by the validation that follows
    return False


def error(
    code: str, message: str, ref: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "v": VERSION, "code": code, "message": message}
    if ref is not None:
        msg["ref"] = ref
    if details:
        msg["details"] = details
    return msg

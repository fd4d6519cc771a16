"""The signaling wire format: versioned JSON messages, each with a ``type``.

Pure parsing and validation (pydantic), no I/O. ``parse`` turns one text frame into a
typed message or a ``ProtocolError`` with a precise code; docs/protocol.md lists them.
"""

from __future__ import annotations

import json
import re
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


class Observe(_Msg):
    """A supervisor watches the session receive-only (signaling/observing.py)."""

    type: Literal["observe"]
    session_id: str = Field(min_length=1, max_length=64)


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
    # The setting chat_max_chars governs (signaling/participants.py); this is only the
    # largest value that setting may take.
    text: str = Field(min_length=1, max_length=20_000)


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
    | RecordingStop
    | Observe,
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
    "observe",
)
_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


# An escaped high or low surrogate: "\\ud83d\\ude00" is a fine emoji once decoded, but a
# lone one decodes to a str that cannot be encoded back to UTF-8 (echoing it would crash).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        # U+0000 too: text that PostgreSQL (the record) refuses as much as UTF-8 does a
        # lone surrogate; on SQLite alone it would pass, and fail a node on PostgreSQL.
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


LONE_SURROGATE = (
    "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff) or a NUL (\\u0000)"
)


def lone_surrogate(text: str, value: Any) -> bool:
    """Whether ``value`` (decoded from ``text``) holds a string that is not valid UTF-8
    or holds U+0000 (JSON can only carry either escaped)."""
    escaped = _ESCAPED_SURROGATE.search(text) or "\\u0000" in text
    return bool(escaped) and _has_lone_surrogate(value)


def loads(text: str) -> Any:
    """Strict JSON: NaN/Infinity and lone surrogates (\\ud800) refused. Every failure is
    a ValueError (a number past Python's 4300-digit limit raises a plain ValueError, not
    a JSONDecodeError) or a RecursionError (nesting too deep)."""
    value = json.loads(text, parse_constant=_no_constant)
    if lone_surrogate(text, value):
        raise ValueError(LONE_SURROGATE)
    return value


def parse(text: str, max_bytes: int) -> Any:
    """One text frame → one client message, or ProtocolError."""
    size = len(text.encode("utf-8")) if len(text) * 4 > max_bytes else len(text)
    if size > max_bytes:
        raise ProtocolError(
            "message_too_large", f"a message may be at most {max_bytes} bytes, this one is {size}"
        )
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("not_an_object", "a message must be a JSON object")
    ref = raw.get("ref") if isinstance(raw.get("ref"), str) else None
    if ref is not None and (len(ref) > 64 or _has_lone_surrogate(ref)):
        ref = None  # not echoed: a reply stays small and encodable whatever came in
    if lone_surrogate(text, raw):
        # Valid JSON syntax, but echoing such a string would fail to encode and kill the
        # socket; pydantic refuses them too, this catches them in keys and extra fields.
        raise ProtocolError("invalid_message", LONE_SURROGATE, ref)
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


def ref_of(text: str, max_bytes: int) -> str | None:
    """The ``ref`` of a frame that will not be processed (refused by a rate limit), so
    the client can match the refusal to its request; None when there is none to read."""
    if len(text) > max_bytes:
        return None
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    ref = raw.get("ref") if isinstance(raw, dict) else None
    if not isinstance(ref, str) or len(ref) > 64 or _has_lone_surrogate(ref):
        return None  # echoed in the refusal: it must encode
    return ref


def error(
    code: str,
    message: str,
    ref: str | None = None,
    details: list[dict[str, Any]] | None = None,
    *,
    retry_after_ms: int | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "v": VERSION, "code": code, "message": message}
    if ref is not None:
        msg["ref"] = ref
    if details:
        msg["details"] = details
    if retry_after_ms is not None:
        msg["retry_after_ms"] = retry_after_ms  # rate_limited: when to try again
    return msg

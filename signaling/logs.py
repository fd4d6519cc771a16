"""The node's log: text or JSON lines (``log_format``), each with the ids of what it is
about, and one ``info`` line per lifecycle step an operator asks about.

- Ids ride on context variables: the HTTP middleware (``request_middleware``) sets the
  request id and the client's address (the one a trusted proxy names,
  ``clientaddr``); the socket endpoint sets the socket id, then the case and session
  once the socket joins one. Tasks started meanwhile inherit them. ``ContextFilter``
  copies them onto every record; a record's own ``extra`` (an event's case and session,
  ``lifecycle_hook``) wins over the context.
- ``JsonFormatter``: one object a line: ``ts``, ``level``, ``logger``, ``msg`` and the
  ids present; ``exc`` with the traceback. Credentials never reach it:
  ``accesslog.RedactFilter`` runs first on the same handler.
- ``lifecycle_hook``: an event hook that writes one ``info`` line per session start and
  end, join and leave, recording start, stop, failure and gap, case file sealed, export
  done or failed; ids only, never names or tokens.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from aiohttp import web

from .clientaddr import client_address
from .models import Event

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
SOCKET_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("socket_id", default=None)
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("client", default=None)
CASE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("case_id", default=None)
SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
FIELDS = {
    "request_id": REQUEST_ID,
    "socket_id": SOCKET_ID,
    "client": CLIENT,
    "case_id": CASE_ID,
    "session_id": SESSION_ID,
}
# A request id a proxy sent along (X-Request-Id) is kept when it looks like one.
REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
QUIET = ("aioice", "aiortc", "fontTools", "alembic")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s"


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


def bind_session(case_id: str | None, session_id: str | None) -> None:
    """The rest of this task (a socket's reader, a media operation) is about this session."""
    CASE_ID.set(case_id)
    SESSION_ID.set(session_id)


class ContextFilter(logging.Filter):
    """Puts the context's ids on each record (as attributes, ``ids`` for the text form)."""

    def filter(self, record: logging.LogRecord) -> bool:
        shown = []
        for name, var in FIELDS.items():
            value = getattr(record, name, None)
            if value is None:
                value = var.get()
                setattr(record, name, value)
            if value is not None:
                shown.append(f"{name}={value}")
        record.ids = f" [{' '.join(shown)}]" if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line (what log collectors read without a parser of ours)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in (*FIELDS, "worker", "event", "participant_id", "reason"):
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


def configure(level: str, fmt: str, worker: int | None = None) -> logging.Handler:
    """The root logger's one handler, on stderr (systemd's journal takes it), in the
    chosen form; returns it (the caller adds ``RedactFilter`` after)."""
    handler = make_handler(fmt, sys.stderr, worker)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level != "debug":
        # Libraries that narrate at info (every ICE check, every font table subset, each
        # migration step's driver chatter): their warnings still show.
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def make_handler(fmt: str, stream: TextIO, worker: int | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = "" if worker is None else f"worker{worker} "
        text = TEXT_FORMAT.replace("%(name)s", prefix + "%(name)s")
        handler.setFormatter(logging.Formatter(text))
    return handler


class _WorkerFilter(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request id (the proxy's ``X-Request-Id`` when it looks like one) and the client's
    address for every line the request writes; the id is sent back in ``X-Request-Id``."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if REQUEST_ID_SHAPE.match(given) else new_id("r-")
    request[REQUEST_KEY] = rid
    REQUEST_ID.set(rid)
    trusted = request.app.get(TRUSTED, ())
    CLIENT.set(client_address(request, trusted))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = rid
        raise
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


TRUSTED = web.AppKey("log_trusted_proxies", tuple)
REQUEST_KEY = web.RequestKey("request_id", str)  # the access log's (accesslog.py)

# -- one line per lifecycle step -------------------------------------------------------

lifecycle_log = logging.getLogger("jointreview.lifecycle")

# event type -> the line's words; what the data adds is named below
LIFECYCLE = {
    "session.created": "session started",
    "session.ended": "session ended",
    "participant.joined": "participant joined",
    "participant.rejoined": "participant rejoined",
    "participant.resumed": "participant resumed",
    "participant.disconnected": "participant disconnected",
    "participant.left": "participant left",
    "recording.started": "recording started",
    "recording.stopped": "recording stopped",
    "recording.failed": "recording failed",
    "recording.gap": "recording gap",
    "archive.sealed": "case file sealed",
    "export.ready": "export done",
    "export.failed": "export failed",
    "observation.started": "observation started",
    "observation.ended": "observation ended",
}
WARNINGS = {"recording.failed", "recording.gap", "export.failed"}
DETAILS = ("participant_id", "reason", "policy", "code", "files", "events", "observation_id")


async def lifecycle_hook(event: Event) -> None:
    """Event hook: the lifecycle line of an event (a no-op for the others)."""
    words = LIFECYCLE.get(event.type)
    if words is None:
        return
    data = event.data
    detail = " ".join(f"{k}={data[k]}" for k in DETAILS if data.get(k) not in (None, ""))
    role = event.actor.role if event.actor is not None else None
    if role and event.type.startswith("participant."):
        detail = f"{detail} role={role}".strip()
    level = logging.WARNING if event.type in WARNINGS else logging.INFO
    lifecycle_log.log(
        level,
        "%s%s",
        words,
        f": {detail}" if detail else "",
        extra={
            "event": event.type,
            "case_id": event.case_id,
            "session_id": event.session_id,
            "participant_id": data.get("participant_id"),
            "reason": data.get("reason"),
        },
    )

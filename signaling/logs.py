"""The node's log: text or JSON lines (``log_format``), each with the ids of what it is
about. Standard library only: the media workers use it too and load no aiohttp.

- Ids ride on context variables: the HTTP middleware (``request_log``) sets the request
  id and the client's address (the one a trusted proxy names); the socket endpoint sets
  the socket id, then the case and session once the socket joins one; a media worker
  the session of each operation. Tasks started meanwhile inherit them.
  ``ContextFilter`` copies them onto every record; a record's own ``extra`` (an event's
  case and session, ``request_log.lifecycle_hook``) wins over the context.
- ``JsonFormatter``: one object a line: ``ts``, ``time``, ``level``, ``logger``, ``msg``
  and the ids present; ``exc`` with the traceback. Credentials never reach it:
  ``accesslog.RedactFilter`` runs first on the node's handler.
"""

from __future__ import annotations

import contextvars
import json
import logging
import secrets
import sys
import time
from typing import Any, TextIO

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

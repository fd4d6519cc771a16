"""What the node writes about requests: one access-log line per request, no credential,
no raw control character; and a filter that keeps tokens out of every other log line.

- The path is the decoded one (``%0A`` is a newline there), rendered with every
  non-printable character, ``"`` and ``\\`` as ``\\xNN``: a request cannot write a
  line of its own or close the quoted field early.
- Grant links (``/api/replay/{grant}``, ``/api/casefile/{grant}``) are bearer
  credentials: their last segment is written ``<grant>``. Query strings are never
  written (``?token=`` on ``/ws``).
- The client is the peer, or the client a trusted proxy names (``trusted_proxies``,
  ``signaling.clientaddr``).
- ``RedactFilter`` (installed on the root handlers by ``jointreview serve``) rewrites
  any record that carries a JWT, a grant, ``token=…`` or ``Bearer …`` or a control
  character (escaped; a traceback stays as it is, redacted), and replaces the
  traceback of a request aiohttp could not parse (its message quotes the client's bytes,
  e.g. the first 100 characters of an oversized ``Authorization`` header) by one line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from .clientaddr import client_address
from .request_log import REQUEST_KEY

GRANT_PATH = re.compile(r"^(/api/(?:replay|casefile)/)[^/]+$")
# A JWT (header.payload.signature) or a grant (payload.signature): base64url of JSON,
# so both begin with ``eyJ`` (``{"``).
CREDENTIAL = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
TOKEN_PARAM = re.compile(r"((?:^|[?&;\s])[A-Za-z_]*token=)[^&\s'\"]+", re.IGNORECASE)
BEARER = re.compile(r"(Bearer)\s+[^\s'\",]+", re.IGNORECASE)
# The socket's subprotocol form (aiohttp logs the offered list when none is known).
BEARER_PROTOCOL = re.compile(r"(bearer\.)[^\s'\",\]]+", re.IGNORECASE)


def escape(text: str, also: str = '"\\') -> str:
    """``text`` with non-printable characters and those in ``also`` as ``\\xNN``
    (``\\uNNNN`` above 0xFF): never a raw newline, tab or escape sequence."""
    out = []
    for ch in text:
        if ch.isprintable() and ch not in also:
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out)


def redact(text: str) -> str:
    """``text`` without tokens, grants or bearer credentials."""
    text = CREDENTIAL.sub("<redacted>", text)
    text = TOKEN_PARAM.sub(r"\1<redacted>", text)
    text = BEARER_PROTOCOL.sub(r"\1<redacted>", text)
    return BEARER.sub(r"\1 <redacted>", text)


def loggable_path(path: str) -> str:
    """A request path fit for the access log (sans-IO: the table test feeds it strings)."""
    return escape(redact(GRANT_PATH.sub(r"\1<grant>", path)))


class AccessLogger(AbstractAccessLogger):
    """One line a request: ``client "METHOD path" status time``; no query string."""

    trusted: tuple[str, ...] = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        client = escape(client_address(request, self.trusted))
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            client,
            escape(request.method),
            loggable_path(request.path),
            response.status,
            time * 1000,
            extra={"request_id": request.get(REQUEST_KEY), "client": client},
        )


def access_logger(trusted_proxies: Iterable[str]) -> type[AccessLogger]:
    """The access-logger class for ``web.run_app``, which instantiates it itself."""
    return type("AccessLogger", (AccessLogger,), {"trusted": tuple(trusted_proxies)})


class RedactFilter(logging.Filter):
    """Keeps credentials out of any log record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.name.startswith("aiohttp"):
            # A request aiohttp could not parse: its message quotes what the client sent.
            summary = f"{type(exc).__name__} ({exc.code}); the request's bytes are not logged"
            record.msg = f"{record.getMessage()}: {summary}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            return True
        message = record.getMessage()
        # One record, one line: whatever a message quotes cannot start a line of its own.
        clean = escape(redact(message), also="")
        if clean != message:
            record.msg = clean
            record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_redaction() -> None:
    """Put ``RedactFilter`` on every handler of the root logger (after ``basicConfig``):
    a handler's filters see the records of every logger that propagates to it."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())

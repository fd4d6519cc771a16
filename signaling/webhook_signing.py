"""What a webhook request carries besides its body: the two signatures, the receiver's
``Retry-After`` read back, and URLs as the admin view shows them (``signaling.webhooks``
sends; this is the part a receiver's author reads in docs/webhooks.md)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
from urllib.parse import urlsplit

import jwt

ISSUER = "jointreview"
# Long enough for clock skew between us and the receiver, short enough that a captured
# request can't be replayed for long.
TOKEN_TTL_S = 300


def sign(body: bytes, secret: str, now: float) -> dict[str, str]:
    """The two signature headers of one request (a fresh JWT for every attempt)."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    claims = {"iss": ISSUER, "iat": int(now), "exp": int(now) + TOKEN_TTL_S, "sha256": digest}
    token = jwt.encode(claims, secret, algorithm="HS256")
    mac = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return {"Authorization": token, "X-JointReview-Signature": f"sha256={mac}"}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def redact(url: str) -> str:
    """A URL as the admin view shows it: credentials and query strings can hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")

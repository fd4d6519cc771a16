"""A command's call to a running node's admin API (``jointreview drain``, ``jointreview
directory reload``): a POST with a short-lived admin token signed with the node's own
key, so an operator on the node's machine needs no token of their own."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from signaling.auth import TokenService
from signaling.config import Config


class AdminCallFailed(Exception):
    """What went wrong, in a line for the operator."""


def post_admin(config: Config, url: str | None, path: str, body: Any, who: str) -> Any:
    """POST ``body`` (JSON) to ``path`` of the node at ``url`` (default: this machine's
    port of the configuration) as admin ``who``; its JSON answer."""
    base = (url or f"http://127.0.0.1:{config.port}").rstrip("/")
    token = TokenService(config).issue(sub=who, role="admin", ttl=60)
    req = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            said = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            said = raw.decode(errors="replace") or exc.reason
        raise AdminCallFailed(f"{exc.code}: {said}") from None
    except OSError as exc:
        raise AdminCallFailed(f"cannot reach {base}: {exc}") from None

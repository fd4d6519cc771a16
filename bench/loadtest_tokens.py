"""Who ``jointreview loadtest`` is: the identities of a run, signed with the deployment's
JWT secret (each run's own subjects, ``lt-<tag>-…``) or taken from a file of tokens made
for it (each token used by one socket only; the file must hold enough of each kind).

A session is its clerk and a reviewer of each of five departments (the deployment's, in
turn); the idle inbox sockets are reviewers spread evenly over the departments."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any


class TokenError(Exception):
    pass


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking the signature (the server checks it)."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError) as exc:
        raise TokenError(f"not a JWT: {token[:20]}… ({exc})") from None


class Identities:
    def __init__(self, sessions: int, idle: int, party: int, ttl: int) -> None:
        self.sessions, self.idle_count, self.party, self.ttl = sessions, idle, party, ttl
        self.tag = "run"
        self.depts: list[dict[str, Any]] = []
        self._signer: Any = None
        self._pool: dict[str, list[str]] = {}  # "clerk", "admin", "dept:<id>" -> tokens
        self._clerks: list[str] = []
        self._participants: list[dict[str, Any]] | None = None
        self._idle: list[tuple[str, str]] | None = None
        self._admin: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, party: int) -> Identities:
        ttl = int(args.seconds + 900 + args.idle_sockets / 20)
        ids = cls(args.sessions, args.idle_sockets, party, ttl)
        if args.jwt_secret_file:
            from signaling.auth import TokenService
            from signaling.config import Config

            try:
                secret = Path(args.jwt_secret_file).read_text().strip()
            except OSError as exc:
                raise TokenError(f"--jwt-secret-file: {exc}") from None
            if not secret:
                raise TokenError("--jwt-secret-file is empty")
            ids._signer = TokenService(Config(jwt_secret=secret))
        else:
            try:
                lines = Path(args.token_file).read_text().split()
            except OSError as exc:
                raise TokenError(f"--token-file: {exc}") from None
            for token in lines:
                claims = claims_of(token)
                role = str(claims.get("role"))
                key = f"dept:{claims.get('dept')}" if role == "reviewer" else role
                ids._pool.setdefault(key, []).append(token)
        return ids

    def _issue(self, sub: str, role: str, dept: dict[str, Any] | None = None) -> str:
        try:
            return str(
                self._signer.issue(
                    sub=f"lt-{self.tag}-{sub}",
                    role=role,
                    name=f"loadtest {sub}",
                    dept=dept["id"] if dept else None,
                    level=dept.get("level") if dept else None,
                    ttl=self.ttl,
                )
            )
        except ValueError as exc:
            raise TokenError(f"cannot sign a token: {exc}") from None

    def _take(self, key: str, what: str) -> str:
        pool = self._pool.get(key) or []
        if not pool:
            raise TokenError(f"--token-file: not enough {what} tokens for these sizes")
        return pool.pop()

    def set_departments(self, depts: list[dict[str, Any]]) -> None:
        if self._signer is None:  # only the departments the file has reviewers of
            depts = [d for d in depts if self._pool.get(f"dept:{d['id']}")]
            if not depts:
                raise TokenError("--token-file: no reviewer of any of the deployment's departments")
        self.depts = depts
        self._plan()

    def _plan(self) -> None:
        """Every token of the run, drawn once (a file runs short here, before any load)."""
        n = len(self.depts)
        people: list[dict[str, Any]] = []
        for s in range(self.sessions):
            clerk = self._issue(f"clerk-{s}", "clerk") if self._signer else self._clerk_token()
            self._clerks.append(clerk)
            people.append({"sub": self._sub(clerk, f"clerk-{s}"), "token": clerk, "session": s})
            for i in range(self.party - 1):
                dept = self.depts[(s + i) % n]
                token = (
                    self._issue(f"rev-{s}-{i}", "reviewer", dept)
                    if self._signer
                    else self._take(f"dept:{dept['id']}", f"{dept['id']} reviewer")
                )
                people.append(
                    {"sub": self._sub(token, f"rev-{s}-{i}"), "token": token, "session": s}
                )
        for k, p in enumerate(people):
            p["ident"] = k % self.party  # the picture each sends says who it is
        self._participants = people
        idle = []
        for k in range(self.idle_count):
            dept = self.depts[k % n]
            token = (
                self._issue(f"idle-{k}", "reviewer", dept)
                if self._signer
                else self._take(f"dept:{dept['id']}", f"{dept['id']} reviewer")
            )
            idle.append((token, str(dept["id"])))
        self._idle = idle

    def _clerk_token(self) -> str:
        if self._pool.get("clerk"):
            return self._take("clerk", "clerk")
        return self._take("admin", "clerk (or admin)")

    def _sub(self, token: str, fallback: str) -> str:
        return str(claims_of(token).get("sub") or fallback)

    def session_departments(self, s: int) -> list[dict[str, Any]]:
        """The departments session ``s`` invites (each once)."""
        n = len(self.depts)
        seen: dict[str, dict[str, Any]] = {}
        for i in range(self.party - 1):
            dept = self.depts[(s + i) % n]
            seen.setdefault(str(dept["id"]), dept)
        return list(seen.values())

    def clerk(self, s: int) -> str:
        return self._clerks[s]

    def participants(self) -> list[dict[str, Any]]:
        assert self._participants is not None
        return self._participants

    def idle(self) -> list[tuple[str, str]]:
        """(token, department) of each idle inbox socket."""
        assert self._idle is not None
        return self._idle

    def admin(self) -> str | None:
        """An admin's token, for the server's own figures in /healthz (None: none known)."""
        if self._admin is None:
            if self._signer is not None:
                self._admin = self._issue("admin", "admin")
            elif self._pool.get("admin"):
                self._admin = self._pool["admin"][0]
        return self._admin

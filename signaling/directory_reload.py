"""Reloading the department directory without a restart.

The directory (signaling/directory.py) is read at start from ``directory_file`` and
handed to the service, supervision, the live overview and the routes as one object. A
reload reads the file again and, only when the whole file is valid, puts its content
into that same object (``Directory.replace_with``): every holder sees the new departments
and users at once, and a bad file changes nothing (the node keeps what it had and says
why). Sessions and invitations in flight keep the department ids they were made with.

A reload is asked for with ``SIGHUP`` (``systemctl reload``), by an admin with
``POST /api/admin/directory/reload`` (signaling/api_directory.py), or by
``jointreview directory reload``. The node that reloads then announces it on the store's
bus (topic ``directory``), and every other node reloads from its own ``directory_file``:
the nodes of one deployment read the same file (a shared path, or the same file copied
to each), and each logs a warning when what it loaded differs from what the announcing
node loaded. Each reload is written to the audit trail (``directory.reloaded``, or
``directory.reload_failed`` with the file's problems).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .appkeys import AUDIT, CONFIG, DIRECTORY, NODE_ID, STORE
from .audit import CURRENT, AuditTrail
from .config import ConfigError
from .directory import Directory, load_directory
from .directory_io import changes, digest
from .state.base import Doc, Store, Subscription

log = logging.getLogger(__name__)

TOPIC = "directory"


class DirectoryReloader:
    """This node's directory: reloads it, announces reloads and follows other nodes'."""

    def __init__(
        self,
        directory: Directory,
        path: Path | None,
        store: Store,
        node_id: str,
        audit: AuditTrail | None = None,
    ) -> None:
        self.directory = directory
        self.path = path
        self.store = store
        self.node_id = node_id
        self.audit = audit
        self.digest = digest(directory)
        self.loaded_at = time.time()
        self.via = "start"
        # Called with the new directory after each reload (the export worker's names).
        self.after_reload: list[Callable[[Directory], None]] = []
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._sub = await self.store.subscribe(TOPIC, self._on_bus)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "file": str(self.path) if self.path else None,
            "digest": self.digest,
            "loaded_at": self.loaded_at,
            "via": self.via,
            "departments": len(self.directory.departments),
            "users": len(self.directory.users),
        }

    async def reload(
        self, via: str, actor: dict[str, Any] | None = None, announce: bool = True
    ) -> dict[str, Any]:
        """Read the file again and take it, or raise ``ConfigError`` naming each problem
        (the directory in force is then unchanged)."""
        async with self._lock:
            try:
                new = await asyncio.to_thread(load_directory, self.path)
            except ConfigError as exc:
                self._audit("directory.reload_failed", actor, via, "failed", {"error": str(exc)})
                log.error(
                    "directory: reload (%s) refused, the directory is unchanged: %s", via, exc
                )
                raise
            depts, users = changes(self.directory, new)
            self.directory.replace_with(new)
            self.digest, self.loaded_at, self.via = digest(new), time.time(), via
            for hook in self.after_reload:
                hook(new)
        counts = {"departments": str(depts), "users": str(users), "digest": self.digest}
        self._audit("directory.reloaded", actor, via, "ok", counts)
        log.info(
            "directory: reloaded from %s (%s): departments %s, users %s",
            self.path or "the packaged directory",
            via,
            depts,
            users,
        )
        if announce:
            await self.store.publish(TOPIC, {"node": self.node_id, "digest": self.digest})
        return {**self.status(), "changes": {"departments": vars(depts), "users": vars(users)}}

    def on_signal(self) -> None:
        """SIGHUP: reload in the background (a bad file is logged and audited)."""
        self._spawn(self._quietly("SIGHUP", announce=True))

    def _on_bus(self, message: Doc) -> None:
        node = str(message.get("node") or "")
        if node and node != self.node_id:
            self._spawn(self._quietly(f"node {node}", announce=False, expect=message.get("digest")))

    async def _quietly(self, via: str, announce: bool, expect: Any = None) -> None:
        with contextlib.suppress(ConfigError):
            await self.reload(via, announce=announce)
            if expect and expect != self.digest:
                log.warning(
                    "directory: this node loaded %s (digest %s), %s loaded digest %s: "
                    "the nodes' directory files differ",
                    self.path,
                    self.digest,
                    via,
                    expect,
                )

    def _spawn(self, coro: Any) -> None:
        # A context of its own: not the request (or bus delivery) that happened to spawn it.
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro, name="directory-reload", context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _audit(
        self,
        action: str,
        actor: dict[str, Any] | None,
        via: str,
        result: str,
        detail: dict[str, Any],
    ) -> None:
        if self.audit is None:
            return
        scope = CURRENT.get()  # an admin's request: this entry stands for it
        if scope is not None:
            scope["audited"] = True
        self.audit.put(
            action,
            actor=actor,
            address=scope["address"] if scope else None,
            obj=str(self.path) if self.path else "packaged directory",
            result=result,
            detail={"via": via, **detail},
        )


RELOADER = web.AppKey("directory_reloader", DirectoryReloader)


async def directory_ctx(app: web.Application) -> AsyncIterator[None]:
    """The reloader in the app, following the bus; SIGHUP reloads (after the store)."""
    reloader = DirectoryReloader(
        app[DIRECTORY], app[CONFIG].directory_file, app[STORE], app[NODE_ID], app.get(AUDIT)
    )
    await reloader.start()
    app[RELOADER] = reloader
    loop = asyncio.get_running_loop()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, reloader.on_signal)
        handled = True
    yield
    if handled:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
    await reloader.close()

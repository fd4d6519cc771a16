"""Typed application keys shared by the app factory and the handlers."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aiohttp import web

from .audit import AuditTrail
from .auth import Identity, TokenService
from .config import Config
from .directory import Directory
from .history.catchup import CatchUp
from .history.repo import History
from .media_port import MediaPort
from .service import ReviewService
from .socketcaps import Guards
from .state import Store

CONFIG = web.AppKey("config", Config)
TOKENS = web.AppKey("tokens", TokenService)
DIRECTORY = web.AppKey("directory", Directory)
STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", ReviewService)
NODE_ID = web.AppKey("node_id", str)
# The media layer, behind its Protocol (the bridge itself is the composition root's).
MEDIA: web.AppKey[MediaPort] = web.AppKey("media")
# Background timers that outlive one request or socket (resume grace periods).
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("tasks")
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
# The audit trail (signaling/audit.py): opened first, closed last.
AUDIT = web.AppKey("audit", AuditTrail)
# The request's verified identity (set where the token is checked): the audit's actor.
WHO = web.RequestKey("who", Identity)
# Socket caps and the rate buckets that outlive one socket (signaling/socketcaps.py).
GUARDS = web.AppKey("guards", Guards)
# The record (signaling/history/): every case event and the rows it implies, in SQL.
HISTORY = web.AppKey("history", History)
# Whether the API's record views read the record (every node's events: one node, or a
# shared database_url) or, several nodes each with its own SQLite file, the live store.
VIEWS_FROM_RECORD = web.AppKey("views_from_record", bool)
# The record's catch-up (signaling/history/catchup.py): its event hook and its task.
CATCH_UP = web.AppKey("catch_up", CatchUp)

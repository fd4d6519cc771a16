"""The aiohttp application factory: the control plane's routes, the media bridge, the
export worker and the UI's files, wired together; every resource opened in a cleanup
context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web

from signaling import (
    api_archive,  # noqa: F401  (registers the case-file download routes)
    api_audit,  # (registers the audit trail's route)
    api_auth,  # noqa: F401  (registers health, demo sign-in, identity and directory)
    api_casefile,  # noqa: F401  (registers the case-file routes)
    api_cases,  # noqa: F401  (registers the case's paginated timeline and sessions)
    api_consent,  # noqa: F401  (registers the applicant's recording consent, #16)
    api_directory,  # noqa: F401  (registers the admin's directory view and reload)
    api_holds,  # noqa: F401  (registers legal hold's routes, #18)
    api_live,  # noqa: F401  (registers the supervisors' live overview)
    api_media,  # noqa: F401  (registers the media placement and drain routes)
    api_replay,  # noqa: F401  (registers the replay routes)
    api_reports,  # noqa: F401  (registers the supervisors' reports over the record)
    api_sheet,  # noqa: F401  (registers the opinion sheet's download)
    api_supervision,  # statistics and exceptions (#15)
    api_track,  # noqa: F401  (registers a case's process tracking)
    api_webhooks,  # noqa: F401  (registers the webhook delivery routes)
    datadir,
    replay,
    request_log,
)
from signaling.api import add_routes, error_middleware
from signaling.appkeys import (
    AUDIT,
    CATCH_UP,
    CONFIG,
    DIRECTORY,
    GUARDS,
    HISTORY,
    MEDIA,
    NODE_ID,
    SERVICE,
    SOCKETS,
    STORE,
    TASKS,
    TOKENS,
    VIEWS_FROM_RECORD,
)
from signaling.auth import TokenService
from signaling.background import stopping
from signaling.config import Config
from signaling.directory import load_directory
from signaling.directory_reload import RELOADER, directory_ctx
from signaling.evict import EVICTOR, Evictor
from signaling.export_jobs import EXPORTS, ExportWorker, options_from
from signaling.export_watermark import watermark_ctx
from signaling.history import db, migrate
from signaling.history.catchup import CatchUp
from signaling.history.raising import Rules
from signaling.history.repo import History
from signaling.inbox_fanout import INBOXES, InboxFanout
from signaling.observation import Observations
from signaling.observing import OBSERVATIONS
from signaling.openapi import build_openapi
from signaling.opinion_sheet import OpinionSheets
from signaling.recording_control import RecordingControl
from signaling.seal_keys import node_sealer
from signaling.service import ReviewService
from signaling.shortlinks import add_short_link_route
from signaling.socketcaps import Guards
from signaling.state import Outage, StoreUnavailable, open_store
from signaling.state.redis_connect import redis_options
from signaling.supervision import Supervision
from signaling.web_security import install as install_web_security
from signaling.webhooks import WEBHOOKS, Webhooks
from signaling.ws_endpoint import websocket_handler
from web_client import add_static_routes

from . import metrics
from .governance import retention_ctx
from .media_bridge import MediaBridge
from .media_hosts import media_settings
from .media_registry import MediaTimings

log = logging.getLogger(__name__)


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # The case files go there with Redis too; healthz checks it is writable.
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = None
    if not config.redis_url:
        # One journal, one writer: taken before the store opens, or refused (DataDirBusy,
        # naming the holder). With Redis, data_dir holds only the archive (shared by
        # nodes) and the secrets, so nothing is locked.
        lock = datadir.take_data_dir(config.data_dir)
    try:
        started = time.perf_counter()
        datadir.secure_data_dir(config.data_dir, single_node=lock is not None)
        log.info("data dir secured in %.3f s", time.perf_counter() - started)
        # The local/Redis choice is made here, once.
        store = await open_store(config.redis_url, config.data_dir, redis_options(config))
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    if lock is not None:
        # The umask covers the server; a store opened in-process (tests) is closed too.
        datadir.tighten_tree(config.data_dir / "state")
        await replay.use_local_key(store, datadir.ensure_grant_key(config.data_dir))
    app[STORE] = store
    service = ReviewService(
        store,
        app[DIRECTORY],
        base_url=config.base_url,
        resume_grace_s=config.resume_grace_s,
        ring_timeout_s=config.ring_timeout_s,
        archive_dir=config.data_dir / "archive",
    )
    service.node_id = app[NODE_ID]
    service.session_idle_end_s = config.broken_off_after_s
    app[OBSERVATIONS] = Observations(service, config.observation, app[NODE_ID], app.get(AUDIT))
    app[SERVICE] = service
    app[INBOXES] = InboxFanout(service)  # one bus subscription per inbox topic per node
    service.event_hooks.append(request_log.lifecycle_hook)  # an info line per lifecycle step
    api_audit.hook_events(app)  # replays and downloads mirrored into the audit trail
    service.chat_max_chars = config.chat_max_chars
    service.chat_per_minute = config.chat_per_minute_per_session
    log.info("state: %s", store.kind)
    yield
    await app[INBOXES].close()
    await store.close()
    if lock is not None:
        lock.close()


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The record in SQL (SQLite in data_dir, or database_url), checked against this
    code's schema before anything is written (a newer database is refused)."""
    config = app[CONFIG]
    url = db.url_of(config.database_url, config.data_dir)
    rev = await migrate.check(url)
    rules = Rules(
        config.exception_long_wait_s, config.exception_media_loss, config.exception_media_frozen_s
    )
    history = await History.open(url, rules)
    log.info("record: %s at revision %s", db.kind_of(url), rev)
    app[HISTORY] = history
    # Several nodes on Redis each with its own SQLite file: each record holds only its
    # node's events, so the API's views read the (shared) live store, as before.
    app[VIEWS_FROM_RECORD] = not config.redis_url or bool(config.database_url)
    if not app[VIEWS_FROM_RECORD]:
        log.warning(
            "the record is this node's own SQLite file while the live state is shared "
            "(redis_url): set database_url (PostgreSQL) on every node, so they file one "
            "record and the views read it; until then they read the live store"
        )
    # First of the hooks: every event is in the record before webhooks or exports see it;
    # while the database is away, its case is marked behind and caught up later. Events a
    # node filed in the store but not in the record (it died in between) are caught up by
    # the time their session is sealed: the unsealed sessions' cases now, and a case again
    # when one of its sessions ends.
    catch_up = app[CATCH_UP] = CatchUp(app[STORE], history, in_flight=app[SERVICE].in_flight)
    app[SERVICE].event_hooks.insert(0, catch_up.hook)
    await catch_up.mark_unsealed()
    app[SERVICE].archived = history  # sessions gone from the store (signaling/evict.py)
    catch_up.start()
    # Exceptions raised as events are filed: pushed to supervisors, in the timeline.
    supervision = app[api_supervision.SUPERVISION] = Supervision(
        app[SERVICE], history, app[DIRECTORY]
    )
    yield
    await catch_up.close()
    await supervision.close()
    await history.close()  # after every context that may still file events


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    hooks = Webhooks(app[STORE], config, app[NODE_ID], archive_dir=config.data_dir / "archive")
    app[WEBHOOKS] = hooks
    # Queued from every recorded event; closed after the contexts below, whose own
    # shutdown may still record events (a session sealed as media stops).
    app[SERVICE].event_hooks.append(hooks.on_event)
    await hooks.start()
    yield
    await hooks.close()


async def _media_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = media_settings(config) if config.media_enabled else None
    # A node without media records nothing (and says so); it still seals case files.
    policy = config.recording_policy if config.media_enabled else "off"
    recording = RecordingControl(app[SERVICE], policy)
    recording.min_free_bytes = config.disk_min_free_bytes
    recording.quota_bytes = config.archive_quota_bytes
    font = str(config.opinion_sheet_font) if config.opinion_sheet_font else None
    recording.sheets = OpinionSheets(app[SERVICE], font, config.opinion_sheet_timezone)
    recording.sheets.check()
    recording.sealer = await asyncio.to_thread(node_sealer, config, app[NODE_ID])
    bridge = MediaBridge(
        app[STORE],
        app[NODE_ID],
        settings,
        recording,
        config.recording_queue_packets,
        config.recording_keyframe_s,
        workers=media_workers(config),
        loop_kind=config.event_loop,
        log_level=config.log_level,
        log_format=config.log_format,
        timings=MediaTimings.of(config),
    )
    await bridge.start()
    app[MEDIA] = bridge
    # SIGUSR1 drains the node (no new sessions), SIGUSR2 ends the drain.
    loop = asyncio.get_running_loop()
    signals = {signal.SIGUSR1: True, signal.SIGUSR2: False}
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        for signum, on in signals.items():
            loop.add_signal_handler(signum, bridge.set_draining, on)
    yield
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signum)
    await bridge.close()


def media_workers(config: Config) -> int:
    """media_workers, or one per core this process may run on (its affinity, which
    containers and taskset narrow)."""
    if config.media_workers:
        return config.media_workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


async def _exports_ctx(app: web.Application) -> AsyncIterator[None]:
    """The composite-export worker: queued on sealing, resumed after a restart."""
    config = app[CONFIG]
    names = {d.id: d.name for d in app[DIRECTORY].departments}
    worker = ExportWorker(
        app[STORE],
        config.data_dir / "archive",
        app[NODE_ID],
        options_from(config, names),
        workers=config.export_workers,
        delay_s=config.export_delay_s,
    )
    worker.event_hooks = app[SERVICE].event_hooks  # one list: webhooks see exports too
    app[RELOADER].after_reload.append(  # names burned into later exports
        lambda d: worker.options.dept_names.update({x.id: x.name for x in d.departments})
    )
    worker.floor = app[HISTORY].last_seq
    recording = app[MEDIA].recording
    if recording is not None:
        recording.after_seal.append(worker.sealed)
    await worker.start()
    app[EXPORTS] = worker
    yield
    await worker.close()


async def _evict_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sealed sessions leave the live store once the record holds them (after the
    export is queued: the last sealing hook), and a sweeper catches the rest."""
    evictor = app[EVICTOR] = Evictor(app[SERVICE], app[HISTORY])
    if not app[VIEWS_FROM_RECORD]:
        # Nodes sharing Redis, each with its own SQLite record: the views read the live
        # store, which must then keep every session (set database_url to evict).
        yield
        return
    recording = app[MEDIA].recording
    if recording is not None:
        recording.after_seal.append(evictor.sealed)
    app[SERVICE].event_hooks.append(evictor.on_event)
    app[CATCH_UP].caught_up.append(evictor.caught_up)
    evictor.start()
    yield
    app[SERVICE].event_hooks.remove(evictor.on_event)
    app[CATCH_UP].caught_up.remove(evictor.caught_up)
    await evictor.close()


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TASKS] = set()
    yield
    running: set[asyncio.Task[Any]] = app[TASKS]
    tasks = list(running)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


async def _sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Timeouts that must fire even if the node that started them died: every node
    sweeps, and the store's compare-and-set makes each happen once."""
    config = app[CONFIG]
    every = max(0.05, min(2.0, config.resume_grace_s / 4, config.ring_timeout_s / 4))

    if config.broken_off_after_s > 0:
        every = max(0.05, min(every, config.broken_off_after_s / 4))

    async def sweep() -> None:
        service = app[SERVICE]
        outage = Outage("sweeper", log)  # once per outage, not a traceback per sweep
        while not stopping():
            await asyncio.sleep(every)
            try:
                await service.sweep_disconnected()
                await service.sweep_unanswered()
                await service.sweep_idle()
                await app[CATCH_UP].mark_unsealed()  # a dead node's, before they are sealed
            except StoreUnavailable as exc:
                outage.failed(exc)
                continue
            except Exception:
                log.exception("sweep failed")
            outage.ok()

    # Slots this node held when it stopped (kill -9, power loss) have no socket any more:
    # into their grace period, which the sweep above ends. A single node is alone.
    if config.redis_url and not config.node_id:
        log.warning(
            "node_id is not set: after a crash this node (named %s now) will not recognise "
            "the participant slots it held; give each node a stable node_id",
            app[NODE_ID],
        )
    dropped = await app[SERVICE].recover_ghosts(alone=not config.redis_url)
    await app[OBSERVATIONS].recover(alone=not config.redis_url)  # their sockets are gone
    if dropped:
        log.warning("%d participant slot(s) left joined by the last run: disconnected", dropped)

    task = asyncio.create_task(sweep(), name="sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_message_bytes)
    app[CONFIG] = config
    install_web_security(app)  # security headers, Origin allow-list
    app[TOKENS] = TokenService(config)
    app[DIRECTORY] = load_directory(config.directory_file)
    app[NODE_ID] = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
    app[SOCKETS] = weakref.WeakSet()
    app.middlewares.insert(0, api_audit.audit_middleware)  # outermost: sees every answer
    app.middlewares.insert(0, request_log.request_middleware)  # request id and client on every line
    app[request_log.TRUSTED] = tuple(config.trusted_proxies)
    app[GUARDS] = Guards(config)  # socket caps and rate buckets (signaling/socketcaps.py)
    # Cleanup runs in reverse: timers are cancelled before the store they use closes.
    app.cleanup_ctx.append(api_audit.audit_ctx)  # first: every other context can record
    app.cleanup_ctx.append(_state_ctx)
    app.cleanup_ctx.append(directory_ctx)  # reload: SIGHUP, admin API, other nodes
    app.cleanup_ctx.append(_history_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(_media_ctx)
    app.cleanup_ctx.append(_exports_ctx)
    app.cleanup_ctx.append(watermark_ctx)  # people's watermarked copies (#18)
    app.cleanup_ctx.append(_evict_ctx)
    app.cleanup_ctx.append(_tasks_ctx)
    app.cleanup_ctx.append(_sweeper_ctx)
    app.cleanup_ctx.append(retention_ctx)  # the purge of what retention lets go (#18)
    metrics.install(app)  # /metrics (docs/operations.md); its context is the last
    app.on_shutdown.append(_close_sockets)
    openapi: dict[str, Any] = build_openapi()

    async def openapi_handler(request: web.Request) -> web.Response:
        return web.json_response(openapi)

    app.router.add_get("/api/openapi.json", openapi_handler)
    app.router.add_get("/ws", websocket_handler)
    add_routes(app)
    add_short_link_route(app)  # /j/<code>: the applicant's short link (#16)
    add_static_routes(app, login_page=config.demo_on)
    return app

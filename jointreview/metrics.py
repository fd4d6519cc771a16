"""The node's Prometheus metrics at ``/metrics`` (docs/operations.md lists them).

Most figures are read when Prometheus scrapes, from state the node keeps anyway: the
media hosts' totals (``media_server.counters``, reported by each media worker over its
channel with the load report every second, ``media_ops.figures``), the open sockets, the
webhook attempts, the store's outages. Nothing on the forwarding path knows Prometheus.
What only happens as an event (sessions, joins, recording failures and gaps, answers to
invitations) is counted by an event hook; a background probe times the store and the
event loop's lag every few seconds.

Workers report to the node rather than running prometheus-client's multiprocess mode: the
channel exists already and carries a load report every second, a worker needs no shared
directory nor cleanup when it dies and is started again, and the figures keep the
``worker`` label (bounded: one per core) so a restarted worker's counters reset as a
Prometheus counter may. No label names a session, case or person.

``/metrics`` is served on the main port to an operator's token (``policy.may_read_process``,
as ``/healthz``'s process figures), or, with ``metrics_listen``, on a listener of its own
without a token (bind it where only the monitoring network reaches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from signaling import policy
from signaling.api import bearer_token, json_error
from signaling.appkeys import CONFIG, MEDIA, SERVICE, SOCKETS, STORE, TOKENS
from signaling.auth import AuthError
from signaling.export_jobs import EXPORTS, QUEUE
from signaling.export_watermark import WATERMARKS
from signaling.models import Event
from signaling.state import StoreUnavailable
from signaling.storage import disk_space
from signaling.webhooks import WEBHOOKS

from .media_bridge import MediaBridge

log = logging.getLogger(__name__)

LAG_EVERY_S = 0.5  # the loop-lag probe's sleep
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)  # export-like jobs (s)
STORE_EVERY_S = 5.0  # the store probe (a ping and the export queue's length)

# (name, help) of each media host counter, by its key in ``counters.Counts``
MEDIA_COUNTERS = {
    "packets_in": ("jointreview_media_packets_received", "RTP packets from publishers"),
    "bytes_in": ("jointreview_media_received_bytes", "RTP bytes from publishers"),
    "packets_out": ("jointreview_media_packets_sent", "RTP packets forwarded to subscribers"),
    "bytes_out": ("jointreview_media_sent_bytes", "RTP bytes forwarded to subscribers"),
    "dropped_out": ("jointreview_media_packets_dropped", "packets the sender could not send"),
    "nacks_in": ("jointreview_media_nacks_received", "NACKs from subscribers"),
    "keyframe_requests_in": (
        "jointreview_media_keyframe_requests_received",
        "PLI and FIR from subscribers",
    ),
    "nacks_out": ("jointreview_media_nacks_sent", "NACKs sent to publishers"),
    "plis_out": ("jointreview_media_plis_sent", "keyframe requests (PLI) sent to publishers"),
    "rtx_out": ("jointreview_media_retransmissions", "packets resent to subscribers (NACK)"),
    "lost": ("jointreview_media_lost_packets", "publishers' packets never received (repair)"),
    "freezes": ("jointreview_media_freezes", "video stops over 1 s, as the server received it"),
    "keyframe_waits": ("jointreview_media_keyframe_waits", "video legs that waited for a keyframe"),
    "peers": ("jointreview_media_connections", "media connections opened"),
    "rooms": ("jointreview_media_rooms_opened", "sessions' media opened on this host"),
    "tracks": ("jointreview_media_tracks_published", "tracks published"),
}
MEDIA_GAUGES = {
    "rooms": ("jointreview_media_rooms", "sessions whose media this host runs"),
    "peers": ("jointreview_media_participants", "participants connected to this host's media"),
    "legs": ("jointreview_media_forwarded_streams", "subscriber legs (a track to a participant)"),
    "keyframe_waiting": ("jointreview_media_keyframe_waiting_legs", "legs waiting for a keyframe"),
}
RECORDER_COUNTERS = {
    "packets": ("jointreview_recording_packets", "packets handed to the recorder"),
    "dropped": ("jointreview_recording_dropped_packets", "packets the recorder's queue dropped"),
    "errors": ("jointreview_recording_write_errors", "track files the writer failed"),
    "bytes": ("jointreview_recording_written_bytes", "bytes of track files made final"),
}


class _Scraped(Collector):
    """What is read at scrape time (see the module's docstring)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        yield GaugeMetricFamily(
            "jointreview_sockets", "open WebSockets", value=len(app.get(SOCKETS, ()))
        )
        yield CounterMetricFamily(
            "jointreview_store_errors",
            "store outages met (StoreUnavailable)",
            value=StoreUnavailable.raised,
        )
        yield from _disk(app[CONFIG].data_dir, app[CONFIG].disk_min_free_bytes)
        hooks = app.get(WEBHOOKS)
        attempts = CounterMetricFamily(
            "jointreview_webhook_deliveries",
            "webhook attempts by the status they left the delivery in (pending: retried)",
            labels=["status"],
        )
        for status in ("delivered", "failed", "pending"):
            attempts.add_metric([status], hooks.outcomes.get(status, 0) if hooks else 0)
        yield attempts
        copies = app.get(WATERMARKS)
        yield GaugeMetricFamily(
            "jointreview_watermark_copies_pending",
            "watermarked copies queued or being made on this node",
            value=copies.pending() if copies is not None else 0,
        )
        bridge = app.get(MEDIA)
        if isinstance(bridge, MediaBridge) and bridge.hosts:
            yield from _media(bridge.hosts)


def _disk(data_dir: Path, min_free: int) -> Iterator[Metric]:
    """The data dir's free space (recordings, case files, the journal) and the floor
    below which the node records nothing (``disk_min_free_bytes``)."""
    free, total = disk_space(data_dir)
    if free is not None and total is not None:
        yield GaugeMetricFamily(
            "jointreview_data_dir_free_bytes", "free space in data_dir", value=free
        )
        yield GaugeMetricFamily(
            "jointreview_data_dir_size_bytes", "size of data_dir's file system", value=total
        )
    yield GaugeMetricFamily(
        "jointreview_data_dir_min_free_bytes", "disk_min_free_bytes", value=min_free
    )


def _media(hosts: list[Any]) -> Iterator[Metric]:
    counters = {
        k: CounterMetricFamily(n, h, labels=["worker"]) for k, (n, h) in MEDIA_COUNTERS.items()
    }
    gauges = {k: GaugeMetricFamily(n, h, labels=["worker"]) for k, (n, h) in MEDIA_GAUGES.items()}
    tracks = GaugeMetricFamily(
        "jointreview_media_tracks", "published tracks", labels=["worker", "kind"]
    )
    recorder = {
        k: CounterMetricFamily(n, h, labels=["worker"]) for k, (n, h) in RECORDER_COUNTERS.items()
    }
    queued = GaugeMetricFamily(
        "jointreview_recording_queue_packets", "packets waiting for the writer", labels=["worker"]
    )
    cpu = CounterMetricFamily(
        "jointreview_media_cpu_seconds", "CPU of the media host's process", labels=["worker"]
    )
    up = GaugeMetricFamily(
        "jointreview_media_worker_up", "1: the media host runs", labels=["worker"]
    )
    restarts = CounterMetricFamily(
        "jointreview_media_worker_restarts", "media workers started again", labels=["worker"]
    )
    lag = GaugeMetricFamily(
        "jointreview_media_loop_lag_seconds", "a media worker's event-loop lag", labels=["worker"]
    )
    for host in hosts:
        w = str(host.index)
        up.add_metric([w], 1.0 if host.alive else 0.0)
        restarts.add_metric([w], host.restarts)
        stats = host.stats()
        fig = stats.get("metrics") or {}
        for key, value in (fig.get("counters") or {}).items():
            if key in counters:
                counters[key].add_metric([w], value)
        gauge_values = fig.get("gauges") or {}
        for key, family in gauges.items():
            family.add_metric([w], gauge_values.get(key, 0))
        for kind in ("audio", "video"):
            tracks.add_metric([w, kind], gauge_values.get(f"{kind}_tracks", 0))
        if "cpu_seconds" in fig:
            cpu.add_metric([w], fig["cpu_seconds"])
        rec = fig.get("recorder")
        if rec:
            for key, counter in recorder.items():
                counter.add_metric([w], rec.get(key, 0))
            queued.add_metric([w], rec.get("queued", 0))
        if "loop_lag_s" in stats:
            lag.add_metric([w], stats["loop_lag_s"])
    yield from counters.values()
    yield from gauges.values()
    yield from (tracks, cpu, up, restarts, lag, queued)
    yield from recorder.values()


class NodeMetrics:
    """One node's registry (its own: tests run several apps in one process)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        r = self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        r.register(_Scraped(app))
        self.events = Counter("jointreview_events", "events filed, by type", ["type"], registry=r)
        self.sessions_started = Counter(
            "jointreview_sessions_started", "sessions started", registry=r
        )
        self.sessions_ended = Counter("jointreview_sessions_ended", "sessions ended", registry=r)
        self.joins = Counter("jointreview_participant_joins", "participants joined", registry=r)
        self.leaves = Counter(
            "jointreview_participant_leaves", "participants left, by reason", ["reason"], registry=r
        )
        self.recording_failures = Counter(
            "jointreview_recording_failures", "recording.failed events", registry=r
        )
        self.recording_gaps = Counter(
            "jointreview_recording_gaps", "recordings cut by a lost media host", registry=r
        )
        self.sealed = Counter("jointreview_casefiles_sealed", "case files sealed", registry=r)
        self.ring_to_answer = Histogram(
            "jointreview_invitation_ring_to_answer_seconds",
            "from an invitation ringing (or its creation) to its answer",
            ["outcome"],
            buckets=(2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
            registry=r,
        )
        self.exports = Histogram(
            "jointreview_export_job_duration_seconds",
            "composite-export jobs run on this node, by outcome",
            ["outcome"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.copies = Histogram(
            "jointreview_watermark_copy_duration_seconds",
            "watermarked copies of a composite made on this node, by outcome",
            ["outcome"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.export_queue = Gauge(
            "jointreview_export_queue_jobs", "export jobs not yet done (all nodes)", registry=r
        )
        self.store_latency = Histogram(
            "jointreview_store_latency_seconds",
            "the store's answer to a ping (every 5 s)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.store_up = Gauge(
            "jointreview_store_up", "1: the store answered the last ping", registry=r
        )
        self.loop_lag = Histogram(
            "jointreview_event_loop_lag_seconds",
            "how late the control process's event loop ran a timer",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.loop_lag_now = Gauge(
            "jointreview_event_loop_lag_last_seconds", "the last loop-lag sample", registry=r
        )
        for outcome in ("accepted", "declined"):
            self.ring_to_answer.labels(outcome)  # present at 0 before the first answer
        for outcome in ("ready", "failed"):
            self.exports.labels(outcome)
        for outcome in ("done", "failed"):
            self.copies.labels(outcome)
        for reason in ("left", "connection_lost", "session_ended"):
            self.leaves.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def on_event(self, event: Event) -> None:
        """Event hook: the counts of what only happens as an event."""
        t = event.type
        self.events.labels(t).inc()
        if t == "session.created":
            self.sessions_started.inc()
        elif t == "session.ended":
            self.sessions_ended.inc()
        elif t == "participant.joined":
            self.joins.inc()
        elif t == "participant.left":
            reason = str(event.data.get("reason") or "left")
            self.leaves.labels(
                reason if reason in ("connection_lost", "session_ended") else "left"
            ).inc()
        elif t == "recording.failed":
            self.recording_failures.inc()
        elif t == "recording.gap":
            self.recording_gaps.inc()
        elif t == "archive.sealed":
            self.sealed.inc()
        elif t in ("invitation.accepted", "invitation.declined"):
            await self._answered(event, t.split(".")[1])

    async def _answered(self, event: Event, outcome: str) -> None:
        iid = event.data.get("invitation_id")
        try:
            doc = await self.app[STORE].get(f"invitation:{iid}") if iid else None
        except StoreUnavailable:
            return  # (an outage is counted and logged where it is met)
        if not doc:
            return
        start = doc.get("rang_at") or doc.get("created_at")
        answered = doc.get("responded_at") or event.ts
        if start is not None:
            self.ring_to_answer.labels(outcome).observe(max(0.0, float(answered) - float(start)))

    async def probe(self) -> None:
        """Loop lag every ``LAG_EVERY_S``; the store's ping and the export queue every
        ``STORE_EVERY_S``."""
        loop = asyncio.get_running_loop()
        next_store = 0.0
        while True:
            began = loop.time()
            await asyncio.sleep(LAG_EVERY_S)
            lag = max(0.0, loop.time() - began - LAG_EVERY_S)
            self.loop_lag.observe(lag)
            self.loop_lag_now.set(lag)
            if loop.time() >= next_store:
                next_store = loop.time() + STORE_EVERY_S
                await self._probe_store()

    async def _probe_store(self) -> None:
        store = self.app[STORE]
        began = time.perf_counter()
        ok = await store.ping()
        self.store_latency.observe(time.perf_counter() - began)
        self.store_up.set(1.0 if ok else 0.0)
        if ok:
            with contextlib.suppress(StoreUnavailable):
                self.export_queue.set(await store.job_count(QUEUE))


METRICS = web.AppKey("metrics", NodeMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    app = request.app
    metrics = app.get(METRICS)
    if metrics is None:
        raise web.HTTPNotFound()
    if not app.get(_OPEN, False):
        # The main port: an operator's token, as /healthz's process figures.
        try:
            who = app[TOKENS].verify(bearer_token(request))
        except AuthError as exc:
            return json_error(401, exc.code, exc.message)
        if not policy.may_read_process(who):
            return json_error(403, "forbidden", "the metrics are for operators (admin)")
    body = await asyncio.to_thread(metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_OPEN = web.AppKey("metrics_open", bool)  # the metrics listener's own app: no token


def install(app: web.Application) -> None:
    """``/metrics`` on the main port, unless ``metrics_listen`` moves it."""
    app.cleanup_ctx.append(metrics_ctx)
    if not app[CONFIG].metrics_listen:
        app.router.add_get("/metrics", metrics_handler)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS] = NodeMetrics(app)
    app[SERVICE].event_hooks.append(metrics.on_event)
    exports = app.get(EXPORTS)
    if exports is not None:
        exports.observe = lambda outcome, s: metrics.exports.labels(outcome).observe(s)
    copies = app.get(WATERMARKS)
    if copies is not None:
        copies.observe = lambda outcome, s: metrics.copies.labels(outcome).observe(s)
    probe = asyncio.create_task(metrics.probe(), name="metrics-probe")
    runner = None
    if config.metrics_listen:
        host, _, port = config.metrics_listen.rpartition(":")
        own = web.Application()
        own[METRICS] = metrics
        own[_OPEN] = True
        own.router.add_get("/metrics", metrics_handler)
        runner = web.AppRunner(own, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        log.info("metrics on http://%s/metrics", config.metrics_listen)
    yield
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    if runner is not None:
        await runner.cleanup()
    with contextlib.suppress(ValueError):
        app[SERVICE].event_hooks.remove(metrics.on_event)

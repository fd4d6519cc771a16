"""Metrics and logs (#17 items 1 and 2) of a real ``jointreview serve`` node with two media
workers, after a real session with media (two aiortc participants, recorded, sealed):

- ``/metrics`` answers an operator's token only, passes Debian's ``promtool check
  metrics``, and counts the session's media across the worker processes;
- the JSON log holds one line per lifecycle step with its ids (request, socket, case,
  session, worker) and no token;
- ``promtool check rules`` accepts deploy/prometheus's alert rules, and the Grafana
  dashboard asks only for metrics the node serves.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.bot import Bot
from jointreview.app import create_app
from signaling import logs
from signaling.auth import TokenService

from .conftest import ServerProcess, Tokens, auth, free_port, make_config
from .test_media_workers import Factory, _json, _pair, _read_json, _until, tokens

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # Part of the test setup (Debian's prometheus package, scripts/setup --test): no skip.
    assert PROMTOOL is not None, "promtool missing: run scripts/setup --test"
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def total(values: dict[str, float], name: str) -> float:
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


async def scrape(http: aiohttp.ClientSession, node: ServerProcess, token: str | None) -> Any:
    headers = auth(token) if token else {}
    async with http.get(f"{node.url}/metrics", headers=headers) as res:
        return res.status, await res.text()


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # every log line is one JSON object
    return out


async def test_metrics_and_logs_of_a_recorded_session_with_media(
    server_factory: Factory, tmp_path: Path
) -> None:
    env = {
        "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
        "JR_MEDIA_WORKERS": "2",
        "JR_LOG_FORMAT": "json",
        "JR_LOG_LEVEL": "info",
    }
    node = server_factory(env=env)
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        assert (await scrape(http, node, None))[0] == 401
        assert (await scrape(http, node, clerk))[0] == 403
        async with http.post(
            f"{node.url}/api/cases/OPS-1/sessions", json={}, headers=auth(clerk)
        ) as res:
            assert res.status == 201
            sid = (await res.json())["session_id"]
            request_id = res.headers["X-Request-Id"]
        try:
            bots = await _pair(node.url, t, sid, (1, 2))

            async def forwarded() -> bool:
                values = samples((await scrape(http, node, admin))[1])
                return total(values, "jointreview_media_packets_sent_total") > 100

            await _until("the workers report forwarded packets", forwarded)
        finally:
            for bot in bots:
                await bot.close()
        await _json(http, "POST", f"{node.url}/api/sessions/{sid}/end", clerk)
        manifest = node.data_dir / "archive" / "OPS-1" / sid / "manifest.json"

        async def sealed() -> Any:
            return await asyncio.to_thread(_read_json, manifest)

        await _until("the case file is sealed", sealed, 30)

        async def written() -> bool:
            values = samples((await scrape(http, node, admin))[1])
            return total(values, "jointreview_recording_written_bytes_total") > 0

        await _until("the recorder's bytes are reported", written)
        status, text = await scrape(http, node, admin)
    assert status == 200
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
    values = samples(text)
    for name in (
        "jointreview_media_packets_received_total",
        "jointreview_media_received_bytes_total",
        "jointreview_media_sent_bytes_total",
        "jointreview_media_connections_total",
        "jointreview_media_tracks_published_total",
        "jointreview_media_keyframe_waits_total",
        "jointreview_media_plis_sent_total",
        "jointreview_media_cpu_seconds_total",
        "jointreview_recording_packets_total",
        "jointreview_sessions_started_total",
        "jointreview_sessions_ended_total",
        "jointreview_participant_joins_total",
        "jointreview_casefiles_sealed_total",
        "jointreview_event_loop_lag_seconds_count",
        "process_cpu_seconds_total",
    ):
        assert total(values, name) > 0, name
    assert total(values, "jointreview_participant_joins_total") == 2
    # one series per worker, never one per session
    workers = {k for k in values if k.startswith("jointreview_media_packets_received_total")}
    assert workers == {
        'jointreview_media_packets_received_total{worker="0"}',
        'jointreview_media_packets_received_total{worker="1"}',
    }
    assert sid not in text and "OPS-1" not in text
    node.stop()
    _check_log(node, sid, request_id, (clerk, admin))


def _check_log(node: ServerProcess, sid: str, request_id: str, secrets: tuple[str, ...]) -> None:
    text = node.log.read_text(errors="replace")
    for secret in secrets:
        assert secret not in text
    lines = json_lines(node.log)
    assert lines and {"ts", "level", "logger", "msg"} <= set(lines[0])

    def one(**want: Any) -> dict[str, Any]:
        found = [x for x in lines if all(x.get(k) == v for k, v in want.items())]
        assert found, f"no log line with {want}"
        return found[0]

    ids = {"case_id": "OPS-1", "session_id": sid}
    started = one(event="session.created", **ids)
    assert started["level"] == "info" and started["request_id"] == request_id
    assert started["client"] == "127.0.0.1"
    joined = [x for x in lines if x.get("event") == "participant.joined"]
    assert len(joined) == 2
    assert all(x["session_id"] == sid and x["socket_id"].startswith("s-") for x in joined)
    assert len([x for x in lines if x.get("event") == "participant.left"]) == 2
    one(event="session.ended", **ids)
    one(event="recording.started", **ids)
    one(event="archive.sealed", **ids)
    placed = [x for x in lines if re.search(rf"session {sid} placed on", x["msg"])]
    assert placed and placed[0]["level"] == "info"
    access = [x for x in lines if x["logger"] == "aiohttp.access"]
    assert any(x.get("request_id") == request_id for x in access)
    assert {x["worker"] for x in lines if "worker" in x} <= {0, 1}


def test_alert_rules_and_dashboard() -> None:
    check = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    config = promtool("check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    dashboard = json.loads((PROMETHEUS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    served = (ROOT / "docs" / "operations.md").read_text()
    for expr in exprs:
        for name in re.findall(r"\b(jointreview_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in served, f"{name} (dashboard) is not a documented metric"


async def test_metrics_listener_of_its_own_and_the_text_log_with_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``metrics_listen``: /metrics there without a token, not on the main port. The text
    log names the request and the client a trusted proxy forwarded for."""
    port = free_port()
    config = make_config(
        tmp_path, metrics_listen=f"127.0.0.1:{port}", trusted_proxies=["127.0.0.1/32"]
    )
    out = io.StringIO()
    handler = logs.make_handler("text", out)
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        async with TestClient(TestServer(create_app(config))) as client:
            clerk = Tokens(TokenService(config)).clerk()
            res = await client.get("/metrics", headers=auth(clerk))
            assert res.status == 404  # moved to its own listener
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as own:
                    assert own.status == 200
                    assert "jointreview_sockets" in await own.text()
            res = await client.post(
                "/api/cases/OPS-2/sessions",
                json={},
                headers={
                    **auth(clerk),
                    "X-Forwarded-For": "198.51.100.7",
                    "X-Request-Id": "req-12345678",
                },
            )
            assert res.status == 201 and res.headers["X-Request-Id"] == "req-12345678"
    finally:
        logging.getLogger().removeHandler(handler)
    line = next(x for x in out.getvalue().splitlines() if "session started" in x)
    assert "INFO jointreview.lifecycle: session started [request_id=req-12345678" in line
    assert "client=198.51.100.7" in line and "case_id=OPS-2" in line

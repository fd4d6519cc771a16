"""Failover with real processes and real aiortc participants (bench/bot.py, which rebuild
their media connection on a lost host as the pages do): a media worker killed with
SIGKILL, a whole node killed with SIGKILL in Redis mode, and a node frozen past its TTL
that steps back when it wakes. Every participant receives the other's video again, in
the same slot; recovery times are printed (``FAILOVER``), not asserted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, read_pattern
from signaling.auth import TokenService

from .conftest import ServerProcess
from .test_media_workers import _health as _media
from .test_media_workers import _json, _until, tokens

Factory = Callable[..., ServerProcess]
ENV = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'}


async def _sees(bot: Bot, ident: int, timeout: float = 30.0) -> None:
    """The bot decodes a frame of participant ``ident``'s pattern on its current
    connection."""

    async def flowing() -> bool:
        return bot.pc is not None and bot.receiving(1)

    await _until("a remote track", flowing, timeout)
    remote = next(iter(bot.remotes.values()))
    assert remote.track is not None
    frame = await asyncio.wait_for(remote.track.recv(), timeout)
    assert read_pattern(frame)[0] == ident


async def _pair(url: str, t: TokenService, sid: str) -> list[Bot]:
    """Participants 1 and 2 in the session, each receiving the other's pattern."""
    bots = [Bot(url, t.issue(sub=f"u{i}", role="clerk"), restart_on_loss=True) for i in (1, 2)]
    for ident, bot in enumerate(bots, 1):
        await bot.connect()
        await bot.join(sid)
        await bot.publish("camera", PatternVideoTrack(ident))
    await asyncio.gather(_sees(bots[0], 2), _sees(bots[1], 1))
    return bots


async def _recovered(bots: list[Bot], killed: float) -> list[float]:
    """Seconds from the kill until each bot decodes the other's video on a new
    connection."""

    async def one(bot: Bot, other: int) -> float:
        await _until("a new connection", lambda: _true(bot.restarts > 0), 30)
        await _sees(bot, other)
        return time.time() - killed

    return list(await asyncio.gather(one(bots[0], 2), one(bots[1], 1)))


async def _true(value: bool) -> bool:
    return value


def _report(what: str, times: list[float]) -> None:
    print("FAILOVER", json.dumps({"what": what, "recovery_s": [round(t, 2) for t in times]}))


async def test_participants_get_media_back_when_their_worker_is_killed(
    server_factory: Factory, tmp_path: Path
) -> None:
    node = server_factory(env={**ENV, "JR_MEDIA_WORKERS": "2"})
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    async with aiohttp.ClientSession() as http:
        sid = (await _json(http, "POST", f"{node.url}/api/cases/FO-1/sessions", clerk))[
            "session_id"
        ]
        try:
            bots += await _pair(node.url, t, sid)
            slots = [b.participant_id for b in bots]
            placed = await _json(http, "GET", f"{node.url}/api/admin/media", admin)
            worker = next(s["worker"] for s in placed["sessions"] if s["session_id"] == sid)
            pid = (await _media(http, node.url))["workers"][worker]["pid"]
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            times = await _recovered(bots, killed)
            _report("worker", times)
            assert [b.participant_id for b in bots] == slots
            placed = await _json(http, "GET", f"{node.url}/api/admin/media", admin)
            now = next(s["worker"] for s in placed["sessions"] if s["session_id"] == sid)
            assert now != worker  # the other worker: the killed one was still starting
        finally:
            for bot in bots:
                await bot.close()
        events = (await _json(http, "GET", f"{node.url}/api/cases/FO-1", clerk))["events"]
        gaps = [e["data"] for e in events if e["type"] == "recording.gap"]
        assert len(gaps) == 1 and gaps[0]["start"] <= gaps[0]["end"], gaps
        assert gaps[0]["reason"] == "media_worker_lost" and gaps[0]["resumed"] is True


async def test_participants_on_another_node_get_media_back_when_the_media_node_is_killed(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """Two nodes on one Redis; the session's media on A, its participants connected to B.
    kill -9 of A: B sees A's hosts gone from the registry and frees the session's lease at
    once (not after the 30-s lease), the participants rebuild their connections and the
    session is placed on B."""
    a = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-a"})
    b = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    assert a.proc is not None and b.proc is not None
    async with aiohttp.ClientSession() as http:
        b.proc.send_signal(signal.SIGUSR1)  # B drains: the session's media goes to A

        async def b_drains() -> bool:
            return bool((await _media(http, b.url))["draining"])

        await _until("B drains", b_drains, 30)
        sid = (await _json(http, "POST", f"{b.url}/api/cases/FO-2/sessions", clerk))["session_id"]
        try:
            bots += await _pair(b.url, t, sid)
            placed = await _json(http, "GET", f"{a.url}/api/admin/media", admin)
            assert sid in {s["session_id"] for s in placed["sessions"]}, placed
            b.proc.send_signal(signal.SIGUSR2)

            async def b_takes() -> bool:
                return not (await _media(http, b.url))["draining"]

            await _until("B takes sessions again", b_takes, 30)
            killed = time.time()
            a.proc.kill()
            a.proc.wait(10)
            a.proc = None
            times = await _recovered(bots, killed)
            _report("node", times)
            placed = await _json(http, "GET", f"{b.url}/api/admin/media", admin)
            assert sid in {s["session_id"] for s in placed["sessions"]}, placed
        finally:
            for bot in bots:
                await bot.close()
        events = (await _json(http, "GET", f"{b.url}/api/cases/FO-2", clerk))["events"]
        gaps = [e["data"] for e in events if e["type"] == "recording.gap"]
        assert len(gaps) == 1 and gaps[0]["reason"] == "media_node_lost", gaps


async def test_a_dead_nodes_recording_is_repaired_by_the_node_taking_over_on_a_shared_archive(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """Two nodes share one archive. kill -9 of A, which hosted (and recorded) the session:
    B takes it over and repairs the run A left open before its own recorder starts, so the
    session, once ended, is sealed with both runs and A's tracks, A never coming back."""
    shared = tmp_path / "shared-archive"
    shared.mkdir(mode=0o700)
    data = []
    for name in ("data-a", "data-b"):
        (tmp_path / name).mkdir(mode=0o700)
        (tmp_path / name / "archive").symlink_to(shared)
        data.append(tmp_path / name)
    a = server_factory(data[0], redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-a"})
    b = server_factory(data[1], redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk = t.issue(sub="clerk-01", role="clerk")
    bots: list[Bot] = []
    assert a.proc is not None and b.proc is not None
    async with aiohttp.ClientSession() as http:
        b.proc.send_signal(signal.SIGUSR1)  # the session's media (and recording) on A

        async def b_drains() -> bool:
            return bool((await _media(http, b.url))["draining"])

        await _until("B drains", b_drains, 30)
        sid = (await _json(http, "POST", f"{b.url}/api/cases/FO-5/sessions", clerk))["session_id"]
        try:
            bots += await _pair(b.url, t, sid)
            b.proc.send_signal(signal.SIGUSR2)

            async def b_takes() -> bool:
                return not (await _media(http, b.url))["draining"]

            await _until("B takes sessions again", b_takes, 30)
            index_path = shared / "FO-5" / sid / "recording.json"

            async def a_records() -> bool:  # both cameras' files written to in A's run
                if not index_path.exists():
                    return False
                text = await asyncio.to_thread(index_path.read_text)
                tracks = json.loads(text)["tracks"]
                # (an entry is "open" from the track's first packet; its start is saved
                # with its first frame, which waits for a keyframe)
                started = [t["state"] == "open" and t["started_at"] is not None for t in tracks]
                return started == [True, True]

            await _until("A records", a_records, 30)
            a.proc.kill()
            a.proc.wait(10)
            a.proc = None
            await _recovered(bots, time.time())
        finally:
            for bot in bots:
                await bot.close()
        await _json(http, "POST", f"{b.url}/api/sessions/{sid}/end", clerk)
        manifest_path = shared / "FO-5" / sid / "manifest.json"

        async def sealed() -> Any:
            if not manifest_path.exists():
                return None
            return json.loads(await asyncio.to_thread(manifest_path.read_text))

        recorded = (await _until("the case file is sealed", sealed, 30))["recording"]
        runs = [(r["node"], r["state"]) for r in recorded["runs"]]
        assert runs == [("node-a", "recovered_after_crash"), ("node-b", "closed")], runs
        states = [t["state"] for t in recorded["tracks"]]  # two cameras on A, then on B
        assert states.count("recovered_after_crash") == 2, recorded["tracks"]
        assert states.count("closed") == 2 and len(states) == 4, recorded["tracks"]
        for track in recorded["tracks"]:
            assert (manifest_path.parent / track["file"]).stat().st_size > 0
        events = (await _json(http, "GET", f"{b.url}/api/cases/FO-5", clerk))["events"]
        assert [e["type"] for e in events].count("recording.recovered") == 1


async def test_a_node_taken_over_while_stalled_steps_back_when_it_wakes(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """Node A, hosting the session's media, is frozen (SIGSTOP: an event loop starved)
    longer than its TTL and a heartbeat: B takes the session over and the participants
    rebuild onto B. Woken, A finds the lease naming B and closes its own room (steps
    back): the session's media runs on one host, and the participants are not disturbed
    a second time."""
    a = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-a"})
    b = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    assert a.proc is not None and b.proc is not None
    async with aiohttp.ClientSession() as http:

        async def hosted(node: ServerProcess) -> set[str]:
            placed = await _json(http, "GET", f"{node.url}/api/admin/media", admin)
            return {s["session_id"] for s in placed["sessions"]}

        b.proc.send_signal(signal.SIGUSR1)  # the session's media goes to A

        async def b_drains() -> bool:
            return bool((await _media(http, b.url))["draining"])

        await _until("B drains", b_drains, 30)
        sid = (await _json(http, "POST", f"{b.url}/api/cases/FO-4/sessions", clerk))["session_id"]
        try:
            bots += await _pair(b.url, t, sid)
            assert sid in await hosted(a)
            b.proc.send_signal(signal.SIGUSR2)

            async def b_takes() -> bool:
                return not (await _media(http, b.url))["draining"]

            await _until("B takes sessions again", b_takes, 30)
            stalled = time.time()
            a.proc.send_signal(signal.SIGSTOP)
            try:
                _report("stalled node", await _recovered(bots, stalled))
            finally:
                a.proc.send_signal(signal.SIGCONT)
            assert sid in await hosted(b)
            restarts = [bot.restarts for bot in bots]

            async def a_stepped_back() -> bool:
                return sid not in await hosted(a)

            await _until("A steps back", a_stepped_back, 30)
            assert sid in await hosted(b)
            await asyncio.gather(_sees(bots[0], 2), _sees(bots[1], 1))
            assert [bot.restarts for bot in bots] == restarts
        finally:
            for bot in bots:
                await bot.close()


async def test_drain_with_move_places_the_sessions_on_another_node(
    server_factory: Factory, redis_url: str, tmp_path: Path
) -> None:
    """``jointreview drain --move`` of the node hosting a session's media: the session is
    placed on the other node at once (not when it ends), its participants rebuild their
    connections by themselves in the same slots, and the recording goes on after a gap
    (``media_host_draining``)."""
    a = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-a"})
    b = server_factory(redis_url=redis_url, env={**ENV, "JR_NODE_ID": "node-b"})
    t = tokens(tmp_path)
    clerk, admin = t.issue(sub="clerk-01", role="clerk"), t.issue(sub="admin", role="admin")
    bots: list[Bot] = []
    assert a.proc is not None and b.proc is not None
    async with aiohttp.ClientSession() as http:
        b.proc.send_signal(signal.SIGUSR1)  # the session's media goes to A

        async def b_drains() -> bool:
            return bool((await _media(http, b.url))["draining"])

        async def a_sees_b_drain() -> bool:  # in the registry: B's next heartbeat
            hosts = (await _json(http, "GET", f"{a.url}/api/admin/media", admin))["hosts"]
            return any(h["node"] == "node-b" and h["draining"] for h in hosts)

        await _until("B drains", b_drains, 30)
        await _until("A sees B drain", a_sees_b_drain, 30)
        sid = (await _json(http, "POST", f"{a.url}/api/cases/FO-3/sessions", clerk))["session_id"]
        try:
            bots += await _pair(a.url, t, sid)
            slots = [b.participant_id for b in bots]
            placed = await _json(http, "GET", f"{a.url}/api/admin/media", admin)
            assert sid in {s["session_id"] for s in placed["sessions"]}, placed
            b.proc.send_signal(signal.SIGUSR2)

            async def b_takes() -> bool:
                return not (await _media(http, b.url))["draining"]

            await _until("B takes sessions again", b_takes, 30)
            argv = [sys.executable, "-m", "jointreview.cli", "drain", "--move", "--url", a.url]
            moved = time.time()
            done = await asyncio.to_thread(
                subprocess.run,
                [*argv, "--data-dir", str(a.data_dir)],
                env=a.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0 and "1 sessions moved" in done.stdout, done
            times = await _recovered(bots, moved)
            _report("drain --move", times)
            assert [b.participant_id for b in bots] == slots
            placed = await _json(http, "GET", f"{b.url}/api/admin/media", admin)
            assert sid in {s["session_id"] for s in placed["sessions"]}, placed
            assert (await _media(http, a.url))["draining"] is True
        finally:
            for bot in bots:
                await bot.close()
        events = (await _json(http, "GET", f"{a.url}/api/cases/FO-3", clerk))["events"]
        gaps = [e["data"] for e in events if e["type"] == "recording.gap"]
        assert len(gaps) == 1 and gaps[0]["reason"] == "media_host_draining", gaps
        assert gaps[0]["start"] <= gaps[0]["end"] and gaps[0]["resumed"] is True, gaps

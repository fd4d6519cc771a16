"""A media worker process: one ``MediaServer`` (the SFU) and its recorder, on its own core.

Started by the node's control process (``media_hosts.WorkerHost``) as
``python -m jointreview.media_worker <fd> <loop>``: it inherits one end of a socketpair
(``worker_channel`` frames), reads its settings from the first frame, says ``ready``,
then answers the operations of ``media_ops`` and pushes its media events, recording
events and, every ``LOAD_EVERY_S``, its load. It holds no store and no HTTP: the control
process keeps those. It ends when the channel closes (the control process stopped or
died: nothing is left behind), on a ``close`` request or on SIGTERM, ending its rooms
first so that their recordings are final.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from media_server.errors import MediaError
from media_server.server import MediaServer
from media_server.settings import MediaSettings
from recording.live.recorder import Recorder
from signaling import logs  # (the standard library only: no aiohttp in a worker)

from .media_ops import CpuMeter, apply, load
from .worker_channel import read_msg, write_msg

log = logging.getLogger("jointreview.media_worker")

LOAD_EVERY_S = 1.0


class Worker:
    def __init__(self, writer: asyncio.StreamWriter, init: dict[str, Any]) -> None:
        self.writer = writer
        raw = dict(init["settings"])
        if raw.get("port_range"):
            raw["port_range"] = tuple(raw["port_range"])
        settings = MediaSettings(**raw)
        recorder = None
        if init.get("archive"):
            recorder = Recorder(
                Path(init["archive"]),
                self._recording_event,
                queue_packets=int(init.get("recorder_queue", 8192)),
                keyframe_s=float(init.get("recorder_keyframe_s", 10.0)),
                node=str(init.get("node", "")),
            )
        self.media = MediaServer(settings, self._emit, recorder)
        self.meter = CpuMeter()
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, msg: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            write_msg(self.writer, msg)

    def _emit(self, session_id: str, participant_id: str | None, msg: dict[str, Any]) -> None:
        to = {"session_id": session_id, "participant_id": participant_id}
        self.send({"event": "emit", **to, "msg": msg})

    def _recording_event(self, session_id: str, msg: dict[str, Any]) -> None:
        self.send({"event": "recording", "session_id": session_id, "msg": msg})

    def handle(self, msg: dict[str, Any]) -> None:
        task = asyncio.create_task(self._answer(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": msg.get("id")}
        logs.SESSION_ID.set(str((msg.get("args") or {}).get("session_id") or "") or None)
        try:
            reply["result"] = await apply(self.media, str(msg.get("op")), dict(msg["args"]))
        except MediaError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except Exception:
            log.exception("media operation %r failed", msg.get("op"))
            reply["error"] = {"code": "internal_error", "message": "the media worker failed"}
        self.send(reply)
        # An answer changes the load (a room opened or closed): report it at once.
        self.send({"event": "load", **load(self.media, self.meter)})

    async def report(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(LOAD_EVERY_S)
            # How late the loop woke us: this worker's event-loop lag (metrics).
            lag = max(0.0, loop.time() - began - LOAD_EVERY_S)
            self.send({"event": "load", **load(self.media, self.meter), "loop_lag_s": lag})
            await self.writer.drain()


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    init = await read_msg(reader)
    if init is None:
        return
    # The node's form (text or JSON), on stderr, each line naming this worker. A worker
    # holds no token or grant (ids and SDP only): no redaction filter, and no aiohttp.
    logs.configure(
        str(init.get("log_level", "info")),
        str(init.get("log_format", "text")),
        worker=int(init.get("worker", 0)),
    )
    worker = Worker(writer, init)
    worker.send({"event": "ready", "pid": os.getpid()})
    reporter = asyncio.create_task(worker.report())
    # SIGTERM (systemd stops the whole control group at once): end the rooms so that
    # their recordings are final, as the control process's own shutdown would.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stopped = asyncio.create_task(stop.wait())
    try:
        while True:
            reading = asyncio.create_task(read_msg(reader))
            await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                break
            msg = reading.result()
            if msg is None or msg.get("op") == "close":
                break
            worker.handle(msg)
    finally:
        stopped.cancel()
        reporter.cancel()
        for task in list(worker.tasks):
            task.cancel()
        await worker.media.close()  # rooms end, recordings are made final
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    fd, kind = int(args[0]), (args[1] if len(args) > 1 else "asyncio")
    # Ctrl-C reaches the whole process group: the control process stops the workers
    # (channel closed or "close"), in order, after its own rooms' sessions are handled.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop: asyncio.AbstractEventLoop
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(fd))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

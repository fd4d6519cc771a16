"""Capture real, SRTP-decrypted RTP from aiortc as test fixtures.

Two aiortc peer connections talk over loopback in this one process; the sender publishes
``bench.pattern_media.PatternVideoTrack`` (VP8 or H.264, with a band of noise so frames
span several packets) and ``ToneAudioTrack`` (Opus), the receiving
side's DTLS transport is hooked where aiortc hands it decrypted RTP
(``RTCDtlsTransport._handle_rtp_data``), and every packet is recorded with its arrival
time. The result is a JSON list of ``{"t": seconds since the first packet, "hex": ...}``.

Regenerate (from the project root; takes a few seconds per file)::

    python tests/data/capture_rtp.py            # both fixtures
    python tests/data/capture_rtp.py vp8_opus   # or just one of: vp8_opus, h264

The fixtures are checked in: the tests replay them and never need a network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run as a script from anywhere

import numpy as np  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender  # noqa: E402
from av import VideoFrame  # noqa: E402

from bench.pattern_media import PatternVideoTrack, ToneAudioTrack  # noqa: E402
from media_server import aiortc_adapter  # noqa: E402

CAPTURES = {
    # name: (video codec mime, with audio)
    "vp8_opus": ("video/VP8", True),
    "h264": ("video/H264", False),
}
WIDTH, HEIGHT = 320, 240
SECONDS = 2.5  # keeps both files well under 1.5 MB together


class NoisyPatternTrack(PatternVideoTrack):
    """The pattern with a band of noise below it: the flat pattern alone compresses to one
    small packet per frame, and the tests want frames that span several packets (VP8
    partitions, H.264 FU-A) at the encoder's real bitrate."""

    def __init__(self, ident: int, width: int, height: int) -> None:
        super().__init__(ident, width, height)
        self._rng = np.random.default_rng(ident)

    async def recv(self) -> VideoFrame:
        frame = await super().recv()
        planes = frame.to_ndarray(format="yuv420p")
        rows = self.height * 3 // 4
        planes[rows : self.height, :] = self._rng.integers(
            96, 160, (self.height - rows, self.width), dtype=np.uint8
        )
        noisy = VideoFrame.from_ndarray(planes, format="yuv420p")
        noisy.pts, noisy.time_base = frame.pts, frame.time_base
        return noisy


def _video_preferences(mime: str) -> list[Any]:
    caps = RTCRtpSender.getCapabilities("video")
    assert caps is not None
    chosen = [c for c in caps.codecs if c.mimeType.lower() == mime.lower()]
    rtx = [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
    return chosen + rtx


async def capture(mime: str, with_audio: bool, seconds: float) -> list[dict[str, Any]]:
    aiortc_adapter.configure_host_candidates(["127.0.0.1"], None)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    records: list[tuple[float, bytes]] = []
    try:
        video = sender.addTransceiver(NoisyPatternTrack(1, WIDTH, HEIGHT), direction="sendonly")
        video.setCodecPreferences(_video_preferences(mime))
        if with_audio:
            sender.addTransceiver(ToneAudioTrack(), direction="sendonly")

        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)

        dtls = aiortc_adapter.dtls_transport(receiver)
        assert dtls is not None
        original = dtls._handle_rtp_data

        async def record(data: bytes, arrival_time_ms: int) -> None:
            records.append((time.monotonic(), bytes(data)))
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = record  # type: ignore[method-assign]

        deadline = time.monotonic() + 15
        while not records:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no RTP received (state {receiver.connectionState})")
            await asyncio.sleep(0.05)
        # Half way, ask for a keyframe as the SFU does for a new subscriber (aiortc's
        # encoder sends none of its own after the first): the fixture then has a
        # keyframe mid-stream for a late leg to start on.
        await asyncio.sleep(seconds / 2)
        video_ssrc = video.sender._ssrc
        await receiver.getTransceivers()[0].receiver._send_rtcp_pli(video_ssrc)
        await asyncio.sleep(seconds / 2 + 0.1)
    finally:
        await sender.close()
        await receiver.close()
    start = records[0][0]
    return [
        {"t": round(t - start, 6), "hex": data.hex()} for t, data in records if t - start <= seconds
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"which captures (default: {' '.join(CAPTURES)})")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    for name in args.names or CAPTURES:
        if name not in CAPTURES:
            parser.error(f"unknown capture {name!r}; choose from {', '.join(CAPTURES)}")
        mime, with_audio = CAPTURES[name]
        packets = asyncio.run(capture(mime, with_audio, args.seconds))
        path = HERE / f"{name}.rtpdump.json"
        path.write_text(json.dumps(packets, separators=(",", ":")) + "\n")
        print(f"{path.name}: {len(packets)} packets, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

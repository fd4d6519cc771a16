"""What the control plane asks of the media layer, as a Protocol.

The implementation is ``jointreview.media_bridge.MediaBridge`` (it owns the SFU and the
recorder, both aiortc-based); signaling only knows this interface, so nothing in
``signaling`` imports aiortc, not even for typing.
"""

from __future__ import annotations

from typing import Any, Protocol

from .models import MediaCheck
from .recording_control import RecordingControl


class MediaPort(Protocol):
    # Recording policy and sealing (None: this node records nothing).
    recording: RecordingControl | None
    node_id: str
    draining: bool  # no new session is placed on this node's media hosts

    def set_draining(self, on: bool) -> None: ...

    async def move_sessions(self) -> list[str]:
        """The sessions hosted here are placed again elsewhere (drain that moves)."""
        ...

    async def placement(self) -> dict[str, Any]:
        """Every media host of every node with its load, and this node's sessions'
        placement (``api_media.MediaPlacement``)."""
        ...

    def ice_servers(self, user: str) -> list[dict[str, Any]]:
        """The ICE servers (STUN, TURN with short-lived credentials) for this user."""
        ...

    async def negotiate(
        self,
        session_id: str,
        participant_id: str,
        owner: dict[str, Any],
        sdp: str,
        publish: list[dict[str, Any]],
        subscribe: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Answer a participant's offer, on whichever node hosts the session's media."""
        ...

    async def tracks(self, session_id: str) -> list[dict[str, Any]]:
        """What is published in the session now (empty if no media node hosts it yet)."""
        ...

    async def ready(self, session_id: str, participant_id: str) -> None:
        """The participant applied the answer: its subscriptions may flow."""
        ...

    async def watch(self, session_id: str) -> None:
        """Follow the session so its case file is sealed when it ends."""
        ...

    async def recording_active(self, session_id: str) -> bool: ...

    async def media_health(self, session_id: str) -> list[dict[str, Any]]:
        """Each peer's media health as the SFU counts it: ``participant_id``,
        ``connection``, ``loss``, ``fps``, ``freezes``, ``frozen``, ``receiving`` and its
        ``tracks`` (``media_server/health.py``); empty when no media host runs it."""
        ...

    async def release(self, session_id: str, participant_id: str) -> None:
        """Close one peer's media connection (an observer who stopped watching)."""
        ...

    def health(self) -> MediaCheck:
        """``/healthz``'s media part: rooms, and whether the recorder's writer lives."""
        ...

"""jointreview control plane: HTTP API, WebSocket signaling, identities and shared state."""

__version__ = "0.1.0"

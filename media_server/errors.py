"""Media errors: a stable code and a message, turned into signaling errors upstream."""

from __future__ import annotations


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

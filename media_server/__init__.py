"""The SFU (issue 3): aiortc-based, forwards media without transcoding."""

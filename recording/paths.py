"""Where a session's recording lives: ``<archive>/<case id>/<session id>/``.

The ids are checked here, once, for everyone who turns them into a path (the recorder,
the archive and its seal, the export, the replay API): an id that does not match
``ID_RE`` or that would resolve outside the archive is refused. No I/O beyond resolving
the path.
"""

from __future__ import annotations

import re
from pathlib import Path

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def session_dir(archive: Path, case_id: str, session_id: str) -> Path:
    """<archive>/<case>/<session>, refusing any id that could leave the archive."""
    for what, value in (("case id", case_id), ("session id", session_id)):
        if not ID_RE.match(value) or value in (".", ".."):
            raise ValueError(f"unusable {what} {value!r}")
    root = archive.resolve()
    path = (root / case_id / session_id).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ValueError(f"{case_id}/{session_id} is outside the archive")
    return path

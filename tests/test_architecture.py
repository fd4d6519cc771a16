"""The walls between the parts, as imports (issue 11, item 6; a first slice).

Each import runs in a fresh interpreter, so what one test imported cannot hide what
another pulls in. A module that loads a forbidden package fails with the import chain
(file:line of every project import on the way), caught by a meta-path hook at the first
import of that package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs in the child: argv[1] the module, argv[2] the forbidden top-level packages.
_PROBE = r"""
import importlib, json, os, sys, traceback
root = os.getcwd() + os.sep
banned = set(sys.argv[2].split(","))
chains = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in banned and top not in chains:
            chains[top] = [
                f"{f.filename[len(root):]}:{f.lineno}: {f.line}"
                for f in traceback.extract_stack()
                if f.filename.startswith(root) and "site-packages" not in f.filename
            ]
        return None

sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
loaded = sorted({m.partition(".")[0] for m in sys.modules} & banned)
print(json.dumps({"loaded": loaded, "chains": chains}))
"""


def _loads(module: str, banned: tuple[str, ...]) -> dict[str, list[str]]:
    """The banned packages that importing ``module`` loads, each with its import chain."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, ",".join(banned)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    unknown = ["(no project import on the way)"]
    return {top: found["chains"].get(top, unknown) for top in found["loaded"]}


def _explain(module: str, loaded: dict[str, list[str]]) -> str:
    lines = [f"importing {module} loads {', '.join(loaded)}:"]
    for top, chain in loaded.items():
        lines.append(f"  {top}, first imported through:")
        lines += [f"    {step}" for step in chain]
    return "\n".join(lines)


# The recording formats (a recording's journal, the session directory and its ids, the
# WebM writer, the repair remux, codec bitstream syntax): what the media server, the
# control plane and the exporter all import, so they import none of those parts.
FORMATS = (
    "recording.track_journal",
    "recording.paths",
    "recording.webm",
    "recording.repair",
    "recording.bitstream",
)
LIVE_AND_CONTROL = ("aiortc", "aioice", "asyncio", "aiohttp", "media_server", "signaling")


@pytest.mark.parametrize("module", FORMATS)
def test_recording_formats_depend_on_no_live_part(module: str) -> None:
    loaded = _loads(module, LIVE_AND_CONTROL)
    assert not loaded, _explain(module, loaded)


# The export path and the replay / case-file API: an export (CLI or worker) and a
# replay never need the SFU, so importing them never loads aiortc.
NO_AIORTC = (
    "recording.export",
    "recording.compose",
    "recording.archive",
    "recording.verify",
    "signaling.api_replay",
    "signaling.api_archive",
)


@pytest.mark.parametrize("module", NO_AIORTC)
def test_export_and_replay_never_load_aiortc(module: str) -> None:
    loaded = _loads(module, ("aiortc", "aioice", "media_server"))
    assert not loaded, _explain(module, loaded)

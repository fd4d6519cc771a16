"""The walls between the parts, as imports (issue 11, item 6), and the sizes the team's
guide allows.

Two kinds of test. The static walls read every import of our packages with ``ast``
(``tests/imports.py``): at module level, inside functions and under ``TYPE_CHECKING``,
followed through our own modules; each fails with the offending ``file:line: import``
list (and, for a wall crossed transitively, the imports that lead there). The probes
import one module in a fresh interpreter, so what one test imported cannot hide what
another pulls in: a module that loads a forbidden package fails with the import chain
(file:line of every project import on the way), caught by a meta-path hook at the first
import of that package.

The target package graph (docs/architecture.md, issue 11): ``media_server`` imports no
other package of ours; ``recording`` (formats, case file, export) none, except its
live-capture subpackage ``recording.live``, which may import ``media_server``;
``signaling`` only ``recording`` (never ``recording.live``); ``web_client`` none;
``jointreview`` (the composition root) all; ``bench`` all but ``jointreview``; nothing
imports ``bench`` but ``jointreview/cli.py``, lazily, and the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

from .imports import (
    OURS,
    Finding,
    Tree,
    cycles,
    disallowed_edges,
    importers,
    long_functions,
    long_modules,
    private_access,
    private_registry,
    reach,
    read_tree,
)

ROOT = Path(__file__).resolve().parent.parent

# Runs in the child: argv[1] the modules (comma-separated), argv[2] the forbidden
# top-level packages.
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
for name in sys.argv[1].split(","):
    importlib.import_module(name)
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


# The recording formats (a recording's track index, the session directory and its ids, the
# WebM writer, the repair remux, codec bitstream syntax): what the media server, the
# control plane and the exporter all import, so they import none of those parts.
FORMATS = (
    "recording.track_index",
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


def test_no_module_of_signaling_loads_the_live_path() -> None:
    """The whole control plane, every module imported in one interpreter: no aiortc."""
    import signaling

    modules = sorted(m.name for m in pkgutil.walk_packages(signaling.__path__, "signaling."))
    assert len(modules) > 40  # the walk found the package's modules, state/ included
    loaded = _loads(",".join(modules), ("aiortc", "aioice", "pylibsrtp", "media_server"))
    assert not loaded, _explain("every module of signaling", loaded)


# -- the static walls ------------------------------------------------------------------


@cache
def tree() -> Tree:
    return Tree.parse(read_tree(ROOT))


def _wall(wall: str, findings: Iterable[Finding | str]) -> None:
    """Fail with every finding, one per line (and the imports leading to it)."""
    found = [str(f) for f in findings]
    if found:
        pytest.fail("\n".join([f"{wall}: {len(found)} found", *found]), pytrace=False)


def test_the_scan_sees_every_package() -> None:
    # A wall over an empty tree would pass for nothing.
    assert tree().packages == set(OURS)
    assert {"media_server.forwarder", "media_server.rtp", ADAPTER} <= tree().modules.keys()


FORWARDING_CORE = ("media_server.forwarder", "media_server.rtp")
NOT_IN_THE_CORE = ("signaling", "redis", "aiohttp", "jointreview", "recording", "bench")


def test_the_forwarding_core_imports_no_control_plane_store_or_recording() -> None:
    found = reach(tree(), FORWARDING_CORE, NOT_IN_THE_CORE)
    _wall("the forwarding core (forwarder.py, rtp.py)", found)


# The live media path: the SFU, its WebRTC stack and live capture. (PyAV alone is not
# live: the exporter and the replay API remux with it.)
LIVE_PATH = ("aiortc", "aioice", "pylibsrtp", "media_server", "recording.live")


def test_signaling_reaches_no_live_media_path() -> None:
    found = reach(tree(), tree().under(["signaling"]), LIVE_PATH)
    _wall("signaling, directly or through our modules", found)


def test_the_exporter_never_imports_the_live_path() -> None:
    exporter = [m for m in tree().under(["recording"]) if not m.startswith("recording.live")]
    found = reach(tree(), exporter, LIVE_PATH)
    _wall("recording/ outside recording/live/", found)


ADAPTER = "media_server.aiortc_adapter"
# The adapter's records of the private names it touches, one ``*PRIVATE_NAMES`` tuple
# per section (its version-pin test checks each): any other module naming one reaches
# past the adapter. The packages it wraps: only the adapter imports their submodules.
WRAPPED = ("aiortc", "aioice", "pylibsrtp")


def _submodules(package: str) -> list[str]:
    """The package's submodules, from its files (importing nothing)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None, package
    return [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]


def test_aiortc_internals_only_in_the_adapter() -> None:
    source = tree().modules[ADAPTER].source
    registry = private_registry(source)
    found = private_access(tree(), ADAPTER, registry, {p: _submodules(p) for p in WRAPPED})
    _wall(
        "aiortc/aioice/pylibsrtp submodules or private names outside "
        "media_server/aiortc_adapter.py "
        f"(registered private names: {len(registry)})",
        found,
    )


def test_no_cycle_between_top_level_packages() -> None:
    found = cycles(tree())
    _wall("cycles between top-level packages", found)


# Package -> the packages of ours it may import (the target graph above).
ALLOWED = {
    "media_server": (),
    "recording": ("media_server",),  # recording.live only: see the exporter's wall
    "signaling": ("recording",),  # never recording.live: see signaling's wall
    "web_client": (),
    "jointreview": ("signaling", "media_server", "recording", "web_client", "bench"),
    # All but jointreview: jointreview/cli.py imports bench (for `jointreview bench`), so
    # bench -> jointreview would close a cycle.
    "bench": ("signaling", "media_server", "recording", "web_client"),
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_the_target_graph_allows(package: str) -> None:
    found = [f for f in disallowed_edges(tree(), ALLOWED) if f.path.startswith(package + "/")]
    _wall(f"{package} may import only {ALLOWED[package] or 'none of ours'}", found)


def test_nothing_imports_bench_but_the_cli_lazily() -> None:
    found = importers(tree(), "bench", allowed=["jointreview.cli"], lazily=True)
    _wall("bench imported outside jointreview/cli.py's functions", found)


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LIVE_CODE = ("media_server", "recording.live")


def test_no_module_is_over_500_lines() -> None:
    found = long_modules(tree(), MAX_MODULE_LINES)
    _wall("modules over 500 lines", found)


def test_no_function_in_the_live_path_is_over_80_lines() -> None:
    found = long_functions(tree(), LIVE_CODE, MAX_FUNCTION_LINES)
    _wall("functions over 80 lines in media_server/, recording/live/", found)

"""tests/imports.py, the scanner behind the architecture walls, on tiny source trees:
every form of import is seen, and every rule fails, naming file:line, when broken."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest

from .imports import (
    FUNCTION,
    MODULE,
    TYPE_CHECKING,
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


def make(root: Path, files: dict[str, str]) -> Tree:
    """Write ``files`` (path → source) under ``root`` and scan them as our packages."""
    for path, source in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(dedent(source).lstrip("\n"))
    return Tree.parse(read_tree(root, sorted({p.partition("/")[0] for p in files})))


# -- every import is seen --------------------------------------------------------------


def test_every_form_of_import_is_seen_with_its_scope(tmp_path: Path) -> None:
    tree = make(
        tmp_path,
        {
            "pkg/__init__.py": "from . import sub\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/leaf.py": """
                import os.path, json
                from typing import TYPE_CHECKING
                from .. import other, NAME
                from ..other import thing as t

                if TYPE_CHECKING:
                    from aiortc.rtp import RtpPacket
                else:
                    import lzma

                def later() -> None:
                    import importlib
                    from . import sibling
                    importlib.import_module("pkg.dyn")

                class K:
                    run = lambda self: __import__("zlib")
            """,
            "pkg/sub/sibling.py": "",
            "pkg/other.py": "",
            "pkg/dyn.py": "",
        },
    )
    seen = [(i.line, i.target, i.names, i.scope) for i in tree.imports_of("pkg.sub.leaf")]
    assert seen == [
        (1, "os.path", (), MODULE),
        (1, "json", (), MODULE),
        (2, "typing", ("TYPE_CHECKING",), MODULE),
        (3, "pkg.other", (), MODULE),  # a submodule: the module itself
        (3, "pkg", ("NAME",), MODULE),  # a name: from the package
        (4, "pkg.other", ("thing",), MODULE),
        (7, "aiortc.rtp", ("RtpPacket",), TYPE_CHECKING),
        (9, "lzma", (), MODULE),
        (12, "importlib", (), FUNCTION),
        (13, "pkg.sub.sibling", (), FUNCTION),
        (14, "pkg.dyn", (), FUNCTION),
        (17, "zlib", (), FUNCTION),
    ]
    first = tree.imports_of("pkg.sub.leaf")[0]
    assert first.where == "pkg/sub/leaf.py:1: import os.path, json"
    assert [i.target for i in tree.imports_of("pkg")] == ["pkg.sub"]


# -- walls -----------------------------------------------------------------------------

CORE = {
    "core/__init__.py": "",
    "core/fwd.py": "from . import rtp\n",
    "core/rtp.py": "import struct\n",
    "control/__init__.py": "",
    "control/app.py": "import aiohttp\n",
}


def _reach(start: list[str], banned: list[str]) -> Callable[[Tree], list[str]]:
    return lambda tree: [str(f) for f in reach(tree, start, banned)]


REACH_CASES = [
    ("clean", {}, []),
    (
        "direct, in a function",
        {"core/rtp.py": "def f() -> None:\n    import aiohttp\n"},
        ["core/rtp.py:2: import aiohttp\n    via core/fwd.py:1: from . import rtp"],
    ),
    (
        "transitive, through another package",
        {"core/rtp.py": "from control import app\n"},
        [
            "core/rtp.py:1: from control import app\n    via core/fwd.py:1: from . import rtp",
        ],
    ),
    (
        "through a package's __init__",
        {
            "core/rtp.py": "from util.helpers import x\n",
            "util/__init__.py": "import redis\n",
            "util/helpers.py": "",
        },
        [
            "util/__init__.py:1: import redis\n"
            "    via core/fwd.py:1: from . import rtp\n"
            "    via core/rtp.py:1: from util.helpers import x",
        ],
    ),
    (
        "under TYPE_CHECKING",
        {
            "core/fwd.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    import redis.client\n"
        },
        ["core/fwd.py:3: import redis.client"],
    ),
]


@pytest.mark.parametrize(
    ("files", "expected"),
    [case[1:] for case in REACH_CASES],
    ids=[case[0] for case in REACH_CASES],
)
def test_reach_finds_every_banned_import_on_the_way(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    tree = make(tmp_path, {**CORE, **files})
    found = reach(tree, ["core.fwd"], ["aiohttp", "redis", "control"])
    assert [str(f) for f in found] == expected


def test_reach_bans_a_subpackage_not_its_lookalikes(tmp_path: Path) -> None:
    tree = make(
        tmp_path,
        {
            "rec/__init__.py": "",
            "rec/export.py": "from . import livestock\nfrom .live import tap\n",
            "rec/livestock.py": "",
            "rec/live/__init__.py": "",
            "rec/live/tap.py": "",
        },
    )
    found = reach(tree, ["rec.export"], ["rec.live"])
    assert [str(f) for f in found] == ["rec/export.py:2: from .live import tap"]


GRAPH = {
    "a/__init__.py": "from b import x\n",
    "b/__init__.py": "def f() -> None:\n    import c.deep\n",
    "c/__init__.py": "",
    "c/deep.py": "import a\nimport c\n",
}


def test_cycles_print_the_cycle_and_one_import_per_edge(tmp_path: Path) -> None:
    tree = make(tmp_path, GRAPH)
    assert cycles(tree) == [
        "a -> b -> c -> a\n"
        "    a -> b: a/__init__.py:1: from b import x\n"
        "    b -> c: b/__init__.py:2: import c.deep\n"
        "    c -> a: c/deep.py:1: import a"
    ]


def test_no_cycle_no_finding(tmp_path: Path) -> None:
    tree = make(tmp_path, {**GRAPH, "c/deep.py": "import c\n"})
    assert cycles(tree) == []


def test_two_cycles_through_one_package(tmp_path: Path) -> None:
    tree = make(tmp_path, {**GRAPH, "c/deep.py": "import a\n", "b/more.py": "import a\n"})
    assert [c.partition("\n")[0] for c in cycles(tree)] == ["a -> b -> a", "a -> b -> c -> a"]


def test_disallowed_edges_list_every_import_on_an_edge_not_in_the_table(tmp_path: Path) -> None:
    tree = make(tmp_path, {**GRAPH, "b/more.py": "from c import deep\n"})
    allowed = {"a": ["b"], "c": ["a"]}
    assert [str(f) for f in disallowed_edges(tree, allowed)] == [
        "b/__init__.py:2: import c.deep",
        "b/more.py:1: from c import deep",
    ]
    assert disallowed_edges(tree, {"a": ["b"], "b": ["c"], "c": ["a"]}) == []


IMPORTERS_CASES = [
    ("lazily, by the one allowed", "def main() -> None:\n    from tools import run\n", []),
    ("at module level", "import tools.run\n", ["app/cli.py:1: import tools.run"]),
]


@pytest.mark.parametrize(
    ("cli", "expected"),
    [case[1:] for case in IMPORTERS_CASES],
    ids=[case[0] for case in IMPORTERS_CASES],
)
def test_importers_allow_only_the_named_module_lazily(
    tmp_path: Path, cli: str, expected: list[str]
) -> None:
    tree = make(
        tmp_path,
        {
            "tools/__init__.py": "",
            "tools/run.py": "import tools\nfrom app import cli\n",
            "app/__init__.py": "",
            "app/cli.py": cli,
        },
    )
    assert [str(f) for f in importers(tree, "tools", ["app.cli"])] == expected
    other = make(tmp_path / "other", {"app/__init__.py": "", "app/api.py": "import tools\n"})
    assert [str(f) for f in importers(other, "tools", ["app.cli"])] == [
        "app/api.py:1: import tools"
    ]


# -- the private-name registry and aiortc's internals ----------------------------------


def test_the_registry_is_read_from_the_adapters_source() -> None:
    source = dedent(
        """
        import typing
        class Private(typing.NamedTuple):
            module: str
            attribute: str
        PRIVATE_NAMES = (
            ("aiortc", "RTCDtlsTransport._handle_rtp_data"),
            Private("aiortc.codecs.vpx", "Vp8Encoder._packetize"),
        )
        MORE: tuple[tuple[str, str], ...] = (("aioice.turn", "UDP_SOCKET_BUFFER_SIZE"),)
        BENCH_PRIVATE_NAMES = MORE + (("aiortc.codecs.h264", "H264Encoder._split_bitstream"),)
        """
    )
    assert private_registry(source) == [
        ("aioice.turn", "UDP_SOCKET_BUFFER_SIZE"),
        ("aiortc.codecs.h264", "H264Encoder._split_bitstream"),
        ("aiortc", "RTCDtlsTransport._handle_rtp_data"),
        ("aiortc.codecs.vpx", "Vp8Encoder._packetize"),
    ]
    assert private_registry("X = 1\nPAIRS = (('a', 'b'),)\n") == []
    with pytest.raises(ValueError, match="line 1"):
        private_registry("PRIVATE_NAMES = (('aiortc',),)\n")
    with pytest.raises(ValueError, match="literal"):
        private_registry("CAPTURE_PRIVATE_NAMES = make()\n")


SUBMODULES = {"aiortc": ["rtp", "codecs"], "aioice": ["ice", "turn"]}
REGISTRY = [
    ("aiortc.codecs.vpx", "Vp8Encoder._packetize"),
    ("aiortc", "RTCRtpSender.__rtcp_started"),
]

PRIVATE_CASES = [
    (
        "public names",
        "import aiortc\nfrom aiortc import RTCPeerConnection\nv = aiortc.__version__\n",
        [],
    ),
    ("our own private names", "class A:\n    def _go(self) -> None:\n        self._go()\n", []),
    ("a submodule", "import aiortc.rtp\n", ["import aiortc.rtp"]),
    (
        "from a submodule",
        "from aioice.ice import Connection\n",
        ["from aioice.ice import Connection"],
    ),
    ("a submodule by name", "from aiortc import rtp\n", ["from aiortc import rtp"]),
    ("a private name", "from aiortc import _x\n", ["from aiortc import _x"]),
    (
        "a submodule as an attribute",
        "import aioice\naioice.turn.SIZE = 1\n",
        ["aioice.turn.SIZE = 1"],
    ),
    ("a private attribute", "import aiortc as rtc\nrtc._hook = 1\n", ["rtc._hook = 1"]),
    (
        "a registered private name",
        "def f(enc):\n    return enc._packetize(b'')\n",
        ["return enc._packetize(b'')"],
    ),
    (
        "a registered private name of ours, on self",
        "class A:\n"
        "    def __init__(self):\n"
        "        self._packetize = 1\n"
        "        self._packetize += 1\n",
        [],
    ),
    (
        "a registered private method overridden in a subclass of theirs",
        "from aiortc.codecs import vpx\n"
        "class Mine(vpx.Vp8Encoder):\n"
        "    def _packetize(self):\n"
        "        return self._packetize()\n",
        ["from aiortc.codecs import vpx", "def _packetize(self):"],
    ),
    (
        "an inherited private method of theirs, on self",
        "from aiortc.codecs import vpx\n"
        "class Mine(vpx.Vp8Encoder):\n"
        "    def go(self):\n"
        "        return self._packetize()\n",
        ["from aiortc.codecs import vpx", "return self._packetize()"],
    ),
    (
        "a registered name-mangled attribute",
        "def f(sender):\n    return sender._RTCRtpSender__rtcp_started\n",
        ["return sender._RTCRtpSender__rtcp_started"],
    ),
    (
        "a registered private name as a string",
        "def f(enc):\n    setattr(enc, '_packetize', None)\n",
        ["setattr(enc, '_packetize', None)"],
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [case[1:] for case in PRIVATE_CASES],
    ids=[case[0] for case in PRIVATE_CASES],
)
def test_aiortc_internals_outside_the_adapter_are_found(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    tree = make(tmp_path, {"ms/__init__.py": "", "ms/peer.py": source, "ms/adapter.py": source})
    found = private_access(tree, "ms.adapter", REGISTRY, SUBMODULES)
    assert [(f.path, f.text) for f in found] == [("ms/peer.py", text) for text in expected]


# -- sizes -----------------------------------------------------------------------------


def test_long_modules_are_listed_with_their_counts(tmp_path: Path) -> None:
    tree = make(tmp_path, {"p/__init__.py": "x = 1\n" * 5, "p/ok.py": "x = 1\n" * 4})
    assert [str(f) for f in long_modules(tree, 4)] == ["p/__init__.py:1: 5 lines (at most 4)"]


def test_long_functions_in_the_given_packages_are_listed(tmp_path: Path) -> None:
    source = """
        def ok() -> None:
            x = 1
            x = 2

        class C:
            @property
            async def long(self) -> None:
                x = 1
                x = 2
                x = 3
    """
    tree = make(tmp_path, {"live/__init__.py": "", "live/m.py": source, "cold/m.py": source})
    # ok is 3 lines, long 4 (from its def, decorators aside)
    assert [str(f) for f in long_functions(tree, ["live"], 3)] == [
        "live/m.py:7: def long: 4 lines (at most 3)"
    ]

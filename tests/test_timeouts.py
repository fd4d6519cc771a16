"""The suite's own guard: a test that hangs on uvloop fails alone, showing where it
waits, and the run goes on (tests/timeouts.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
from tests.timeouts import new_uvloop, pytest_timeout_set_timer

def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": new_uvloop}
"""

HANGS = """
import asyncio

async def test_waits_for_nothing():
    never = asyncio.Event()
    await never.wait()  # the line the report must show

async def test_after_it():
    await asyncio.sleep(0)
"""


def test_a_hung_test_fails_alone_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_hangs.py").write_text(HANGS)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "--timeout",
            "2",
            "--rootdir",
            str(tmp_path),
            "-q",
            "-p",
            "no:randomly",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "test timed out after 2 s" in out
    assert "await never.wait()  # the line the report must show" in out

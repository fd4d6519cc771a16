"""The ``jointreview`` command as an operator meets it: every command and subcommand
prints plain ``--help`` (no reST markup) and ``--version``, and exits with the statuses
docs/cli.md documents, its errors on standard error."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jointreview import cli
from jointreview.version import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, version_text
from signaling import __version__

ROOT = Path(__file__).resolve().parent.parent


def command_paths() -> list[list[str]]:
    """Every command of the parser tree, as the words that call it."""
    out: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append([*words, name])
                    walk(sub, [*words, name])

    walk(cli.build_parser(), [])
    return out


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_prints_plain_help_and_the_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = command_paths()
    assert ["check-config"] in paths and ["directory", "import"] in paths
    assert ["bench", "sfu"] in paths  # nested subcommands too
    version = version_text()
    for words in paths:
        code, out, err = run([*words, "--help"], capsys)
        assert code == EXIT_OK, (words, err)
        assert out.startswith("usage: jointreview"), (words, out[:80])
        assert "``" not in out and ":ref:" not in out, f"reST in {words} --help"
        assert "--version" in out, words
        code, out, err = run([*words, "--version"], capsys)
        assert (code, out.strip(), err) == (EXIT_OK, version, ""), words
    # The top level lists the exit statuses.
    _, out, _ = run(["--help"], capsys)
    assert "exit status:" in out and "3    a configured service" in out


def test_the_version_is_the_packages_and_names_the_media_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    text = version_text()
    assert text.startswith(f"jointreview {__version__} (Python ")
    assert re.search(r"aiortc 1\.\d+\.\d+, aioice [\d.]+, pylibsrtp [\d.]+, av \d+", text)


def test_the_installed_command_answers_version(tmp_path: Path) -> None:
    # The real entry point, once, in a process of its own.
    done = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version_text()


def test_exit_statuses_and_errors_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Usage: argparse's 2, its message on stderr.
    code, out, err = run(["token", "--role", "nobody", "--user", "u"], capsys)
    assert (code, out) == (EXIT_CONFIG, "")
    assert "invalid choice: 'nobody'" in err
    # Configuration: 2, the setting named, on stderr.
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 99999\n")
    code, out, err = run(["token", "--role", "admin", "--user", "u", "--config", str(bad)], capsys)
    assert (code, out) == (EXIT_CONFIG, "")
    assert f"configuration error: port (from {bad}): " in err
    # A check that finds nothing to check: 1, on stderr.
    data = tmp_path / "data"
    code, out, err = run(
        ["verify", "NO-SUCH-CASE", "--files-only", "--data-dir", str(data)], capsys
    )
    assert (code, out) == (EXIT_FAILED, "")
    assert "no archived session of case 'NO-SUCH-CASE'" in err

"""``jointreview --version`` (on the command and on every subcommand), plain help text,
and the exit statuses every command shares (docs/cli.md).

The parsers are built by several modules, each with its own docstrings; this one goes
over the finished tree once: reST markup out of every description, line breaks kept,
a subcommand's one-line help as its description when it has none, and ``--version``
on each."""

from __future__ import annotations

import argparse
import platform
import re
from importlib import metadata

from signaling import __version__

# The exit statuses of every jointreview command (docs/cli.md#exit-statuses).
EXIT_OK = 0
EXIT_FAILED = 1  # a check found a difference, a request was refused or failed
EXIT_CONFIG = 2  # usage or configuration: a setting, a file it names, an input file
EXIT_UNREACHABLE = 3  # a configured service (Redis, PostgreSQL) does not answer
EXIT_INTERRUPTED = 130

EXIT_STATUSES = f"""exit status:
  {EXIT_OK}    done; for a check: nothing wrong
  {EXIT_FAILED}    a check found a problem, or the server refused or failed a request
  {EXIT_CONFIG}    usage or configuration error: a setting, a file it names, an input file
  {EXIT_UNREACHABLE}    a configured service (Redis, PostgreSQL) cannot be reached
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
errors go to standard error; see docs/cli.md"""

# The stack whose versions matter when a node misbehaves: the SFU uses private aiortc,
# aioice and pylibsrtp internals (pinned), and the recorder needs PyAV 17.
STACK = ("aiortc", "aioice", "pylibsrtp", "av", "aiohttp")


def version_text() -> str:
    """One line: jointreview's version, then Python's and the media stack's."""
    parts = [f"Python {platform.python_version()}"]
    for name in STACK:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} missing")
    return f"jointreview {__version__} ({', '.join(parts)})"


_LITERAL = re.compile(r"``([^`]+)``")
_ROLE = re.compile(r":[a-z]+:`([^`]+)`")


def plain(text: str | None) -> str | None:
    """Help text without reST: ``x`` and :role:`x` become x."""
    if text is None:
        return None
    return _ROLE.sub(r"\1", _LITERAL.sub(r"\1", text)).strip()


def finish_parser(parser: argparse.ArgumentParser, version: str | None = None) -> None:
    """Plain help and ``--version`` on ``parser`` and every subcommand below it."""
    top = version is None
    version = version or version_text()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = plain(parser.description)
    if top:
        parser.epilog = EXIT_STATUSES
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            action.help = "show this help and exit"
        action.help = plain(action.help) if isinstance(action.help, str) else action.help
    if not any("--version" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--version", action="version", version=version, help="print the version"
        )
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {c.dest: c.help for c in action._choices_actions}
        for name, sub in action.choices.items():
            if not sub.description:
                sub.description = helps.get(name)
            finish_parser(sub, version)

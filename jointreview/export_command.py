"""``jointreview export SESSION``: make a session's composite MP4 by hand, with a
progress bar.

Into the case file by default (``exports/composite.mp4``, listed in ``exports.json`` and
announced with ``export.ready`` in the case timeline), or with ``-o FILE`` into that
file only. The event goes to the store when that is safe from here: Redis always; the
single-node store only while no server runs on the data directory (the server owns that
store; its own export job would then find the file made and announce it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from recording.compose import Options
from recording.export import export_session, find_session
from signaling.config import Config
from signaling.directory import load_directory
from signaling.export_jobs import hold_data_dir, options_from, record_ready
from signaling.history import db, migrate
from signaling.history.repo import History
from signaling.models import Event


def add_parser(sub: Any, config_flags: Any) -> None:
    p = sub.add_parser(
        "export", help="render a session's composite MP4 (grid of participants, mixed audio)"
    )
    p.add_argument("session", help="the session id")
    p.add_argument("-o", "--output", metavar="FILE", help="write here, not into the case file")
    p.add_argument("--again", action="store_true", help="render even if already exported")
    p.add_argument("--width", type=int, help="output width (default: export_width)")
    p.add_argument("--height", type=int, help="output height (default: export_height)")
    p.add_argument("--fps", type=int, help="output frame rate (default: export_fps)")
    p.add_argument("--preset", help="x264 preset (default: export_preset)")
    p.add_argument("--threads", type=int, help="cores to use (default: export_threads)")
    config_flags(p)


def _options(args: argparse.Namespace, config: Config) -> Options:
    names = {d.id: d.name for d in load_directory(config.directory_file).departments}
    options = options_from(config, names)
    for name in ("width", "height", "fps", "preset", "threads"):
        value = getattr(args, name)
        if value is not None:
            setattr(options, name, value)
    return options


async def _announce(config: Config, case_id: str, session_id: str, made: dict[str, Any]) -> str:
    url = db.url_of(config.database_url, config.data_dir)
    await migrate.check(url)
    history = await History.open(url)
    try:
        return await _announce_in(config, history, case_id, session_id, made)
    finally:
        await history.close()


async def _announce_in(
    config: Config, history: History, case_id: str, session_id: str, made: dict[str, Any]
) -> str:
    # A case the live store forgot whole numbers on from the record's last seq.
    floor = history.last_seq
    if config.redis_url:
        from signaling.state.redis_store import RedisStore

        store = await RedisStore.connect(config.redis_url)
        try:
            recorded = await record_ready(store, case_id, session_id, made, floor)
        finally:
            await store.close()
        await _file(history, recorded)
        return "recorded" if recorded else "already recorded"
    lock = hold_data_dir(config)
    if lock is None:
        return "not recorded: a server runs on this data directory (its export job will)"
    try:
        from signaling.state import MemoryStore

        memory = MemoryStore(config.data_dir / "state")
        try:
            recorded = await record_ready(memory, case_id, session_id, made, floor)
        finally:
            await memory.close()
        await _file(history, recorded)
    finally:
        lock.close()
    return "recorded" if recorded else "already recorded"


async def _file(history: History, event: Event | None) -> None:
    """The event into the record too, as a node files every event (docs/history.md)."""
    if event is not None:
        await history.hook(event)


def main(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    archive = config.data_dir / "archive"
    found = find_session(archive, args.session)
    if found is None:
        print(
            f"jointreview export: no archived session {args.session!r} in {archive}",
            file=sys.stderr,
        )
        return 1
    case_id, _ = found
    options = _options(args, config)
    bar: Any = None

    def progress(done: float, total: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=round(total, 1), unit="s", desc="exporting", leave=True)
        bar.n = round(done, 1)
        bar.refresh()

    output = Path(args.output) if args.output else None
    t0 = time.perf_counter()
    try:
        made = export_session(
            archive,
            case_id,
            args.session,
            options,
            output=output,
            progress=progress,
            again=args.again,
        )
    except (OSError, ValueError) as exc:
        print(f"jointreview export: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    if made.get("skipped"):
        print(f"already exported: {made['absolute']} (use --again to render anew)")
    else:
        speed = made["duration_s"] / max(wall, 1e-9)
        parts = made.get("render", {}).get("parts", 1)
        how = f", in {parts} parts on as many processes" if parts > 1 else ""
        print(
            f"{made['absolute']}: {made['duration_s']:.1f} s, {made['width']}x{made['height']} "
            f"{made['fps']} fps, {made['size'] / 1e6:.2f} MB ({made['kbps']:.0f} kbps), "
            f"{wall:.1f} s to make ({speed:.1f}x real time{how})\nsha256 {made['sha256']}"
        )
    if output is None:
        print(f"export.ready: {asyncio.run(_announce(config, case_id, args.session, made))}")
    return 0

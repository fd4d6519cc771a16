"""Chat purged from a sealed case file (the redactable seal, manifest version 2), and
how ``jointreview verify`` checks a timeline with purged chat.

The manifest keeps each event's own hash ``e[i]`` (``archive.event_hash``) and the chain
over them. Retention's chat purge (``recording.retention``) replaces each chat event's
line of ``timeline.jsonl``, and the record's ``events`` row, by a **stub**: the event's
``case_id``, ``seq``, ``ts``, ``type`` and ``session_id``, no actor (a name and a user
id are personal data), and as data only ``{"purged": {"kind": "chat", "at": <when>,
"hash": e[i]}}``: no text, no participant. A stub checks when its ``hash`` is the
manifest's ``e[i]`` of that position and the tombstone (``purged.json``) names that
``seq`` with that hash; any other event must still hash to its ``e[i]``. Nothing here
imports the signaling layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .archive import CHAT, MANIFEST, TIMELINE, canonical, chain_hashes, event_hash

PURGED = "purged"
KEEP = ("case_id", "seq", "ts", "type", "session_id")


def stub(event: dict[str, Any], e: str, at: float) -> dict[str, Any]:
    """The stub that stands for a purged chat event (``e``: its hash in the manifest)."""
    out = {k: event.get(k) for k in KEEP}
    out.update(actor=None, data=stub_data(e, at))
    return out


def stub_data(e: str, at: float) -> dict[str, Any]:
    return {PURGED: {"kind": "chat", "at": at, "hash": e}}


def stub_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """The ``purged`` mark of a stub (None: a whole event). A stub holds nothing else."""
    data = event.get("data")
    if not isinstance(data, dict) or set(data) != {PURGED} or event.get("actor"):
        return None
    mark = data[PURGED]
    return mark if isinstance(mark, dict) and mark.get("kind") == "chat" else None


def redact_timeline(directory: Path, hashes: dict[int, str], at: float) -> int:
    """Replace the chat events ``hashes`` names (seq -> ``e[i]``) in ``timeline.jsonl``
    by stubs, in one atomic write; lines already stubs stay. Returns how many changed."""
    path = directory / TIMELINE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    out, changed = [], 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        seq = event.get("seq") if isinstance(event, dict) else None
        if seq in hashes and event.get("type") == CHAT and stub_of(event) is None:
            line = canonical(stub(event, hashes[seq], at))
            changed += 1
        out.append(line)
    if changed:
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write("".join(x + "\n" for x in out))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return changed


def check_chain(case_id: str, session_id: str, listed: list[dict[str, Any]], alg: str) -> list[str]:
    """The manifest's own chain: each ``h[i]`` over ``h[i-1]`` and ``e[i]``."""
    own = [str(m.get("event_hash")) for m in listed]
    hashes = chain_hashes(case_id, session_id, own, alg)
    for i, (m, h) in enumerate(zip(listed, hashes, strict=True)):
        if m.get("hash") != h:
            return [f"{MANIFEST}: hash chain broken at position {i + 1} (seq {m.get('seq')})"]
    return []


def diff_events(
    listed: list[dict[str, Any]],
    events: list[dict[str, Any]],
    where: str,
    alg: str,
    named: dict[int, str] | None,
) -> tuple[list[str], int]:
    """Where ``events`` (a timeline as found in ``where``) departs from a version-2
    manifest's ``listed`` events; ``named``: the tombstone's purged chat (seq -> hash).
    Returns (problems, chat messages purged as the tombstone says)."""
    want = {m.get("seq") for m in listed}
    have = {e.get("seq") for e in events}
    problems = [
        f"{where}: event removed at position {i + 1} (seq {m.get('seq')}, {m.get('type')})"
        for i, m in enumerate(listed)
        if m.get("seq") not in have
    ]
    problems += [
        f"{where}: event inserted at position {j + 1} (seq {e.get('seq')}, {e.get('type')})"
        for j, e in enumerate(events)
        if e.get("seq") not in want
    ]
    if problems:
        return problems, 0
    purged = 0
    for i, (m, event) in enumerate(zip(listed, events, strict=False)):
        seq, at = m.get("seq"), f"at position {i + 1} (seq {m.get('seq')}"
        if event.get("seq") != seq:
            problems.append(f"{where}: events reordered {at})")
            continue
        e = m.get("event_hash")
        if event_hash(event, alg) == e:
            continue
        mark = stub_of(event)
        if mark is None:
            problems.append(f"{where}: event edited {at}, {m.get('type')})")
        elif m.get("type") != CHAT or event.get("type") != CHAT:
            problems.append(
                f"{where}: {m.get('type')} replaced by a purge stub {at}): only chat is purged"
            )
        elif mark.get("hash") != e:
            problems.append(
                f"{where}: purged chat message {at}): its stub's hash does not match the manifest"
            )
        elif named is None or named.get(int(seq or 0)) != e:
            problems.append(
                f"{where}: chat message purged {at}) without a tombstone entry in purged.json"
            )
        else:
            purged += 1
    return problems, purged

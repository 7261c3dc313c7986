"""The refs log ``oluo_refs.log``: the local, append-only record of every head move.

Snapshot layer (a data-directory file; docs/FORMAT.md 3.1). This module is the one
writer and the one reader of the log. It holds wall-clock times, so it lives outside
the content-addressed data and never changes a CID.

Each line is one JSON object with sorted keys and no spaces. The records:

* ``{"generation": g, "head": hex, "op": "persist", "parent": hex | null, "time": t}``:
  a persist moved the head to manifest ``head`` (generation ``g``);
* the same with ``"op": "repair"``: ``Lab.repair_head`` pointed the head there;
* ``{"op": "gc-retire", "retired": [hex, ...], "time": t}``: gc removed the payloads of
  these history manifests on purpose (their manifests stay, so the log is complete).

``t`` is UTC ISO 8601 to the second (:func:`now_text`). A line is appended and
fsynced under ``data_dir_lock``; a crash can leave a torn last line, which
:func:`records` skips (with any other line that is not a JSON object) and which the
next :func:`append` ends with a newline first, so its record stays readable. The
helpers skip records whose fields do not have the types above.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import write_all
from ..cas import CID
from .durable import fsync_dir
from .errors import PersistIOError

REFS_LOG_NAME = "oluo_refs.log"

__all__ = [
    "REFS_LOG_NAME",
    "append",
    "head_moves",
    "heads_for",
    "now_text",
    "record_head_move",
    "record_retired",
    "records",
    "retired",
]


def now_text() -> str:
    """Wall time for the refs log (never in content-addressed data)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def append(data_dir: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line, durably (hold ``data_dir_lock``).

    After a torn last line the record goes on a line of its own. Raises
    :class:`PersistIOError` on failure."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path = data_dir / REFS_LOG_NAME
    try:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a torn last line, or this record would join it
            write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(data_dir)
    except OSError as exc:
        raise PersistIOError(f"cannot append to {path}", exc) from exc


def record_head_move(
    data_dir: Path, op: str, head: CID, generation: int, parent: CID | None
) -> None:
    """Record that ``op`` (``"persist"`` or ``"repair"``) moved the head to ``head``."""
    append(
        data_dir,
        {
            "op": op,
            "generation": generation,
            "head": head.hex,
            "parent": None if parent is None else parent.hex,
            "time": now_text(),
        },
    )


def record_retired(data_dir: Path, manifests: Iterable[CID]) -> None:
    """Record that gc retires the payloads of these history manifests."""
    append(data_dir, {"op": "gc-retire", "retired": [c.hex for c in manifests], "time": now_text()})


def records(data_dir: Path | str, *, missing_ok: bool = True) -> list[dict[str, Any]]:
    """Every record, oldest first; lines that are not a JSON object are skipped.

    Undecodable bytes are read with replacement (the line then fails to parse and is
    skipped). A missing log is ``[]`` (``missing_ok``) or :class:`PersistIOError`; an
    unreadable one is :class:`PersistIOError`."""
    path = Path(data_dir) / REFS_LOG_NAME
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except FileNotFoundError as exc:
        if missing_ok:
            return []
        raise PersistIOError(f"cannot read {path}", exc) from exc
    except OSError as exc:
        raise PersistIOError(f"cannot read {path}", exc) from exc
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _head_move(rec: dict[str, Any]) -> tuple[int, CID] | None:
    """``(generation, manifest)`` of a head-move record; None for any other record."""
    generation, head = rec.get("generation"), rec.get("head")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        return None
    try:
        return generation, CID.parse(head)
    except ValueError:
        return None


def head_moves(data_dir: Path | str, *, missing_ok: bool = True) -> list[tuple[int, CID]]:
    """``(generation, manifest)`` of every head move (persist and repair), oldest first."""
    moves = (_head_move(rec) for rec in records(data_dir, missing_ok=missing_ok))
    return [move for move in moves if move is not None]


def heads_for(data_dir: Path | str, generation: int) -> list[CID]:
    """The manifests the head was moved to as ``generation``, newest first."""
    return [cid for g, cid in reversed(head_moves(data_dir)) if g == generation]


def retired(data_dir: Path | str) -> set[CID]:
    """Manifests whose payloads gc retired on purpose; empty when the log is unreadable.

    A ``gc-retire`` record with a malformed entry keeps the entries before it."""
    out: set[CID] = set()
    try:
        recs = records(data_dir)
    except PersistIOError:
        return out
    for rec in recs:
        if rec.get("op") != "gc-retire" or not isinstance(rec.get("retired"), list):
            continue
        for text in rec["retired"]:
            try:
                out.add(CID.parse(text))
            except ValueError:  # MalformedCID, also for a non-str entry
                break
    return out

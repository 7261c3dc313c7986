"""The refs log ``oluo_refs.log``: the local, append-only record of every head move.

Snapshot layer (a data-directory file; docs/FORMAT.md §3.1, §3.6). This module is the one
writer and the one reader of the log. It holds wall-clock times, so it lives outside
the content-addressed data and never changes a CID.

Each line is one JSON object with sorted keys and no spaces. The records:

* ``{"generation": g, "head": hex, "op": "persist", "parent": hex | null, "time": t}``:
  a persist moved the head to manifest ``head`` (generation ``g``);
* the same with ``"op": "repair"``: ``Lab.repair_head`` pointed the head there;
* ``{"op": "gc-retire", "retired": [hex, ...], "time": t}``: gc removed the payloads of
  these history manifests on purpose (their manifests stay, so the log is complete);
* ``{"branch": b, "generation": g, "head": hex, "old": hex | null, "op": "commit",
  "parent": hex | null, "seq": n, "time": t, "timings": {...}}`` (``timings`` only when
  measured): ``Lab.commit`` made commit ``head`` (lab-wide number ``#n``) and moved
  branch ``b`` from ``old`` to it;
* ``{"branch": b, "head": hex | null, "old": hex | null, "op": "branch", "time": t}``:
  ``Lab.branch`` created or moved branch ``b`` to an existing commit (``head`` null: the
  branch was deleted).

**Commit numbers.** The commits of a lab are numbered ``#1, #2, ...`` in log order:
reading the records oldest first, the first ``persist`` or ``commit`` record naming a
manifest not yet numbered gives it its number: the record's ``seq`` when it has one,
else one more than the highest number so far (so a directory written by
``persist_snapshot`` alone numbers its generations in refs-log order). A number whose
record names a commit that never became reachable (a crash between the record and the
ref move) is simply never shown.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..cas import CID
from .durable import fsync_dir
from .errors import PersistIOError

#: format (docs/FORMAT.md §3.1): the refs log's name in a data directory.
REFS_LOG_NAME = "oluo_refs.log"

__all__ = [
    "REFS_LOG_NAME",
    "CommitRecord",
    "append",
    "branch_record",
    "commit_record",
    "commits",
    "head_move_record",
    "head_moves",
    "heads_for",
    "main_moves",
    "now_text",
    "record_head_move",
    "record_retired",
    "records",
    "retired",
    "retired_record",
    "retired_times",
]

#: records that make a commit (and so give it a number)
COMMIT_OPS = ("persist", "commit")


def now_text() -> str:
    """Wall time for the refs log (never in content-addressed data)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def append(data_dir: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line, durably (hold ``data_dir_lock``).

    After a torn last line the record goes on a line of its own. Raises
    :class:`PersistIOError` on failure."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path = data_dir / REFS_LOG_NAME
    step = "open"
    try:
        created = not path.exists()
        fd = _io.open_append(path)
        try:
            size = os.fstat(fd).st_size
            last = bytearray(1)
            step = "read"
            if size and (_io.pread_into(fd, last, size - 1) != 1 or last != b"\n"):
                line = b"\n" + line  # end a torn last line, or this record would join it
            step = "append to"
            _io.write_all(fd, line)
            step = "fsync"
            _io.fsync_fd(fd)
        finally:
            _io.close(fd)
        if created:
            step = "fsync the directory of"
            fsync_dir(data_dir)
    except OSError as exc:
        raise PersistIOError(f"cannot {step} {REFS_LOG_NAME}", exc) from exc


def head_move_record(op: str, head: CID, generation: int, parent: CID | None) -> dict[str, Any]:
    """The record of ``op`` (``"persist"`` or ``"repair"``) moving the head to ``head``."""
    return {
        "op": op,
        "generation": generation,
        "head": head.hex,
        "parent": None if parent is None else parent.hex,
        "time": now_text(),
    }


def record_head_move(
    data_dir: Path, op: str, head: CID, generation: int, parent: CID | None
) -> None:
    """Record that ``op`` (``"persist"`` or ``"repair"``) moved the head to ``head``."""
    append(data_dir, head_move_record(op, head, generation, parent))


def retired_record(manifests: Iterable[CID]) -> dict[str, Any]:
    """The record of gc retiring the payloads of these history manifests."""
    return {"op": "gc-retire", "retired": [c.hex for c in manifests], "time": now_text()}


def record_retired(data_dir: Path, manifests: Iterable[CID]) -> None:
    """Record that gc retires the payloads of these history manifests."""
    append(data_dir, retired_record(manifests))


def records(data_dir: Path | str, *, missing_ok: bool = True) -> list[dict[str, Any]]:
    """Every record, oldest first; lines that are not a JSON object are skipped.

    Undecodable bytes are read with replacement (the line then fails to parse and is
    skipped). A missing log is ``[]`` (``missing_ok``) or :class:`PersistIOError`; an
    unreadable one is :class:`PersistIOError`."""
    path = Path(data_dir) / REFS_LOG_NAME
    try:
        lines = _io.read_file(path).decode("utf-8", "replace").splitlines()
    except FileNotFoundError as exc:
        if missing_ok:
            return []
        raise PersistIOError(f"cannot read {REFS_LOG_NAME}", exc) from exc
    except OSError as exc:
        raise PersistIOError(f"cannot read {REFS_LOG_NAME}", exc) from exc
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
    """``(generation, manifest)`` of every move of the head file (the default branch
    ``main``: persist, repair, and commits to ``main``), oldest first."""
    return main_moves(records(data_dir, missing_ok=missing_ok))


def main_moves(recs: list[dict[str, Any]]) -> list[tuple[int, CID]]:
    """``(generation, manifest)`` of the moves of ``main``'s head in ``recs``, oldest first."""
    moves = (
        _head_move(rec)
        for rec in recs
        if rec.get("op") in ("persist", "repair")
        or (rec.get("op") in ("commit", "branch") and rec.get("branch") == "main")
    )
    return [move for move in moves if move is not None]


def heads_for(data_dir: Path | str, generation: int) -> list[CID]:
    """The manifests the head was moved to as ``generation``, newest first."""
    return [cid for g, cid in reversed(head_moves(data_dir)) if g == generation]


def retired(data_dir: Path | str) -> set[CID]:
    """Manifests whose payloads gc retired on purpose; empty when the log is unreadable.

    A ``gc-retire`` record with a malformed entry keeps the entries before it."""
    return set(retired_times(data_dir))


def retired_times(
    data_dir: Path | str, recs: list[dict[str, Any]] | None = None
) -> dict[CID, str | None]:
    """Retired manifest -> the time of the gc that retired it (None when the record has
    no time); empty when the log is unreadable. ``recs``: records already read."""
    out: dict[CID, str | None] = {}
    if recs is None:
        try:
            recs = records(data_dir)
        except PersistIOError:
            return out
    for rec in recs:
        if rec.get("op") != "gc-retire" or not isinstance(rec.get("retired"), list):
            continue
        when = rec.get("time") if isinstance(rec.get("time"), str) else None
        for text in rec["retired"]:
            try:
                out.setdefault(CID.parse(text), when)
            except ValueError:  # MalformedCID, also for a non-str entry
                break
    return out


@dataclass(frozen=True)
class CommitRecord:
    """What the log knows of one commit besides its manifest: its number, the branch it
    was committed to, when, and what was measured then (never in the manifest)."""

    seq: int
    cid: CID
    branch: str
    time: str | None
    timings: dict[str, Any] = field(default_factory=dict, compare=False)


def _seq_of(rec: dict[str, Any]) -> int | None:
    seq = rec.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        return seq
    return None


def commits(recs: list[dict[str, Any]]) -> tuple[dict[CID, CommitRecord], int]:
    """Every numbered commit (manifest -> its record) and the next free number, from
    ``recs`` (oldest first; see "Commit numbers" in the module docstring)."""
    out: dict[CID, CommitRecord] = {}
    last = 0
    for rec in recs:
        if rec.get("op") not in COMMIT_OPS:
            continue
        try:
            cid = CID.parse(rec.get("head"))
        except ValueError:
            continue
        if cid in out:
            continue
        seq = _seq_of(rec) or last + 1
        last = max(last, seq)
        branch = rec.get("branch") if isinstance(rec.get("branch"), str) else "main"
        when = rec.get("time") if isinstance(rec.get("time"), str) else None
        timings = rec.get("timings") if isinstance(rec.get("timings"), dict) else {}
        out[cid] = CommitRecord(seq, cid, branch, when, timings)
    return out, last + 1


def commit_record(
    branch: str,
    head: CID,
    generation: int,
    parent: CID | None,
    old: CID | None,
    timings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a commit, without its number (``RefStore.log_commit`` numbers it)."""
    rec: dict[str, Any] = {
        "op": "commit",
        "branch": branch,
        "head": head.hex,
        "generation": generation,
        "parent": None if parent is None else parent.hex,
        "old": None if old is None else old.hex,
        "time": now_text(),
    }
    if timings:
        rec["timings"] = timings
    return rec


def branch_record(branch: str, head: CID | None, old: CID | None) -> dict[str, Any]:
    """The record of a branch created, moved (``head``) or deleted (``head`` None)."""
    return {
        "op": "branch",
        "branch": branch,
        "head": None if head is None else head.hex,
        "old": None if old is None else old.hex,
        "time": now_text(),
    }

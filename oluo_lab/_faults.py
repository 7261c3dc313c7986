"""Crash-injection points for the reliability tests (a leaf module: imports nothing of ours).

Every durable step of the CAS and snapshot layers calls :func:`fault_point` with a name
from :data:`POINTS`. Unarmed (the normal case) the call is one global lookup and a
return. Armed, the process kills itself with ``SIGKILL`` when the ``nth`` hit of the
named point arrives, so a test can stop a writer exactly after any write, fsync, rename
or delete and check what a fresh process then finds on disk.

Arming: the environment variable ``OLUO_LAB_FAULT="name:nth"`` (read once, at import),
or :func:`arm` in a process that was forked for one trial. :func:`record` makes every
hit append its name to a list instead (to enumerate the steps of an operation).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV_VAR", "POINTS", "arm", "disarm", "fault_point", "points", "record"]

ENV_VAR = "OLUO_LAB_FAULT"

#: Every injection point, in the order a persist reaches them, with what has just happened.
POINTS: dict[str, str] = {
    "cas.tmp_written": "a CAS book's bytes are in its temp file (not yet synced)",
    "cas.synced": "a CAS temp file (or a batch of them, via syncfs) is synced",
    "cas.linked": "a CAS temp file is hard-linked to the book's final name",
    "cas.dir_synced": "the directory holding new CAS books is synced",
    "pack.tmp_written": "a pack's records and trailer are in its temp file (not yet synced)",
    "pack.synced": "a pack's temp file is synced",
    "pack.linked": "a pack is linked under its final name (still unreferenced)",
    "pack.dir_synced": "the packs directory is synced: the batch's packs are durable",
    "index.synced": "an index file's temp file is written and synced",
    "index.linked": "an index file is linked under its final name (its books are stored)",
    "index.dir_synced": "the index directory is synced",
    "durable.tmp_written": "atomic_write: new content written to the temp file",
    "durable.fsynced": "atomic_write: temp file fsynced",
    "durable.renamed": "atomic_write: temp file renamed over the target",
    "durable.dir_synced": "atomic_write: directory fsynced",
    "persist.index_encoded": "persist: index record and its DAGs are in the store",
    "persist.metadata_ingested": "persist: metadata DAG is in the store",
    "persist.manifest_put": "persist: manifest book is in the store",
    "persist.base_written": "persist: oluo_base.bin replaced",
    "persist.refs_logged": "persist: refs log line appended",
    "persist.head_written": "persist: oluo_head.json replaced (the commit point)",
    "refs.branches_written": "a branch ref moved: oluo_branches.json replaced (the commit "
    "point of a commit to a branch other than main, and of Lab.branch)",
    "lab.tags_written": "Lab.tag/untag: oluo_tags.json replaced",
    "gc.retire_logged": "gc: the gc-retire record is in the refs log",
    "gc.before_delete": "gc: about to delete one unreachable book",
    "gc.after_delete": "gc: one unreachable book deleted",
    "sweep.index_deleted": "pack gc: one superseded index file deleted",
    "sweep.pack_deleted": "pack gc: one unreferenced pack deleted",
    "convert.marker_written": "repack: the store's marker says packs (the conversion's commit point)",
    "convert.book_deleted": "repack: one old book file deleted",
}

_armed: tuple[str, int] | None = None
_hits = 0
_recording: list[str] | None = None


def _parse(text: str) -> tuple[str, int]:
    name, _, nth = text.rpartition(":")
    if not name:
        name, nth = text, "1"
    if name not in POINTS:
        raise ValueError(f"{ENV_VAR}: unknown fault point {name!r} (known: {sorted(POINTS)})")
    try:
        n = int(nth)
    except ValueError:
        raise ValueError(f"{ENV_VAR}: hit count {nth!r} is not an int") from None
    if n < 1:
        raise ValueError(f"{ENV_VAR}: hit count must be >= 1, got {n}")
    return name, n


def points() -> tuple[str, ...]:
    """Names of every injection point (the registry a test iterates)."""
    return tuple(POINTS)


def arm(name: str, nth: int = 1) -> None:
    """Kill this process with SIGKILL at the ``nth`` hit of point ``name``."""
    global _armed, _hits
    _armed = _parse(f"{name}:{nth}")
    _hits = 0


def disarm() -> None:
    """Stop killing and recording."""
    global _armed, _hits, _recording
    _armed, _hits, _recording = None, 0, None


def record() -> list[str]:
    """Record every hit (in order) into the returned list instead of killing."""
    global _recording
    _recording = []
    return _recording


def fault_point(name: str) -> None:
    """Mark a durable step; does nothing unless armed (see the module docstring)."""
    if _armed is None and _recording is None:
        return
    _hit(name)


def _hit(name: str) -> None:
    global _hits
    if name not in POINTS:
        raise AssertionError(f"fault point {name!r} is not registered in oluo_lab._faults.POINTS")
    if _recording is not None:
        _recording.append(name)
    if _armed is not None and _armed[0] == name:
        _hits += 1
        if _hits == _armed[1]:
            os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get(ENV_VAR):
    _armed = _parse(os.environ[ENV_VAR])

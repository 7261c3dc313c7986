"""Simulated power loss: record an operation's file operations, then build every crash
state a power cut may leave, and check that each loads as the previous or the new state.

A SIGKILL leaves the page cache intact, so the crash suite (``crash_harness.py``) cannot
show what a power cut does to writes that were never made durable. This module follows
SQLite's crash-test VFS (``test6.c``: unsynced writes are kept, lost or garbled when the
simulated crash comes) and the ALICE / CrashMonkey line of checkers (record the system
calls of a workload, then construct the on-disk states the file system's persistence
model allows at each point, and run the application's recovery on each):

* **Recording.** Every file operation of the package goes through ``oluo_lab._io``; the
  :class:`Recorder` hook logs the ones that change storage, resolved to inodes: creates
  and opens that create (``create``), ``write`` (inode, offset, bytes), ``fsync`` of a
  file, ``fsync_dir``, ``syncfs``, ``link``, ``rename``, ``unlink``, ``mkdir``, ``rmdir``.
* **Persistence model** (POSIX, nothing assumed of a particular file system): before the
  operation everything is durable. A ``write`` is durable once its file is fsynced
  (``fsync`` of the inode, or ``syncfs``) later in the trace; a directory change
  (create, link, rename, unlink, mkdir, rmdir) once its directory is fsynced
  (``fsync_dir``) or ``syncfs`` runs. A file's fsync does **not** make its name durable.
  Anything not yet durable at the cut may be lost, independently of the rest (so the
  surviving operations may appear reordered), and a surviving write may be torn: only a
  prefix of it, or its first 4 KiB block replaced by zeros (a file extended whose data
  never reached the disk).
* **States.** A cut after each of the ``n`` recorded operations (and before the first);
  at each, the durable operations always apply and the pending ones are chosen by
  :func:`crash_states`: all, none, each one dropped, each one alone, each pending write
  torn both ways, and every subset when at most ``exhaustive`` are pending (else
  ``samples`` random subsets). States are deduplicated by their files' contents.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: block size of a torn write
BLOCK = 4096
_OPENS = ("create", "open_append", "open_lock")


@dataclass(frozen=True)
class Op:
    """One recorded file operation (paths relative to the lab, "" its root)."""

    kind: str  # create write fsync fsync_dir syncfs link rename unlink mkdir rmdir
    ino: int = 0
    dir: str = ""  # the directory whose entries change (or which is fsynced)
    name: str = ""
    dir2: str = ""  # rename / link: the target directory and name
    name2: str = ""
    offset: int = 0
    data: bytes = b""

    def dirs(self) -> tuple[str, ...]:
        return (self.dir, self.dir2) if self.dir2 else (self.dir,)


class Recorder:
    """An ``_io`` hook recording the operations of :class:`Op` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.ops: list[Op] = []
        self._fds: dict[int, tuple[int, bool]] = {}  # fd -> (inode, append mode)
        self._lock = threading.Lock()

    def rel(self, path: Any) -> str:
        p = os.path.realpath(os.fspath(path))
        return "" if p == self.root else os.path.relpath(p, self.root)

    def _split(self, path: Any) -> tuple[str, str]:
        rel = self.rel(path)
        parent, _, name = rel.rpartition("/")
        return parent, name

    def _add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def __call__(self, kind: str, fn: Callable, args: tuple) -> Any:
        if kind in _OPENS or kind == "open":
            existed = os.path.exists(args[0])
            fd = fn(*args)
            ino = os.fstat(fd).st_ino
            self._fds[fd] = (ino, kind == "open_append")
            if not existed:
                self._add(Op("create", ino, *self._split(args[0])))
            return fd
        if kind == "write":
            fd, data = args
            ino, append = self._fds[fd]
            offset = os.fstat(fd).st_size if append else os.lseek(fd, 0, os.SEEK_CUR)
            out = fn(*args)
            self._add(Op("write", ino, offset=offset, data=bytes(memoryview(data).cast("B"))))
            return out
        if kind == "fsync":
            out = fn(*args)
            self._add(Op("fsync", self._fds[args[0]][0]))
            return out
        if kind == "fsync_path":
            out = fn(*args)
            self._add(Op("fsync", os.stat(args[0]).st_ino))
            return out
        if kind == "fsync_dir":
            out = fn(*args)
            self._add(Op("fsync_dir", dir=self.rel(args[0])))
            return out
        if kind == "syncfs":
            out = fn(*args)
            self._add(Op("syncfs"))
            return out
        if kind in ("link", "rename"):
            ino = os.stat(args[0]).st_ino
            out = fn(*args)
            (d1, n1), (d2, n2) = self._split(args[0]), self._split(args[1])
            self._add(Op(kind, ino, d1, n1, d2, n2))
            return out
        if kind in ("unlink", "mkdir", "rmdir"):
            out = fn(*args)
            if kind != "mkdir" or out:
                self._add(Op(kind, 0, *self._split(args[0])))
            return out
        return fn(*args)  # reads, lists, closes


@dataclass
class Disk:
    """Directory entries and inode contents: the state before the operation."""

    dirs: set[str] = field(default_factory=set)
    entries: dict[tuple[str, str], int] = field(default_factory=dict)  # (dir, name) -> ino
    data: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path) -> Disk:
        disk = cls(dirs={""})
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            for d in dirnames:
                disk.dirs.add(f"{rel}/{d}" if rel else d)
            for f in filenames:
                p = os.path.join(dirpath, f)
                ino = os.stat(p).st_ino
                disk.entries[(rel, f)] = ino
                disk.data.setdefault(ino, Path(p).read_bytes())
        return disk


def durable_from(ops: list[Op]) -> list[int]:
    """For each operation, the index of the first later barrier that makes it durable
    (``len(ops) + 1`` when none does; barriers themselves: their own index)."""
    never = len(ops) + 1
    out = []
    for i, op in enumerate(ops):
        if op.kind in ("fsync", "fsync_dir", "syncfs"):
            out.append(i)
            continue
        need = set() if op.kind == "write" else set(op.dirs())
        at = never
        for j in range(i + 1, len(ops)):
            o = ops[j]
            if o.kind == "syncfs":
                at = j
                break
            if op.kind == "write":
                if o.kind == "fsync" and o.ino == op.ino:
                    at = j
                    break
            elif o.kind == "fsync_dir" and o.dir in need:
                need.discard(o.dir)
                if not need:
                    at = j
                    break
        out.append(at)
    return out


def pending_at(ops: list[Op], k: int, done: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(durable, pending) indices among ``ops[:k]`` (see the persistence model);
    ``done``: :func:`durable_from` of ``ops``, when already computed."""
    done = durable_from(ops) if done is None else done
    durable, pending = [], []
    for i in range(k):
        if ops[i].kind in ("fsync", "fsync_dir", "syncfs"):
            continue
        (durable if done[i] < k else pending).append(i)
    return durable, pending


def apply(disk: Disk, ops: list[Op], chosen: dict[int, str]) -> Disk:
    """The disk after the operations ``chosen`` (index -> "full", "prefix" or "zeros"),
    in trace order."""
    out = Disk(set(disk.dirs), dict(disk.entries), dict(disk.data))
    for i in sorted(chosen):
        op, how = ops[i], chosen[i]
        if op.kind == "create":
            out.entries[(op.dir, op.name)] = op.ino
            out.data.setdefault(op.ino, b"")
        elif op.kind == "write":
            data = op.data
            if how == "prefix":
                data = data[: max(1, len(data) // 2)]
            elif how == "zeros":
                data = bytes(min(BLOCK, len(data))) + data[BLOCK:]
            buf = bytearray(out.data.get(op.ino, b""))
            if len(buf) < op.offset:
                buf += bytes(op.offset - len(buf))
            buf[op.offset : op.offset + len(data)] = data
            out.data[op.ino] = bytes(buf)
        elif op.kind == "link":
            out.entries[(op.dir2, op.name2)] = op.ino
        elif op.kind == "rename":
            if out.entries.get((op.dir, op.name)) == op.ino:
                del out.entries[(op.dir, op.name)]
            out.entries[(op.dir2, op.name2)] = op.ino
        elif op.kind == "unlink":
            out.entries.pop((op.dir, op.name), None)
        elif op.kind == "mkdir":
            out.dirs.add(f"{op.dir}/{op.name}" if op.dir else op.name)
        elif op.kind == "rmdir":
            out.dirs.discard(f"{op.dir}/{op.name}" if op.dir else op.name)
    return out


def _reachable(disk: Disk, d: str) -> bool:
    while d:
        if d not in disk.dirs:
            return False
        d = d.rpartition("/")[0]
    return True


def fingerprint(disk: Disk) -> str:
    h = hashlib.blake2b(digest_size=16)
    for d in sorted(x for x in disk.dirs if _reachable(disk, x)):
        h.update(b"D" + d.encode() + b"\0")
    for (d, n), ino in sorted(disk.entries.items()):
        if _reachable(disk, d):
            h.update(f"F{d}/{n}\0".encode() + hashlib.blake2b(disk.data[ino]).digest())
    return h.hexdigest()


def materialise(disk: Disk, target: Path) -> None:
    """Write the disk's reachable files under ``target`` (a new directory)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for d in sorted(disk.dirs, key=len):
        if d and _reachable(disk, d):
            (target / d).mkdir(exist_ok=True)
    for (d, n), ino in disk.entries.items():
        if _reachable(disk, d):
            (target / d / n).write_bytes(disk.data[ino])


def crash_states(
    ops: list[Op],
    k: int,
    exhaustive: int,
    samples: int,
    rng: random.Random,
    done: list[int] | None = None,
) -> Iterator[tuple[str, dict[int, str]]]:
    """(label, chosen operations) of the crash states at cut ``k`` (see the module docstring)."""
    durable, pending = pending_at(ops, k, done)
    base = dict.fromkeys(durable, "full")
    yield "all", {**base, **dict.fromkeys(pending, "full")}
    if not pending:
        return
    yield "durable only", base
    for i in pending:
        yield f"lost {ops[i].kind} #{i}", {**base, **{j: "full" for j in pending if j != i}}
        yield f"only {ops[i].kind} #{i}", {**base, i: "full"}
        if ops[i].kind == "write":
            for how in ("prefix", "zeros"):
                rest = {j: "full" for j in pending if j != i}
                yield f"torn ({how}) write #{i}", {**base, **rest, i: how}
    if len(pending) <= exhaustive:
        for r in range(2, len(pending) - 1):
            for keep in itertools.combinations(pending, r):
                yield f"subset {keep}", {**base, **dict.fromkeys(keep, "full")}
    else:
        for _ in range(samples):
            keep = [j for j in pending if rng.random() < 0.5]
            yield f"random {keep}", {**base, **dict.fromkeys(keep, "full")}


@dataclass
class Tally:
    """States built and checked for one operation."""

    ops: int = 0
    cuts: int = 0
    states: int = 0
    unique: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def explore(
    ops: list[Op],
    before: Disk,
    check: Callable[[Disk, str], str],
    *,
    exhaustive: int,
    samples: int,
    seed: int,
    max_unique: int | None = None,
    cuts: list[int] | None = None,
) -> Tally:
    """Check every crash state of every cut (``cuts``: only these); ``check(disk,
    label)`` returns the outcome (raising AssertionError on a violation)."""
    rng = random.Random(seed)
    done = durable_from(ops)
    tally = Tally(ops=len(ops))
    seen: set[str] = set()
    todo: list[tuple[str, Disk]] = []
    for k in cuts if cuts is not None else range(len(ops) + 1):
        tally.cuts += 1
        for label, chosen in crash_states(ops, k, exhaustive, samples, rng, done):
            tally.states += 1
            disk = apply(before, ops, chosen)
            fp = fingerprint(disk)
            if fp in seen:
                continue
            seen.add(fp)
            todo.append((f"cut {k}/{len(ops)}, {label}", disk))
    if max_unique is not None and len(todo) > max_unique:
        todo = [todo[0], todo[-1], *rng.sample(todo[1:-1], max_unique - 2)]
    for label, disk in todo:
        outcome = check(disk, label)
        tally.unique += 1
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1
    return tally

"""OS errors below the process: every file operation of persist, commit, gc, tag, load and
checkout fails in turn (ENOSPC, EIO, EROFS, EACCES, EMFILE, EDQUOT), on labs with a pack
store and with a directory store.

Every file operation of the package goes through ``oluo_lab._io``; a clean run of each
operation is recorded there as a list of (operation, file) steps, files named by their
role (``cas/packs/PACK``, ``.oluo-tmp-oluo_head.json``, ``cas/books/*/BOOK``). Each trial
then fails the first or the last occurrence of one step (of a read: the first) with one
errno (the errnos taken in turn; the first step of each operation with all of them) and
requires:

1. the call raises ``PersistIOError`` or ``StoreIOError`` carrying the injected errno,
   whose message names the operation and the file (or succeeds, when the failed step was
   a clean-up it may skip, such as removing a temp file);
2. a fresh reader sees exactly the previous or exactly the new state;
3. the same call, retried once the fault is gone, succeeds and leaves exactly the state
   of a clean run (the same manifest CIDs, answers, tags);
4. after ``gc``, ``verify()`` is clean, no temp file is left and nothing is unreachable.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import crash_harness as ch
import pytest

from oluo_lab import _io
from oluo_lab.cas import StoreIOError, open_store
from oluo_lab.snapshot import Lab, PersistIOError, load_snapshot, persist_snapshot

pytestmark = pytest.mark.reliability

ERRNOS = (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EACCES, errno.EMFILE, errno.EDQUOT)
#: operations under test: the harness's operations, plus two reads
OPS = ("persist", "commit", "gc", "tag", "dir:commit", "dir:gc", "load", "checkout", "dir:load")
#: operations on a file descriptor (their file is the one the descriptor was opened on)
_OPENS = ("create", "open", "open_append", "open_lock")
_READS = ("open", "read", "list")


def role(path: object, lab_dir: Path) -> str:
    """A path named by its role in the lab (stable across runs and threads)."""
    p = os.fspath(path)
    if p.startswith(os.fspath(lab_dir)):
        p = p[len(os.fspath(lab_dir)) + 1 :]
    for pattern, repl in (
        (r"books/[0-9a-f]{2}/[0-9a-f]{80}$", "books/*/BOOK"),
        (r"books/[0-9a-f]{2}/\.tmp-.*", "books/*/.tmp-*"),
        (r"books/[0-9a-f]{2}$", "books/*"),
        (r"(packs|index)/\.tmp-.*", r"\1/.tmp-*"),
        (r"packs/[0-9a-f]+\.olp$", "packs/PACK"),
        (r"index/[0-9a-f]+\.oli$", "index/INDEX"),
        (r"\.oluo-tmp-([a-z_.]+?)\.\d+\..*", r".oluo-tmp-\1"),
    ):
        p = re.sub(pattern, repl, p)
    return p or "."


class Injector:
    """An ``_io`` hook: records (operation, role, path) of every call; fails the
    ``nth`` call of step ``target`` with ``errno`` (once)."""

    def __init__(
        self, lab_dir: Path, target: tuple[str, str] | None = None, nth: int = 0, err: int = 0
    ):
        self.lab_dir = lab_dir
        self.target, self.nth, self.err = target, nth, err
        self.fds: dict[int, str] = {}
        self.steps: list[tuple[str, str]] = []
        self.seen = 0
        self.fired: str | None = None

    def __call__(self, op: str, fn: Callable, args: tuple):
        path = self.fds.get(args[0], "?") if args and isinstance(args[0], int) else args[0]
        key = (op, role(path, self.lab_dir))
        self.steps.append(key)
        if key == self.target and self.fired is None:
            self.seen += 1
            if self.seen == self.nth:
                self.fired = os.fspath(path)
                raise OSError(self.err, os.strerror(self.err), os.fspath(path))
        out = fn(*args)
        if op in _OPENS:
            self.fds[out] = os.fspath(args[0])
        return out


def _setup(op: str, d: Path, payload: dict) -> Callable[[], object]:
    """The call under test, prepared outside the injection (so a retry is the same call)."""
    name = ch.split_op(op)[1]
    if name == "persist":
        store = open_store(d / "cas")
        p = payload["gen3"]
        return lambda: persist_snapshot(
            d, store, p["index"], p["meta"], p["kc"], p["gen"], note="gen3", progress=False
        )
    lab = Lab(d)
    if name == "commit":
        eng = lab.checkout("HEAD", progress=False)
        ch._commit_changes(eng)
        return lambda: lab.commit(eng, note="commit trial", run=7, progress=False)
    if name == "gc":
        return lambda: lab.gc(dry_run=False, grace_s=0, keep_last=2, progress=False)
    if name == "tag":
        return lambda: lab.tag("best", 1)
    if name == "load":
        (d / "oluo_base.bin").unlink()  # the load rewrites it
        return lambda: load_snapshot(d, lab.store, progress=False)
    assert name == "checkout"
    return lambda: lab.checkout("HEAD", progress=False).search(ch.queries(), k=3)


def _template_op(op: str) -> str:
    kind, name = ch.split_op(op)
    base = {"load": "persist", "checkout": "tag"}.get(name, name)
    return base if kind == "packs" else f"{kind}:{base}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = ch.scratch_root(tmp_path_factory.mktemp("iofaults"))
    try:
        with ch.ForkServer() as server:
            ws = ch.prepare(root, server, ops=tuple(sorted({_template_op(op) for op in OPS})))
        payload = pickle.loads(ws.payload_path.read_bytes())
        steps = {}
        for op in OPS:
            d = ws.fresh_copy(_template_op(op))
            call = _setup(op, d, payload)
            rec = Injector(d)
            prev = _io.set_hook(rec)
            try:
                call()
            finally:
                _io.set_hook(prev)
            steps[op] = rec.steps
        yield ws, payload, steps
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _observe(op: str, d: Path) -> tuple:
    name = ch.split_op(op)[1]
    if name in ("load", "checkout"):
        return ch.observe(_template_op(op), d)[:1]
    return ch.observe(op, d)


def _trials(steps: list[tuple[str, str]]) -> list[tuple[tuple[str, str], int, int]]:
    """(step, nth, errno) of every trial: the first and the last occurrence of each step,
    errnos in turn; the operation's first step with every errno."""
    counts = Counter(steps)
    out = []
    for i, key in enumerate(sorted(counts)):
        last = counts[key] if key[0] not in _READS else 1  # reads: the first one only
        for nth in sorted({1, last}):
            out.append((key, nth, ERRNOS[(i + nth) % len(ERRNOS)]))
    first = steps[0]
    out += [(first, 1, e) for e in ERRNOS if (first, 1, e) not in out]
    return out


def _names_the_file(exc: BaseException, path: str, lab_dir: Path) -> bool:
    text = str(exc)
    base = os.path.basename(path.rstrip("/"))
    if path.rstrip("/") == os.fspath(lab_dir):  # the data directory itself
        return "directory" in text
    stem = re.sub(r"^\.oluo-tmp-([a-z_.]+?)\.\d+\..*", r"\1", base)
    return stem in text or base in text


@pytest.mark.parametrize("op", OPS)
def test_every_file_operation_fails_typed_and_nothing_is_lost(workspace, op):
    ws, payload, steps = workspace
    template = _template_op(op)
    prev = _observe(op, ws.template(template))
    clean_dir = ws.fresh_copy(template)
    _setup(op, clean_dir, payload)()
    new = _observe(op, clean_dir)
    trials = _trials(steps[op])
    assert len(trials) >= 10, f"{op}: only {len(trials)} I/O steps recorded"
    outcomes: Counter[str] = Counter()
    for key, nth, err in trials:
        where = f"{op}: {key[0]} {key[1]} #{nth} -> {errno.errorcode[err]}"
        d = ws.fresh_copy(template)
        call = _setup(op, d, payload)
        inj = Injector(d, key, nth, err)
        hook = _io.set_hook(inj)
        try:
            call()
            raised = None
        except Exception as exc:  # judged below
            raised = exc
        finally:
            _io.set_hook(hook)
        assert inj.fired, f"{where}: the step was not reached"
        if raised is not None:
            assert isinstance(raised, (PersistIOError, StoreIOError)), f"{where}: {raised!r}"
            cause = raised if isinstance(raised, StoreIOError) else raised.cause
            assert getattr(cause, "errno", None) == err, f"{where}: {raised!r} lost the errno"
            assert "cannot " in str(raised), f"{where}: {raised}"
            assert _names_the_file(raised, inj.fired, d), f"{where}: {raised} names no file"
            seen = _observe(op, d)
            assert seen in (prev, new), f"{where}: neither the previous nor the new state"
            outcomes["raised, saw " + ("new" if seen == new and seen != prev else "prev")] += 1
            call()  # the retry, the fault gone
        else:
            outcomes["completed"] += 1
        assert _observe(op, d) == new, f"{where}: the retry did not leave the clean run's state"
        Lab(d).gc(dry_run=False, grace_s=0, progress=False)
        rep = Lab(d).verify(sample=4, progress=False)
        assert not rep.problems and not rep.unreachable_books, f"{where}: after gc: {rep!r}"
        assert ch.temp_files(d) == [], f"{where}: temp files after gc: {ch.temp_files(d)}"
        assert _observe(op, d) == new, f"{where}: gc changed what a reader sees"
    assert outcomes["raised, saw prev"] or outcomes["raised, saw new"], outcomes


def test_a_real_full_disk(tmp_path):
    """An 11 MB tmpfs: the first commit fits, the second does not; the error is typed, the
    first commit loads and verifies, gc leaves no temp file, and once the file system is
    grown the same call commits exactly what a lab with room commits."""
    import subprocess

    import numpy as np

    from oluo_lab.engine import OluoEngine

    mnt = tmp_path / "small"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=11m", "tmpfs", str(mnt)]
    try:
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not permitted here")
    except OSError:
        pytest.skip("no mount command")
    try:
        rng = np.random.default_rng(0)
        first, second = (rng.standard_normal((6000, 96)).astype(np.float32) for _ in range(2))

        def run(root: Path) -> tuple[Lab, object, object]:
            lab = Lab(root / "lab", parents=True)
            eng = OluoEngine(96, M=8, ef_construction=20)
            eng.add(first)
            one = lab.commit(eng, note="one", progress=False)
            eng.add(second)
            return lab, eng, one

        ref_lab, ref_eng, _ = run(tmp_path / "roomy")
        ref = ref_lab.commit(ref_eng, note="two", progress=False)
        lab, eng, one = run(mnt)
        with pytest.raises((PersistIOError, StoreIOError)) as info:
            lab.commit(eng, note="two", progress=False)
        cause = info.value if isinstance(info.value, StoreIOError) else info.value.cause
        assert cause.errno == errno.ENOSPC and "cannot " in str(info.value)
        assert Lab(mnt / "lab").head().cid == one.cid
        assert Lab(mnt / "lab").verify(sample=4, progress=False)
        Lab(mnt / "lab").gc(dry_run=False, grace_s=0, progress=False)
        assert ch.temp_files(mnt / "lab") == []
        grow = ["mount", "-o", "remount,size=64m", str(mnt)]
        assert subprocess.run(grow, capture_output=True).returncode == 0
        two = lab.commit(eng, note="two", progress=False)
        assert two.cid == ref.cid and Lab(mnt / "lab").head().cid == ref.cid
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

"""Read-only labs: everything that only reads works on a lab this process cannot write,
attempting no write at all (no lock file, no temp file, no base cache); everything that
writes refuses with ReadOnlyLab before touching anything (the engine is not compacted).

The lab is served through a read-only bind mount (root ignores permission bits, so a
``chmod`` would prove nothing); where mounting is not permitted the test skips. Every
file operation of the package goes through ``oluo_lab._io``, so the test also records
them and requires that no write was even tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oluo_lab import _io
from oluo_lab.cas import open_store
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import EvalSpec, Lab, ReadOnlyLab, load_snapshot, persist_snapshot

pytestmark = pytest.mark.reliability

DIM = 16
ROOT = Path(__file__).resolve().parents[2]
#: the operations of oluo_lab._io that change storage
WRITES = frozenset(
    {"create", "write", "fsync", "fsync_path", "fsync_dir", "syncfs", "link", "rename"}
    | {"unlink", "rmdir", "mkdir", "open_lock", "open_append"}
)


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _mount_ro(src: Path, dst: Path) -> bool:
    dst.mkdir()
    steps = (
        ["mount", "--bind", str(src), str(dst)],
        ["mount", "-o", "remount,bind,ro", str(dst)],
    )
    for i, cmd in enumerate(steps):
        try:
            ok = subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            ok = False
        if not ok:
            if i:
                subprocess.run(["umount", "-l", str(dst)], capture_output=True)
            return False
    return True


def _tree(d: Path) -> dict[str, str]:
    return {
        os.fspath(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module", params=["packs", "dir"])
def ro_lab(tmp_path_factory, request):
    """(read-only mount of a lab, its writable source): three commits on main, a branch
    with a recorded evaluation, a tag."""
    root = tmp_path_factory.mktemp("ro")
    src = root / "lab"
    src.mkdir()
    open_store(src / "cas", kind=request.param)
    lab = Lab(src)
    eng = OluoEngine(DIM, M=8, ef_construction=40, ef_search=64)
    eng.add(_vectors(200, 0), ids=[f"a{i}" for i in range(200)], metadata=[{"i": 1}] * 200)
    lab.commit(eng, note="one")
    eng.add(_vectors(40, 1), ids=[f"b{i}" for i in range(40)])
    lab.commit(eng, note="two", M=8)
    eng.delete([f"a{i}" for i in range(20)])
    lab.commit(eng, note="three")
    lab.tag("best", 2)
    exp = lab.checkout(2)
    exp.add(_vectors(10, 2), ids=[f"e{i}" for i in range(10)])
    lab.commit(exp, branch="exp", evaluate=EvalSpec(_vectors(8, 3), k=5, timings=False))
    (src / "oluo.lock").unlink()  # a lab copied from elsewhere: no lock file yet
    mnt = root / "mnt"
    if not _mount_ro(src, mnt):
        pytest.skip("read-only bind mounts are not permitted here")
    try:
        yield mnt, src
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@contextlib.contextmanager
def _recording():
    ops: list[tuple[str, str]] = []

    def hook(op, fn, args):
        ops.append((op, str(args[0]) if args else ""))
        return fn(*args)

    prev = _io.set_hook(hook)
    try:
        yield ops
    finally:
        _io.set_hook(prev)


def test_the_mount_is_read_only(ro_lab):
    mnt, _ = ro_lab
    with pytest.raises(OSError):
        (mnt / "probe").write_bytes(b"x")


def test_everything_that_reads_works_and_writes_nothing(ro_lab):
    mnt, src = ro_lab
    before = _tree(src)
    q = _vectors(5, 9)
    with _recording() as ops:
        lab = Lab.open(mnt)
        assert len(lab.log()) == 4 and len(lab.runs()) == 4
        assert lab.head().note == "three" and lab.tags()["best"] == lab.resolve(2).cid
        assert sorted(lab.branches()["branch"]) == ["exp", "main"]
        head = lab.checkout("HEAD")
        assert len(head) == 220
        assert len(lab.checkout("best")) == 240 and len(lab.checkout("exp")) == 250
        assert lab.compare(1, 2, "exp").shape[0] > 0
        d = lab.diff(1, "main", queries=q, k=3)
        assert len(d.ids_added) == 40 and len(d.ids_removed) == 20
        assert lab.verify(sample=8), "verify must be clean on a read-only lab"
        plan = lab.gc(dry_run=True, grace_s=0)
        assert plan.dry_run and plan.deleted_books == 0
        loaded = load_snapshot(mnt, lab.store)
        assert loaded is not None
        eng, _, gen = loaded
        assert gen == head.generation
        np.testing.assert_array_equal(eng.search(q, k=5).ids, head.search(q, k=5).ids)
        assert set(lab.evaluations()["branch"]) == {"exp"}
    tried = sorted({(op, Path(p).name) for op, p in ops if op in WRITES})
    assert tried == [], f"a read-only operation tried to write: {tried}"
    assert _tree(src) == before and not (src / "oluo.lock").exists()


#: CLI commands that only read (each must exit 0 on the read-only lab)
READ_COMMANDS = [
    ["log"],
    ["runs"],
    ["show", "HEAD"],
    ["compare", "1", "2"],
    ["diff", "1", "HEAD", "--no-semantic"],
    ["verify", "--sample", "4"],
    ["gc"],
    ["tag"],
    ["branch"],
]
#: CLI commands that write (each must exit 2 saying the lab is read-only)
WRITE_COMMANDS = [["tag", "x"], ["branch", "y"], ["gc", "--run"], ["repack"]]

_CLI = """
import contextlib, io, json, sys
from oluo_lab.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        codes.append((main(argv), err.getvalue()))
print(json.dumps(codes))
"""


def _cli(mnt: Path, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Exit code and stderr of each command, run in one fresh process."""
    import json

    argvs = [[c[0], str(mnt), *c[1:]] for c in commands]
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_read_commands_work_and_write_commands_say_read_only(ro_lab):
    mnt, src = ro_lab
    before = _tree(src)
    for command, (code, err) in zip(READ_COMMANDS, _cli(mnt, READ_COMMANDS), strict=True):
        assert code == 0, (command, err)
    for command, (code, err) in zip(WRITE_COMMANDS, _cli(mnt, WRITE_COMMANDS), strict=True):
        assert code == 2 and "read-only" in err, (command, err)
    assert _tree(src) == before


def test_everything_that_writes_refuses_before_touching_anything(ro_lab):
    mnt, src = ro_lab
    before = _tree(src)
    lab = Lab.open(mnt)
    eng = lab.checkout("HEAD")
    eng.add(_vectors(3, 7), ids=["n0", "n1", "n2"])
    generation, pending = eng.generation, len(eng)
    snap = eng.compact(force=False)
    assert snap is None or snap.generation > generation  # an independent payload to persist
    eng2 = lab.checkout("HEAD")
    eng2.add(_vectors(3, 7), ids=["n0", "n1", "n2"])
    calls = {
        "commit": lambda: lab.commit(eng2, note="refused"),
        "tag": lambda: lab.tag("other", 1),
        "untag": lambda: lab.untag("best"),
        "branch": lambda: lab.branch("other", 1),
        "delete_branch": lambda: lab.delete_branch("exp"),
        "gc": lambda: lab.gc(dry_run=False, grace_s=0),
        "repair_head": lambda: lab.repair_head(1),
        "sweep": lambda: lab.sweep(lambda M: eng2, {"M": [8]}),
    }
    with _recording() as ops:
        for name, call in calls.items():
            with pytest.raises(ReadOnlyLab) as info:
                call()
            assert "read-only" in str(info.value), name
        payload = lab.checkout("HEAD").compact(force=True)
        with pytest.raises(ReadOnlyLab):
            persist_snapshot(
                mnt,
                lab.store,
                payload.index_bytes,
                payload.metadata_bytes,
                payload.key_counter,
                payload.generation + 5,
            )
    tried = sorted({(op, Path(p).name) for op, p in ops if op in WRITES})
    assert tried == [], f"a refused operation tried to write: {tried}"
    assert eng2.generation == generation and len(eng2) == pending  # not compacted
    assert _tree(src) == before


def test_a_copy_of_the_lab_is_writable_again(ro_lab, tmp_path):
    mnt, _ = ro_lab
    copy = tmp_path / "copy"
    shutil.copytree(mnt, copy)
    lab = Lab.open(copy)
    lab.tag("mine", 1)
    assert lab.verify(sample=4)

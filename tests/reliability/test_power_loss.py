"""Simulated power loss (see power_loss.py for the model): for persist, commit, gc, tag
(pack-store labs), commit and gc on directory-store labs, and the conversion to packs,
every crash state a power cut may leave must load as exactly the previous or exactly the
new state, verify clean after gc, and leave no temp file; a state after the operation
returned, keeping only what was made durable, must be the new state.

CI checks a sample of the unique states of each operation (``MAX_UNIQUE``);
``bench/power_loss.py`` checks all of them.
"""

from __future__ import annotations

import pickle
import random
import shutil

import crash_harness as ch
import power_loss as pl
import pytest

from oluo_lab import _io

pytestmark = pytest.mark.reliability

OPS = ("persist", "commit", "gc", "tag", "dir:commit", "dir:gc", "dir:repack")
#: unique crash states checked per operation in CI (bench/power_loss.py: all of them)
MAX_UNIQUE = 24
#: cuts built per operation in CI when its trace is longer
MAX_CUTS = 48


def record(ws: ch.Workspace, op: str, payload: dict) -> tuple[list[pl.Op], pl.Disk, tuple, tuple]:
    """The recorded file operations of a clean run of ``op``, the disk before it, and
    what a reader sees before and after."""
    d = ws.fresh_copy(op)
    prev = ch.observe(op, d)
    d = ws.fresh_copy(op)
    before = pl.Disk.scan(d)
    rec = pl.Recorder(d)
    hook = _io.set_hook(rec)
    try:
        ch._OPS[ch.split_op(op)[1]](d, payload)
    finally:
        _io.set_hook(hook)
    return rec.ops, before, prev, ch.observe(op, d)


def checker(ws: ch.Workspace, op: str, prev: tuple, new: tuple, n_ops: int):
    """``check(disk, label)`` for :func:`power_loss.explore`."""
    from oluo_lab.cli import repack_lab
    from oluo_lab.snapshot import Lab

    target = ws.root / "power-trial"

    def check(disk: pl.Disk, label: str) -> str:
        where = f"{op} / {label}"
        pl.materialise(disk, target)
        seen = ch.observe(op, target)
        if seen == new:
            outcome = "new"
        elif seen == prev:
            outcome = "prev"
        else:
            raise AssertionError(f"{where}: the lab is neither the previous nor the new state")
        if label.startswith(f"cut {n_ops}/") and "durable only" in label and outcome != "new":
            raise AssertionError(f"{where}: the operation returned but its result was not durable")
        if ch.split_op(op)[1] == "repack":
            repack_lab(target)  # a rerun finishes an interrupted conversion
            if ch.observe(op, target) != new:
                raise AssertionError(f"{where}: a second repack did not finish the conversion")
        Lab(target).gc(dry_run=False, grace_s=0, progress=False)
        rep = Lab(target).verify(sample=4, progress=False)
        if rep.problems or rep.unreachable_books:
            raise AssertionError(f"{where}: verify after gc: {list(rep.problems)}")
        if ch.temp_files(target):
            raise AssertionError(f"{where}: temp files after gc: {ch.temp_files(target)}")
        return outcome

    return check


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = ch.scratch_root(tmp_path_factory.mktemp("power"))
    try:
        with ch.ForkServer() as server:
            ws = ch.prepare(root, server, ops=OPS)
        yield ws, pickle.loads(ws.payload_path.read_bytes())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_model_loses_what_was_not_made_durable(tmp_path):
    """The persistence model itself: an unsynced write and an unsynced rename are lost
    in some state; an fsynced file under an fsynced name never is."""
    d = tmp_path / "m"
    d.mkdir()
    before = pl.Disk.scan(d)
    rec = pl.Recorder(d)
    hook = _io.set_hook(rec)
    try:
        fd = _io.create_excl(d / "a.tmp")
        _io.write_all(fd, b"x" * 10_000)
        _io.fsync_fd(fd)
        _io.close(fd)
        _io.rename(d / "a.tmp", d / "a")
        _io.fsync_dir(d)
        fd = _io.create_excl(d / "b")
        _io.write_all(fd, b"y" * 100)
        _io.close(fd)
    finally:
        _io.set_hook(hook)
    assert [o.kind for o in rec.ops] == [
        "create",
        "write",
        "fsync",
        "rename",
        "fsync_dir",
        "create",
        "write",
    ]
    final = pl.pending_at(rec.ops, len(rec.ops))
    assert final == ([0, 1, 3], [5, 6])
    disks = [
        pl.apply(before, rec.ops, c)
        for _, c in pl.crash_states(rec.ops, len(rec.ops), 8, 0, random.Random(0))
    ]
    assert all(disk.data[disk.entries[("", "a")]] == b"x" * 10_000 for disk in disks)
    assert any(("", "b") not in disk.entries for disk in disks)
    assert any(disk.data.get(rec.ops[5].ino) == b"" and ("", "b") in disk.entries for disk in disks)
    mid = [
        pl.apply(before, rec.ops, c) for _, c in pl.crash_states(rec.ops, 4, 8, 0, random.Random(0))
    ]
    assert any(("", "a") not in disk.entries for disk in mid)  # the rename not yet durable


@pytest.mark.parametrize("op", OPS)
def test_every_power_cut_leaves_the_previous_or_the_new_state(workspace, op):
    ws, payload = workspace
    ops, before, prev, new = record(ws, op, payload)
    assert len(ops) >= 5
    check = checker(ws, op, prev, new, len(ops))
    # the end state with only what was made durable is always checked
    durable = pl.pending_at(ops, len(ops))[0]
    assert (
        check(
            pl.apply(before, ops, dict.fromkeys(durable, "full")),
            f"cut {len(ops)}/{len(ops)}, durable only",
        )
        == "new"
    )
    cuts = list(range(len(ops) + 1))
    if len(cuts) > MAX_CUTS:  # a long trace (the conversion): a sample of its cuts
        cuts = sorted({0, len(ops), *random.Random(16).sample(cuts, MAX_CUTS - 2)})
    tally = pl.explore(
        ops, before, check, exhaustive=6, samples=4, seed=16, max_unique=MAX_UNIQUE, cuts=cuts
    )
    assert tally.unique == min(MAX_UNIQUE, tally.unique) and tally.unique >= 2
    if ch.split_op(op)[1] != "gc":
        assert set(tally.outcomes) == {"prev", "new"}, tally.outcomes

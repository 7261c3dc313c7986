"""Crash injection on a lab on S3 (the moto server): a commit SIGKILLed after each of its
durable steps (payloads stored, manifest stored, ref object created, log record created)
leaves exactly the previous or the new head, a lab that verifies and commits on, and
only garbage that two gc runs (two-phase) remove."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import Lab

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
DIM = 8

#: step -> whether the commit is on main after the kill, and whether it has its number
STEPS = {
    "persist.index_encoded": (False, False),
    "persist.manifest_put": (False, False),
    "persist.head_written": (True, False),  # the ref object exists, its log record not yet
    "persist.refs_logged": (True, True),
}

WRITER = """
import numpy as np
from oluo_lab.snapshot import Lab
lab = Lab.open({url!r})
eng = lab.checkout("main", progress=False)
eng.add(np.random.default_rng(1).standard_normal((40, {dim})).astype(np.float32),
        ids=[f"new{{i}}" for i in range(40)])
lab.commit(eng, note="killed", progress=False)
print("survived")
"""


def _engine() -> OluoEngine:
    eng = OluoEngine(DIM, metric="l2", compact_threshold=10_000, M=8, ef_construction=16)
    eng.add(np.random.default_rng(0).standard_normal((150, DIM)).astype(np.float32))
    return eng


@pytest.mark.parametrize("step", list(STEPS))
def test_a_commit_killed_at_each_step_leaves_the_old_or_the_new_head(s3, step):
    url = s3.url("crash")
    lab = Lab(url, **s3.options)
    first = lab.commit(_engine(), note="first", progress=False)
    env = {
        **os.environ,
        **s3.env,
        "PYTHONPATH": str(ROOT),
        "OLUO_LAB_FAULT": f"{step}:1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", WRITER.format(url=url, dim=DIM)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    moved, numbered = STEPS[step]
    fresh = Lab.open(url, **s3.options)
    head = fresh.head()
    if moved:
        assert head.parent == first.cid and head.note == "killed" and head.entries == 190
        assert head.seq == (2 if numbered else None)
    else:
        assert head.cid == first.cid
    assert len(fresh.checkout("main", progress=False)) == head.entries
    report = fresh.verify(progress=False)
    assert report, report.problems
    # the lab goes on: the next commit gets the next free number
    eng = fresh.checkout("main", progress=False)
    eng.add(np.ones((1, DIM), np.float32), ids=["after"])
    nxt = fresh.commit(eng, progress=False)
    assert nxt.parent == head.cid and nxt.seq == 2 + numbered
    # two-phase gc: tombstones first, then the garbage of the killed commit is gone
    fresh.gc(dry_run=False, grace_s=0, progress=False)
    fresh.gc(dry_run=False, grace_s=0, progress=False)
    clean = fresh.verify(progress=False)
    assert clean and clean.unreachable_books == 0

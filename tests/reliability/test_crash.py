"""Crash injection: SIGKILL persist / commit (to main and to a new branch, with a recorded
evaluation) / branch / gc / tag (on pack-store and directory-store labs) and the conversion
of a directory store to packs, at every durable step and at random.

After every kill a fresh process view of the lab must be exactly the previous or exactly
the new state, verify() must be clean apart from unreachable books, and gc must remove
those and every temp file (see crash_harness.check_trial). bench/crash_soak.py runs the
same trials >= 1,000 times.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import crash_harness as ch
import pytest

import oluo_lab._faults as faults

pytestmark = pytest.mark.reliability

RANDOM_TRIALS = 100


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = ch.scratch_root(tmp_path_factory.mktemp("crash"))
    try:
        with ch.ForkServer() as server:
            ws = ch.prepare(root, server)
            yield ws, server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_every_registered_point_is_called_in_the_code_and_hit_by_an_operation(workspace):
    ws, _ = workspace
    src = Path(ch.ROOT, "oluo_lab")
    called = set()
    for path in src.rglob("*.py"):
        called |= set(re.findall(r'fault_point\("([a-z_.]+)"\)', path.read_text()))
    assert called == set(faults.points())
    hit = {name for exp in ws.expected.values() for name in exp.hits}
    assert hit == set(faults.points())


def test_env_var_arms_a_point_and_rejects_unknown_names():
    code = "import oluo_lab._faults as f; f.fault_point('persist.refs_logged'); f.fault_point('persist.head_written'); print('alive')"
    env = dict(os.environ, PYTHONPATH=str(ch.ROOT))
    alive = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, OLUO_LAB_FAULT="persist.head_written:2"),
        capture_output=True,
        text=True,
    )
    assert alive.returncode == 0 and alive.stdout.strip() == "alive"  # only one hit: no kill
    killed = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, OLUO_LAB_FAULT="persist.head_written:1"),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9 and killed.stdout == ""
    bad = subprocess.run(
        [sys.executable, "-c", "import oluo_lab._faults"],
        env=dict(env, OLUO_LAB_FAULT="no.such.point:1"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "unknown fault point 'no.such.point'" in bad.stderr


@pytest.mark.parametrize("op", ch.OPS)
def test_kill_after_every_durable_step(workspace, op):
    ws, server = workspace
    results = ch.run_deterministic(ws, server, op)
    steps = ch.deterministic_steps(ws, op)
    assert len(results) == len(steps) >= 5
    assert all(r.status == "killed" for r in results)
    outcomes = [r.outcome for r in results]
    name = ch.split_op(op)[1]
    if name == "gc":
        assert set(outcomes) == {"new"}  # the head never changes; nothing reachable is lost
        return
    # before the commit point every kill leaves the previous state, after it the new one
    first_new = outcomes.index("new")
    assert set(outcomes[:first_new]) == {"prev"} and set(outcomes[first_new:]) == {"new"}
    if name == "repack":  # the commit point is the switch of the store's format marker
        assert steps[first_new][0] == "convert.marker_written"
        assert steps[-1][0] == "convert.book_deleted"  # old book files go last
        return
    commit_at = {
        "persist": "persist.head_written",
        "commit": "persist.head_written",
        "commit_branch": "refs.branches_written",
        "branch": "refs.branches_written",
    }.get(name, "lab.tags_written")
    assert steps[first_new][0] == "durable.renamed"  # the rename of the head/tags file
    assert steps[-1][0] == commit_at


def test_random_sigkills(workspace):
    ws, server = workspace
    results = ch.run_random(ws, server, RANDOM_TRIALS, seed=2024)
    counts = ch.summarise(results)
    assert sum(c["trials"] for c in counts.values()) == RANDOM_TRIALS
    assert sum(c.get("killed", 0) for c in counts.values()) >= RANDOM_TRIALS // 3
    for op in ("persist", "commit", "dir:commit"):
        assert counts[op].get("saw prev", 0) > 0

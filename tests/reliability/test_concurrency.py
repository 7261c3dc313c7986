"""Four processes committing to one Lab while two processes read and one runs gc(grace_s=0).

Every commit either lands in the history or is refused with HeadRegression; readers never
see a torn head, a generation going backwards, or a missing book; the lab verifies clean.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

import concurrency_workers as w
import pytest

from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import Lab

pytestmark = pytest.mark.reliability

COMMITTERS, ROUNDS, READERS = 4, 4, 2


def _run(writers: list, others: list, stop: Path) -> None:
    """Start every process; when the writers are done, tell the others to stop; all must
    exit cleanly."""
    for p in others + writers:
        p.start()
    for p in writers:
        p.join(timeout=240)
    stop.touch()
    for p in others:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in writers + others)


def test_four_committers_two_readers_and_gc(tmp_path):
    d = tmp_path / "lab"
    lab = Lab(d)
    eng = OluoEngine(w.DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)
    eng.add(w._vectors(200, 0), ids=[f"w{i}" for i in range(200)])
    first = lab.commit(eng, note="seed")
    stop = tmp_path / "stop"
    ctx = mp.get_context("spawn")
    sys_path = str(Path(w.__file__).parent)
    assert sys_path in sys.path  # spawn children inherit sys.path, so they import the workers
    writers = [
        ctx.Process(target=w.committer, args=(str(d), i, ROUNDS, str(tmp_path / f"c{i}.json")))
        for i in range(COMMITTERS)
    ]
    others = [
        ctx.Process(target=w.reader, args=(str(d), str(stop), str(tmp_path / f"r{j}.json")))
        for j in range(READERS)
    ]
    others.append(
        ctx.Process(target=w.collector, args=(str(d), str(stop), str(tmp_path / "gc.json")))
    )
    _run(writers, others, stop)

    commits = [
        rec for i in range(COMMITTERS) for rec in json.loads((tmp_path / f"c{i}.json").read_text())
    ]
    crashes = [rec["crash"] for rec in commits if "crash" in rec]
    assert not crashes, crashes[0]
    ok = [rec for rec in commits if rec["ok"]]
    refused = [rec for rec in commits if not rec["ok"]]
    assert len(ok) + len(refused) == COMMITTERS * ROUNDS
    assert ok, "no commit succeeded"

    history = Lab(d).history()
    by_cid = {s.cid.hex: s.generation for s in history}
    for rec in ok:  # every successful commit is in the history, under its generation
        assert by_cid.get(rec["cid"]) == rec["gen"]
    assert len({rec["gen"] for rec in ok}) == len(ok)  # no generation committed twice
    assert sorted(by_cid.values()) == list(range(1, len(ok) + 2))
    assert history[-1].cid == first.cid
    for rec in refused:  # a refusal happened because another commit got there first
        assert rec["current"] >= rec["from"] + 1

    for j in range(READERS):
        r = json.loads((tmp_path / f"r{j}.json").read_text())
        assert not r["errors"], r["errors"][0]
        assert r["loads"] > 0
        assert r["seen"] == sorted(r["seen"]), "a reader saw the head go backwards"
    g = json.loads((tmp_path / "gc.json").read_text())
    assert not g["errors"], g["errors"][0]
    assert g["runs"] > 0

    loads = [json.loads((tmp_path / f"r{j}.json").read_text())["loads"] for j in range(READERS)]
    print(f"\nconcurrency: {len(ok)} landed, {len(refused)} refused, loads {loads}, gc {g}")
    final = Lab(d)
    report = final.verify(sample=8)
    assert report, report.problems
    final.gc(dry_run=False, grace_s=0)
    assert final.verify(sample=8).unreachable_books == 0
    eng = final.checkout("HEAD")
    expected = 200 + 8 * len(ok)
    assert len(eng) == expected  # every landed commit added its 8 vectors on top of the head
    _, ids, vecs = eng.live_vectors()
    res = eng.search(vecs, k=1)
    assert (res.ids[:, 0] == ids).mean() > 0.99
    live = set(ids.tolist())
    assert all(rec["id"] in live for rec in ok)  # landed commits are all in the head
    assert not any(rec["id"] in live for rec in refused)  # refused ones left no entries


BRANCH_ROUNDS = 3


def test_four_processes_on_two_branches_lose_nothing_and_never_regress(tmp_path):
    """Two committers per branch, each landing BRANCH_ROUNDS commits (retrying after
    HeadMoved), a watcher checking that heads only move forward, and gc(grace_s=0)."""
    d = tmp_path / "lab"
    lab = Lab(d)
    eng = OluoEngine(w.DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)
    eng.add(w._vectors(100, 0), ids=[f"w{i}" for i in range(100)])
    seed = lab.commit(eng, note="seed", progress=False)
    lab.branch("left")
    lab.branch("right")
    branches = ["left", "right"]
    stop = tmp_path / "stop"
    ctx = mp.get_context("spawn")
    writers = [
        ctx.Process(
            target=w.branch_committer,
            args=(str(d), b, i, BRANCH_ROUNDS, str(tmp_path / f"{b}{i}.json")),
        )
        for b in branches
        for i in range(2)
    ]
    others = [
        ctx.Process(
            target=w.branch_watcher,
            args=(str(d), branches, str(stop), str(tmp_path / "watch.json")),
        ),
        ctx.Process(target=w.collector, args=(str(d), str(stop), str(tmp_path / "gc.json"))),
    ]
    _run(writers, others, stop)

    final = Lab(d)
    seqs = []
    for b in branches:
        landed = [
            rec for i in range(2) for rec in json.loads((tmp_path / f"{b}{i}.json").read_text())
        ]
        assert not [rec["crash"] for rec in landed if "crash" in rec]
        assert len(landed) == 2 * BRANCH_ROUNDS  # every commit landed (after retries)
        history = final.history(branch=b)
        assert [s.cid.hex for s in history][-1] == seed.cid.hex
        assert {rec["cid"] for rec in landed} == {s.cid.hex for s in history[:-1]}  # linear
        head = final.checkout(b, progress=False)
        assert len(head) == 100 + 8 * len(landed)
        assert all(rec["id"] in head for rec in landed)
        other = "right" if b == "left" else "left"
        assert not any(t.startswith(other) for t in head.live_vectors()[1].tolist())
        seqs += [rec["seq"] for rec in landed]
    assert sorted(seqs) == list(range(2, 2 + 4 * BRANCH_ROUNDS))  # one number per commit
    watch = json.loads((tmp_path / "watch.json").read_text())
    assert not watch["errors"], watch["errors"][0]
    assert watch["loads"] > 0
    g = json.loads((tmp_path / "gc.json").read_text())
    assert not g["errors"], g["errors"][0]
    report = final.verify(sample=8, progress=False)
    assert report, report.problems
    assert final.resolve("main").cid == seed.cid  # nobody committed to main

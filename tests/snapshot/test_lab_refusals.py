"""Refusals and races of the Lab's refs: what a commit, a branch or a CLI pipe must refuse
or survive, and that a refusal leaves the lab as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from snap_helpers import DIM

import oluo_lab as ol
from oluo_lab.snapshot import CommitPruned, HeadMoved, Lab, ParamConflict, RefExists


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _engine(n: int = 60, seed: int = 0, **config) -> ol.OluoEngine:
    config = {"metric": "l2", "compact_threshold": 10_000, "M": 8, "ef_construction": 40, **config}
    eng = ol.OluoEngine(DIM, **config)
    eng.add(_vectors(n, seed), ids=[f"w{i}" for i in range(n)])
    return eng


def test_a_param_contradicting_the_engine_s_prune_headroom_is_refused(tmp_path):
    """prune_headroom decides the graph like M does: a param naming it must hold the
    engine's value."""
    lab = Lab(tmp_path / "lab")
    eng = _engine(prune_headroom=0.0)
    with pytest.raises(ParamConflict, match="prune_headroom"):
        lab.commit(eng, params={"prune_headroom": 0.2}, progress=False)
    assert lab.log().empty
    snap = lab.commit(eng, params={"prune_headroom": np.float64(0.0)}, progress=False)
    assert snap.params == {"prune_headroom": 0.0}
    assert snap.config["prune_headroom"] == 0.0


def test_a_commit_never_makes_a_branch_of_a_tag_s_name(tmp_path):
    """Lab.branch and Lab.tag refuse a name the other kind holds; a commit that would
    create the branch refuses it too, before the engine changes."""
    lab = Lab(tmp_path / "lab")
    first = lab.commit(_engine(), progress=False)
    lab.tag("best")
    eng = _engine(seed=1)
    state = (eng.generation, eng.delta_size, eng.base_size)
    with pytest.raises(RefExists, match="'best' is a tag"):
        lab.commit(eng, branch="best", progress=False)
    assert (eng.generation, eng.delta_size, eng.base_size) == state  # not compacted
    assert list(lab.branches()["branch"]) == ["main"] and lab.tags() == {"best": first.cid}
    assert lab.resolve("best").cid == first.cid


def test_a_pruned_commit_cannot_become_a_branch_head(tmp_path):
    """A branch at a commit gc retired could never be checked out or committed to (and
    verify, walking it from a branch, would find nothing to check)."""
    lab = Lab(tmp_path / "lab")
    eng = _engine()
    lab.commit(eng, progress=False)
    eng.add(_vectors(3, 9), ids=["x0", "x1", "x2"])
    lab.commit(eng, progress=False)
    lab.gc(dry_run=False, grace_s=0, keep_last=1, progress=False)
    assert lab.log()["state"].tolist() == ["live", "pruned"]
    with pytest.raises(CommitPruned, match="#1"):
        lab.branch("old", "#1")
    assert list(lab.branches()["branch"]) == ["main"]
    assert lab.branch("new", "#2").seq == 2  # a live commit still can


def _meanwhile(monkeypatch, lab: Lab, action) -> None:
    """Run ``action`` (another writer) after ``lab.commit`` has read the refs and before
    it takes the lock: between its look at the branch and its move."""
    payload = lab._payload

    def racing(engine, parent):
        out = payload(engine, parent)
        action()
        return out

    monkeypatch.setattr(lab, "_payload", racing)


def test_a_fast_forward_rechecks_the_branch_under_the_lock(tmp_path, monkeypatch):
    """An engine with nothing new only moves a branch to its commit. Another writer may
    move the branch between the look and the lock: a move that keeps the branch's history
    goes ahead; one that would drop a commit is refused, and the commit log gets no record
    of a move that never happened."""
    d = tmp_path / "lab"
    lab, other = Lab(d), Lab(d)
    eng = _engine()
    lab.commit(eng, progress=False)  # #1 on main
    lab.branch("exp")
    eng = lab.checkout("exp", progress=False)
    for i in range(2):  # #2, #3 on exp
        eng.add(_vectors(1, 20 + i), ids=[f"e{i}"])
        lab.commit(eng, progress=False)
    # main moves #1 -> #2 meanwhile: #3 still descends from it, so main goes to #3
    _meanwhile(monkeypatch, lab, lambda: other.branch("main", "#2", force=True))
    assert lab.commit(lab.checkout("exp", progress=False), branch="main", progress=False).seq == 3
    assert lab.resolve("main").seq == 3
    # branch 'copy' is created elsewhere meanwhile, at a commit #3 does not descend from
    _meanwhile(
        monkeypatch, lab, lambda: other.commit(_engine(seed=5), branch="copy", progress=False)
    )
    with pytest.raises(HeadMoved, match="not in the history of branch 'copy'"):
        lab.commit(lab.checkout("exp", progress=False), branch="copy", progress=False)
    assert lab.resolve("copy").seq == 4
    moves = [r for r in lab.refs.records() if r.get("branch") == "copy"]
    assert [r["op"] for r in moves] == ["commit"]  # the other writer's, nothing else


@pytest.mark.parametrize("command", [["show"], ["runs", "--json"]])
def test_cli_output_into_a_closed_pipe_exits_quietly(tmp_path, command):
    """`oluo-lab log DIR | head`: the reader may be gone before the last buffered output
    is written (stdout is block-buffered on a pipe); no warning, exit code 0."""
    lab = Lab(tmp_path / "lab")
    lab.commit(_engine(), note="n", progress=False)
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(root)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "oluo_lab.cli", command[0], str(lab.path), *command[1:]],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == ""


def test_a_bad_runs_query_is_a_value_error_naming_the_columns(tmp_path, capsys):
    from oluo_lab.cli import main

    lab = Lab(tmp_path / "lab")
    lab.commit(_engine(), params={"lr": 0.5}, progress=False)
    assert len(lab.runs(query="`params.lr` > 0.1")) == 1
    for bad in ("nosuch > 1", "M >", "params.lr > 0"):
        with pytest.raises(ValueError, match=r"bad runs query .*columns: .*params\.lr"):
            lab.runs(query=bad)
        assert main(["runs", str(lab.path), "--query", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: bad runs query") and "Traceback" not in err


def test_diff_refuses_a_k_it_cannot_use(tmp_path, capsys):
    from oluo_lab.cli import main

    lab = Lab(tmp_path / "lab")
    eng = _engine()
    lab.commit(eng, progress=False)
    eng.add(_vectors(2, 3), ids=["a", "b"])
    lab.commit(eng, progress=False)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="diff k must be a positive int"):
            lab.diff(1, 2, k=bad)
    assert lab.diff(1, 2, k=np.int64(3)).semantic.k == 3
    assert main(["diff", str(lab.path), "1", "2", "--k", "0"]) == 2
    assert "diff k must be a positive int" in capsys.readouterr().err


def test_ground_truth_is_reused_only_for_the_same_vectors_queries_metric_and_k(tmp_path):
    """The truth cache is keyed by (live vectors, queries, metric, k): any other k, metric
    or live set computes its own, so every recorded recall is against its own exact
    answers."""
    from oluo_lab.snapshot import EvalSpec

    lab = Lab(tmp_path / "lab")
    q = _vectors(12, 4)

    def truth_of(snap):
        return snap.evaluation["truth"]

    base = lab.commit(_engine(), branch="l2", evaluate=EvalSpec(q, k=5), progress=False)
    same = lab.commit(_engine(M=4), branch="l2-m4", evaluate=EvalSpec(q, k=5), progress=False)
    assert truth_of(same) == truth_of(base)
    other_k = lab.commit(_engine(M=6), branch="k3", evaluate=EvalSpec(q, k=3), progress=False)
    ip = _engine(metric="ip")
    other_metric = lab.commit(ip, branch="ip", evaluate=EvalSpec(q, k=5), progress=False)
    fewer = _engine(M=12)
    fewer.delete([f"w{i}" for i in range(0, 60, 2)])
    other_live = lab.commit(fewer, branch="fewer", evaluate=EvalSpec(q, k=5), progress=False)
    truths = [truth_of(s) for s in (base, other_k, other_metric, other_live)]
    assert len(set(truths)) == 4
    assert other_metric.evaluation["metric"] == "ip"
    # each recall is against its own engine's exact answers
    for snap, eng in ((other_live, fewer), (other_metric, ip)):
        exact = eng.search(q, k=5, exact=True).keys
        found = eng.search(q, k=5, ef=eng.config.ef_search).keys
        want = np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found, exact, strict=True)])
        assert snap.recall[eng.config.ef_search] == pytest.approx(want)


def test_a_sweep_rerun_with_another_evaluation_is_not_skipped(tmp_path):
    """A point is skipped only when its head recorded the evaluation asked for: the same
    queries, k and ef_search values (else the rows returned would show another k's
    recall, as if measured now)."""
    from snap_helpers import SWEEP_QUERIES, build_for_sweep

    from oluo_lab.snapshot import EvalSpec

    lab = Lab(tmp_path / "lab")
    grid = [{"M": 4, "ef_construction": 16}]
    first = lab.sweep(build_for_sweep, grid, evaluate=EvalSpec(SWEEP_QUERIES, k=10), progress=False)
    again = lab.sweep(build_for_sweep, grid, evaluate=SWEEP_QUERIES, progress=False)
    assert again["sweep"].tolist() == ["skipped"] and "recall@10" in again
    fewer = lab.sweep(
        build_for_sweep, grid, evaluate=EvalSpec(SWEEP_QUERIES, ef_search=[16]), progress=False
    )
    assert fewer["sweep"].tolist() == ["skipped"]  # ef_search 16 was measured already
    for other in (EvalSpec(SWEEP_QUERIES, k=5), EvalSpec(SWEEP_QUERIES, ef_search=[512])):
        with pytest.raises(ValueError, match="evaluation"):
            lab.sweep(build_for_sweep, grid, evaluate=other, progress=False)
    assert lab.log()["commit"].tolist() == first["commit"].tolist()
    k5 = lab.sweep(
        build_for_sweep, grid, evaluate=EvalSpec(SWEEP_QUERIES, k=5), prefix="k5", progress=False
    )
    assert k5["sweep"].tolist() == ["committed"] and "recall@5" in k5


def test_cli_json_names_commits_alike_in_every_command(tmp_path, capsys):
    """log, runs, show and branch --json give a commit as the full id log shows (a ref
    the grammar takes) and its manifest CID, with null for what is absent."""
    import json

    from oluo_lab.cli import main

    lab = Lab(tmp_path / "lab")
    head = lab.commit(_engine(), progress=False)

    def out(*args):
        assert main([args[0], str(lab.path), *args[1:], "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    (log,), (runs,), show, (branch,) = out("log"), out("runs"), out("show"), out("branch")
    for row in (log, runs, show, branch):
        assert (row["commit"], row["cid"], row["#"]) == (head.id, head.cid.hex, 1)
    assert branch["branch"] == "main" and branch["current"] is True
    assert log["parent"] is None and "parent" not in branch

"""Refusals and races of the Lab's refs: what a commit, a branch or a CLI pipe must refuse
or survive, and that a refusal leaves the lab as it was."""

from __future__ import annotations

import numpy as np
import pytest
from snap_helpers import DIM

import oluo_lab as ol
from oluo_lab.snapshot import CommitPruned, Lab, ParamConflict, RefExists


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _engine(n: int = 60, seed: int = 0, **config) -> ol.OluoEngine:
    config = {"compact_threshold": 10_000, "M": 8, "ef_construction": 40, **config}
    eng = ol.OluoEngine(DIM, metric="l2", **config)
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

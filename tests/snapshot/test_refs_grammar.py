"""The ref grammar: parsing, and resolution against a model of a branching history."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import AmbiguousRef, Lab, SnapshotNotFound, UnknownRef
from oluo_lab.snapshot.catalog import commit_id, parse_ref

DIM = 4


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("HEAD", ("HEAD", 0)),
        ("HEAD~", ("HEAD", 1)),
        ("HEAD~~", ("HEAD", 2)),
        ("HEAD~3", ("HEAD", 3)),
        ("HEAD~2~1~", ("HEAD", 4)),
        ("m32~1", ("m32", 1)),
        ("sweep/M=16,ef_construction=64~1", ("sweep/M=16,ef_construction=64", 1)),
        ("#7", ("#7", 0)),
        ("#7~2", ("#7", 2)),
        ("a1b2c3", ("a1b2c3", 0)),
    ],
)
def test_parse_ref(text, parsed):
    assert parse_ref(text) == parsed


@pytest.mark.parametrize("text", ["", "   ", "~1", "HEAD~x", "HEAD~1a", "main~-1"])
def test_parse_ref_refuses_malformed_text(text):
    with pytest.raises(ValueError):
        parse_ref(text)


def _engine(seed: int, n: int = 12) -> OluoEngine:
    eng = OluoEngine(DIM, metric="l2", compact_threshold=10_000, M=4, ef_construction=8)
    eng.add(np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32))
    return eng


def test_resolution_errors_list_candidates(make_lab):
    lab = make_lab()
    with pytest.raises(UnknownRef, match="has no commits yet"):
        lab.resolve("HEAD")
    lab.commit(_engine(1), progress=False)
    lab.commit(_engine(2), branch="m16", progress=False)
    lab.tag("best", "m16")
    with pytest.raises(UnknownRef) as ei:
        lab.resolve("nope")
    assert ei.value.candidates == ["main", "m16", "best"] and "known refs: main, m16, best" in str(
        ei.value
    )
    assert isinstance(ei.value, SnapshotNotFound)  # older code catching it keeps working
    with pytest.raises(UnknownRef, match="commit numbers are written #n"):
        lab.resolve("2")
    with pytest.raises(UnknownRef, match=r"no commit #9 \(the newest is #2\)"):
        lab.resolve("#9")
    with pytest.raises(UnknownRef, match="m16 has only 0 commit"):
        lab.resolve("m16~1")
    with pytest.raises(ValueError):
        lab.resolve("m16~x")
    with pytest.raises(TypeError):
        lab.resolve(1.5)
    snap = lab.resolve("#2")
    assert lab.resolve(snap.id[:4]).cid == snap.cid  # 4 hex digits: unique among 2 commits
    assert lab.resolve(snap.short).cid == snap.cid and lab.resolve(snap.cid.hex).cid == snap.cid
    assert lab.resolve(snap.id.upper()[:10]).cid == snap.cid  # hex is case-insensitive


class HistoryModel(RuleBasedStateMachine):
    """A lab grown by commits on branches, branch creation and tags, against a model:
    commit number -> parent number, branch -> head number, tag -> number. Every ref the
    grammar allows resolves to the commit the model says, or fails the way it says."""

    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="oluo-refs-"))
        self.lab = Lab(self.tmp / "lab")
        self.parent: dict[int, int | None] = {}
        self.cid: dict[int, object] = {}
        self.branches: dict[str, int] = {}
        self.tags: dict[str, int] = {}
        self.seed = 0

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "tmp", "/nonexistent"), ignore_errors=True)

    def _commit(self, eng: OluoEngine, branch: str, parent: int | None) -> None:
        snap = self.lab.commit(eng, branch=branch, note=f"n{len(self.cid)}", progress=False)
        assert snap.seq == len(self.cid) + 1
        self.cid[snap.seq] = snap.cid
        self.parent[snap.seq] = parent
        self.branches[branch] = snap.seq

    @rule(name=st.sampled_from(["main", "a", "b", "c"]))
    def commit_fresh(self, name: str) -> None:
        if name in self.branches:
            return  # a fresh engine on a branch with commits is refused (tested elsewhere)
        self.seed += 1
        self._commit(_engine(self.seed), name, None)

    @precondition(lambda self: self.branches)
    @rule(data=st.data())
    def commit_on(self, data) -> None:
        name = data.draw(st.sampled_from(sorted(self.branches)))
        eng = self.lab.checkout(name)
        self.seed += 1
        eng.add(np.random.default_rng(self.seed).standard_normal((1, DIM)).astype(np.float32))
        self._commit(eng, name, self.branches[name])

    @precondition(lambda self: self.cid)
    @rule(data=st.data(), name=st.sampled_from(["a", "b", "c", "d"]))
    def branch_from(self, data, name: str) -> None:
        if name in self.branches or name in self.tags:
            return
        seq = data.draw(st.sampled_from(sorted(self.cid)))
        self.lab.branch(name, f"#{seq}")
        self.branches[name] = seq

    @precondition(lambda self: self.cid)
    @rule(data=st.data(), name=st.sampled_from(["t1", "t2"]))
    def tag(self, data, name: str) -> None:
        seq = data.draw(st.sampled_from(sorted(self.cid)))
        self.lab.tag(name, seq, force=True)
        self.tags[name] = seq

    def _back(self, seq: int, steps: int) -> int | None:
        for _ in range(steps):
            nxt = self.parent[seq]
            if nxt is None:
                return None
            seq = nxt
        return seq

    @precondition(lambda self: self.cid)
    @rule(data=st.data(), steps=st.integers(0, 4))
    def resolve_named(self, data, steps: int) -> None:
        kind = data.draw(st.sampled_from(["branch", "tag", "seq", "head", "prefix"]))
        if kind == "branch":
            name = data.draw(st.sampled_from(sorted(self.branches)))
            base, start = name, self.branches[name]
        elif kind == "tag" and self.tags:
            name = data.draw(st.sampled_from(sorted(self.tags)))
            base, start = name, self.tags[name]
        elif kind == "head" and self.lab.current_branch in self.branches:
            base, start = "HEAD", self.branches[self.lab.current_branch]
        else:
            start = data.draw(st.sampled_from(sorted(self.cid)))
            base = f"#{start}"
            if kind == "prefix":
                ids = {s: commit_id(c) for s, c in self.cid.items()}
                n = data.draw(st.integers(4, 12))
                base = ids[start][:n]
                sharing = [s for s, i in ids.items() if i.startswith(base)]
                if len(sharing) > 1:
                    with pytest.raises(AmbiguousRef):
                        self.lab.resolve(base)
                    return
        text = base + (f"~{steps}" if steps else "")
        want = self._back(start, steps)
        if want is None:
            with pytest.raises(UnknownRef):
                self.lab.resolve(text)
            return
        assert self.lab.resolve(text).cid == self.cid[want]
        if kind == "seq" and not steps:
            assert self.lab.resolve(start).cid == self.cid[want]  # an int is "#n"

    @invariant()
    def log_matches_the_model(self) -> None:
        if not hasattr(self, "lab") or not self.cid:
            return
        log = self.lab.log()
        assert log["#"].tolist() == sorted(self.cid, reverse=True)
        for name, seq in self.branches.items():
            assert self.lab.log(name)["#"].tolist()[0] == seq


TestHistoryModel = HistoryModel.TestCase
TestHistoryModel.settings = settings(
    max_examples=15,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

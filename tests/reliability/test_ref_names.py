"""Names are not paths: branch and tag names from users are checked against the rules of
``git check-ref-format`` (and our narrower character sets) before anything is written;
names that differ only in case from an existing ref are refused (they would collide on
a case-insensitive filesystem or object store); sweep branch names stay valid."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import BadRefName, Lab, RefExists
from oluo_lab.snapshot.branches import check_branch_name
from oluo_lab.snapshot.sweep import branch_for
from oluo_lab.snapshot.tags import check_tag_name

pytestmark = pytest.mark.reliability

#: names refused for branches and tags alike (and why)
BAD = [
    ("", "empty"),
    ("..", "dot-dot"),
    ("../escape", "parent escape"),
    ("a/../../etc", "parent escape inside"),
    ("/abs", "leading slash"),
    ("-rf", "leading dash"),
    ("a//b", "empty component"),
    ("a/", "trailing slash"),
    ("a.", "trailing dot"),
    ("a/.hidden", "component starting with a dot"),
    ("x.lock", "ends in .lock"),
    ("a/b.lock/c", "component ending in .lock"),
    ("a@{1}", "@{"),
    ("HEAD", "reserved"),
    ("head", "reserved in any case"),
    ("ORIG_HEAD", "reserved"),
    ("tab\there", "control character"),
    ("nl\n", "control character"),
    ("del\x7f", "DEL"),
    ("nul\x00x", "NUL"),
    ("a b", "space"),
    ("a~1", "ref operator"),
    ("a^", "ref operator"),
    ("a:b", "colon"),
    ("a?b", "glob"),
    ("a*b", "glob"),
    ("a[b", "glob"),
    ("a\\b", "backslash"),
    ("x" * 200, "over-long"),
    ("é", "non-ASCII"),
    (7, "not a str"),
]


@pytest.mark.parametrize(("name", "why"), BAD, ids=[w for _, w in BAD])
@pytest.mark.parametrize("check", [check_branch_name, check_tag_name])
def test_bad_names_are_typed_errors(check, name, why):
    with pytest.raises(BadRefName) as info:
        check(name)
    assert isinstance(info.value, ValueError)  # the error callers caught before
    assert info.value.rule


@pytest.mark.parametrize(
    "name",
    ["main", "exp", "m32", "a.b", "v1.0-rc_2", "sweep/M=16,ef_construction=128", "u@x", "a+b"],
)
def test_good_branch_names(name):
    assert check_branch_name(name) == name


def test_sweep_branch_names_stay_valid():
    for point in ({"M": 16, "ef_construction": 128}, {"metric": "cosine", "M": 8}, {"x": 0.5}):
        check_branch_name(branch_for("sweep", point))


def _tree(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "oluo.lock"
    }


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = OluoEngine(8, M=8, ef_construction=20)
    eng.add(np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32))
    lab.commit(eng, note="one")
    lab.branch("Exp")
    lab.tag("Best")
    return lab


@pytest.mark.parametrize(("name", "why"), BAD[:-1], ids=[w for _, w in BAD[:-1]])
def test_the_lab_refuses_bad_names_and_writes_nothing(lab, name, why):
    before = _tree(lab.path)
    eng = lab.checkout("main")
    eng.add(np.ones((1, 8), np.float32))
    generation = eng.generation
    for call in (
        lambda: lab.branch(name),
        lambda: lab.tag(name),
        lambda: lab.commit(eng, branch=name),
    ):
        with pytest.raises(BadRefName):
            call()
    assert _tree(lab.path) == before and eng.generation == generation
    assert [p.name for p in lab.path.parent.iterdir()] == ["lab"]  # nothing beside the lab


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda lab, eng: lab.branch("exp"), "branch"),
        (lambda lab, eng: lab.branch("EXP"), "branch"),
        (lambda lab, eng: lab.branch("best"), "tag"),
        (lambda lab, eng: lab.tag("exp"), "branch"),
        (lambda lab, eng: lab.tag("BEST"), "tag"),
        (lambda lab, eng: lab.commit(eng, branch="eXp"), "branch"),
    ],
)
def test_names_that_differ_only_in_case_collide(lab, call, what):
    before = _tree(lab.path)
    eng = lab.checkout("main")
    eng.add(np.ones((1, 8), np.float32))
    with pytest.raises(RefExists) as info:
        call(lab, eng)
    assert "differs only in case" in str(info.value) and what in str(info.value)
    assert _tree(lab.path) == before


def test_the_same_name_again_is_not_a_collision(lab):
    lab.branch("Exp", force=True)  # the same branch: moving it is fine
    lab.tag("Best", force=True)
    assert set(lab.tags()) == {"Best"}

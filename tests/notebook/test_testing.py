"""oluo_lab.testing: each assertion passes on good input and fails with a clear message."""

from __future__ import annotations

import dataclasses

import nb_helpers as h
import pytest

from oluo_lab.testing import assert_manifest_equal, assert_recall, assert_same_answers


def test_assert_recall_passes_and_returns_the_measurement(lab_and_engine, dataset):
    lab, eng = lab_and_engine
    r = assert_recall(eng, dataset, at_least=0.5, k=10)
    assert 0.5 <= r <= 1.0
    assert assert_recall(lab, dataset, at_least=0.5) == r  # head == the live engine
    assert assert_recall((lab, 3), dataset, at_least=0.5) == r
    assert assert_recall((lab, "base"), dataset, at_least=0.1) < r  # tag of generation 1


def test_assert_recall_fails_with_measured_value_threshold_and_dataset(lab_and_engine, dataset):
    lab, eng = lab_and_engine
    with pytest.raises(AssertionError) as info:
        assert_recall((lab, 1), dataset, at_least=0.99, k=5)
    msg = str(info.value)
    assert "recall@5 = 0." in msg and "0.9900" in msg and "'tiny'" in msg
    assert "commit #1" in msg
    with pytest.raises(AssertionError, match="recall@10"):
        assert_recall(eng, dataset, at_least=0.9, ids=lambda t: 0)
    with pytest.raises(ValueError, match="at_least"):
        assert_recall(eng, dataset, at_least=1.5)
    with pytest.raises(TypeError, match=r"\(lab, snapshot\)"):
        assert_recall(lab.head(), dataset, at_least=0.5)


def test_assert_same_answers(lab_and_engine):
    lab, eng = lab_and_engine
    q = h.vectors(20, seed=5)
    assert assert_same_answers(eng, (lab, "HEAD"), q, k=10) == 1.0
    with pytest.raises(AssertionError) as info:
        assert_same_answers(eng, (lab, 1), q, k=10)
    msg = str(info.value)
    assert "min_overlap 1.0000" in msg and "commit #1" in msg and "worst: query" in msg
    got = assert_same_answers(eng, (lab, 1), q, k=10, min_overlap=0.3)
    assert 0.3 <= got < 1.0


def test_assert_manifest_equal(lab_and_engine):
    lab, _ = lab_and_engine
    s3 = lab.resolve(3)
    assert_manifest_equal(s3, s3.manifest)
    renoted = dataclasses.replace(s3.manifest, note="other", annotations={"x": 1})
    assert_manifest_equal(s3, renoted)  # note and annotations ignored by default
    with pytest.raises(AssertionError, match=r"note: '-10' != 'other'"):
        assert_manifest_equal(s3, renoted, ignore=())
    with pytest.raises(AssertionError) as info:
        assert_manifest_equal(lab.resolve(2), s3)
    msg = str(info.value)
    for field in ("entries", "compact_generation", "index_cid", "parent"):
        assert field + ":" in msg
    assert lab.resolve(2).manifest.index_cid.short in msg
    with pytest.raises(ValueError, match="unknown manifest fields"):
        assert_manifest_equal(s3, s3, ignore=("nope",))
    with pytest.raises(TypeError):
        assert_manifest_equal(s3, "x")

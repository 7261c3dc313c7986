"""verify's base-cache check: a warning (never an error) naming the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from snap_helpers import DIM

from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import BASE_NAME, Lab


@pytest.fixture
def lab(tmp_path) -> Lab:
    lab = Lab(tmp_path / "lab")
    eng = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40, ef_search=64)
    eng.add(np.random.default_rng(3).standard_normal((50, DIM)).astype(np.float32))
    lab.commit(eng, progress=False)
    return lab


def _base_problems(lab: Lab) -> list[tuple[str, str, int | None, str]]:
    report = lab.verify(sample=4, progress=False)
    assert report, report.problems  # warnings only
    return [
        (p.severity, p.where, p.generation, p.message)
        for p in report.problems
        if p.kind == "base-cache"
    ]


def test_an_intact_base_cache_gives_no_warning(lab):
    assert _base_problems(lab) == []


def test_a_missing_base_cache_is_a_warning(lab):
    (lab.path / BASE_NAME).unlink()
    assert _base_problems(lab) == [
        ("warning", BASE_NAME, 1, "base cache missing; load_snapshot rebuilds it from the CAS")
    ]


@pytest.mark.parametrize("how", ["truncated", "same-size"])
def test_a_different_base_cache_is_a_warning(lab, how):
    path = lab.path / BASE_NAME
    data = path.read_bytes()
    path.write_bytes(data[:-1] if how == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    assert _base_problems(lab) == [
        (
            "warning",
            BASE_NAME,
            1,
            "base cache differs from the head's index; load_snapshot rebuilds it",
        )
    ]


def test_an_unreadable_base_cache_is_a_warning(lab):
    path = lab.path / BASE_NAME
    path.unlink()
    path.mkdir()  # present, but not readable as a file
    [(severity, where, generation, message)] = _base_problems(lab)
    assert (severity, where, generation) == ("warning", BASE_NAME, 1)
    assert message.startswith("[Errno") and BASE_NAME in message  # the OS error, as it is

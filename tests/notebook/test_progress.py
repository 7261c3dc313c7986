"""Long operations draw a tqdm bar that one argument (or OLUO_LAB_PROGRESS=0) silences."""

from __future__ import annotations

import nb_helpers as h
import numpy as np
import pytest

import oluo_lab._progress as progress
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import Lab


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0)
    monkeypatch.delenv("OLUO_LAB_PROGRESS", raising=False)


def test_lab_operations_show_and_silence_bars(tmp_path, capsys, no_delay):
    lab = Lab(tmp_path / "lab")
    eng = h.make_engine(100)
    lab.commit(eng, note="a", progress=False)
    assert capsys.readouterr().err == ""
    eng.add(h.vectors()[100:150], ids=h.words()[100:150])
    snap = lab.commit(eng, note="b")
    assert "commit" in capsys.readouterr().err
    assert snap.generation == 2 and snap.note == "b"
    for call, word in (
        (lambda p: lab.verify(progress=p), "verify"),
        (lambda p: lab.gc(progress=p), "gc"),
        (lambda p: lab.checkout(1, progress=p), "checkout #1"),
    ):
        call(False)
        assert capsys.readouterr().err == ""
        call(True)
        assert word in capsys.readouterr().err


def test_environment_variable_silences_every_bar(tmp_path, capsys, no_delay, monkeypatch):
    monkeypatch.setenv("OLUO_LAB_PROGRESS", "0")
    lab = Lab(tmp_path / "lab")
    lab.commit(h.make_engine(50))
    lab.verify()
    assert capsys.readouterr().err == ""


def test_engine_add_bar_only_for_large_batches(capsys, no_delay):
    x = np.random.default_rng(0).standard_normal((10_000, 4)).astype(np.float32)
    eng = OluoEngine(4, compact_threshold=20_000, M=4, ef_construction=8)
    eng.add(x[:9_999])
    assert capsys.readouterr().err == ""
    eng2 = OluoEngine(4, compact_threshold=20_000, M=4, ef_construction=8)
    keys = eng2.add(x, progress=False)
    assert capsys.readouterr().err == "" and len(keys) == 10_000
    eng3 = OluoEngine(4, compact_threshold=20_000, M=4, ef_construction=8)
    assert eng3.add(x) == keys
    err = capsys.readouterr().err
    assert "add" in err and "10000" in err
    # one batch stays one ingest: same keys, same state as without a bar
    assert len(eng3) == len(eng2) == 10_000 and eng3.generation == eng2.generation == 0


def test_seed_persist_and_load_show_and_silence_bars(tmp_path, capsys, no_delay):
    from oluo_lab.cas import DirStore
    from oluo_lab.snapshot import load_snapshot, persist_snapshot

    store = DirStore(tmp_path / "cas")
    snap = h.make_engine(100).compact()
    args = (snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation)
    persist_snapshot(tmp_path, store, *args, progress=False)
    load_snapshot(tmp_path, store, progress=False)
    assert capsys.readouterr().err == ""
    persist_snapshot(tmp_path, store, *args)  # idempotent re-persist of the head
    assert "persist" in capsys.readouterr().err
    load_snapshot(tmp_path, store)
    assert "load" in capsys.readouterr().err

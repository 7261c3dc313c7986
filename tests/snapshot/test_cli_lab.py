"""``oluo-lab log|show|diff|verify|gc|tag DIR``: tables for people, JSON for scripts,
non-zero exit on problems (runs, compare and branch: test_lab_experiments.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from snap_helpers import DIM

from oluo_lab.cli import main
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot.lab import Lab
from oluo_lab.testing.damage import damage_book


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path / "lab")
    rng = np.random.default_rng(0)
    eng = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40)
    eng.add(rng.standard_normal((200, DIM)).astype(np.float32), ids=[f"a{i}" for i in range(200)])
    lab.commit(eng, note="first")
    eng.delete([f"a{i}" for i in range(20)])
    eng.add(rng.standard_normal((30, DIM)).astype(np.float32), ids=[f"b{i}" for i in range(30)])
    lab.commit(eng, note="second", ef=64)
    return lab


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_log_table_and_json(lab, capsys):
    code, out, _ = run(capsys, "log", str(lab.path))
    assert code == 0 and "second" in out and "first" in out
    code, out, _ = run(capsys, "log", str(lab.path), "--json")
    rows = json.loads(out)
    assert [r["generation"] for r in rows] == [2, 1] and [r["#"] for r in rows] == [2, 1]
    assert rows[0]["entries"] == 210 and rows[1]["parent"] is None
    assert rows[0]["parent"] == rows[1]["commit"] == lab.resolve(1).id
    code, out, _ = run(capsys, "runs", str(lab.path), "--json")
    assert json.loads(out)[0]["params.ef"] == 64


def test_show_and_diff(lab, capsys):
    code, out, _ = run(capsys, "show", str(lab.path), "1", "--json")
    info = json.loads(out)
    assert code == 0 and info["generation"] == 1 and info["parent"] is None
    assert info["cid"] == lab.resolve(1).cid.hex and info["#"] == 1
    assert info["index_digest"] == lab.resolve(1).index_digest and info["evaluation"] is None
    code, out, _ = run(capsys, "diff", str(lab.path), "1", "2", "--json")
    d = json.loads(out)
    assert code == 0 and len(d["ids_removed"]) == 20 and len(d["ids_added"]) == 30
    assert d["semantic"]["k"] == 10
    code, out, _ = run(capsys, "diff", str(lab.path), "1", "--no-semantic")
    assert code == 0 and "ids added" in out


def test_verify_exit_codes(lab, capsys):
    code, out, _ = run(capsys, "verify", str(lab.path))
    assert code == 0 and "clean" in out
    victim = lab.head().manifest.metadata_cid
    damage_book(lab.store, victim, "flip")
    code, out, _ = run(capsys, "verify", str(lab.path), "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert any(p["where"] == victim.hex for p in report["problems"])


def test_gc_is_dry_by_default(lab, capsys):
    orphan = lab.store.put(b"orphan")
    code, out, _ = run(capsys, "gc", str(lab.path), "--grace", "0", "--json")
    assert code == 0 and json.loads(out)["deleted_books"] == 1 and orphan in lab.store
    code, out, _ = run(capsys, "gc", str(lab.path), "--grace", "0", "--run")
    assert code == 0 and orphan not in lab.store


def test_tag_set_list_delete_and_errors(lab, capsys):
    assert run(capsys, "tag", str(lab.path), "base", "1")[0] == 0
    code, out, _ = run(capsys, "tag", str(lab.path), "--json")
    assert json.loads(out) == {"base": lab.resolve(1).cid.hex}
    code, _, err = run(capsys, "tag", str(lab.path), "base", "2")
    assert code == 2 and "already names" in err
    assert run(capsys, "tag", str(lab.path), "base", "--delete")[0] == 0
    code, _, err = run(capsys, "show", str(lab.path), "nope")
    assert code == 2 and "nope" in err
    code, _, err = run(capsys, "log", str(lab.path / "missing"))
    assert code == 2 and "not a lab" in err and not (lab.path / "missing").exists()


def test_repack_converts_a_directory_store_lab(tmp_path, capsys):
    from oluo_lab.cas import DirStore, PackStore, store_kind

    d = tmp_path / "old"
    d.mkdir()
    DirStore(d / "cas")  # a lab made before pack stores: one file per book
    lab = Lab(d)
    rng = np.random.default_rng(1)
    eng = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40)
    eng.add(rng.standard_normal((150, DIM)).astype(np.float32), ids=[f"x{i}" for i in range(150)])
    lab.commit(eng, note="old layout")
    books = sorted(lab.store)
    before = lab.checkout().search(eng.live_vectors()[2][:5], k=5).ids.tolist()
    assert isinstance(lab.store, DirStore) and store_kind(d / "cas") == "dir"
    code, out, _ = run(capsys, "repack", str(d), "--json")
    report = json.loads(out)
    assert code == 0 and report["switched"] and report["books_packed"] == len(books)
    assert report["book_files_deleted"] == len(books) and not (d / "cas" / "books").exists()
    again = Lab(d)
    assert isinstance(again.store, PackStore) and sorted(again.store) == books
    assert again.checkout().search(eng.live_vectors()[2][:5], k=5).ids.tolist() == before
    assert again.verify(sample=4)
    code, out, _ = run(capsys, "repack", str(d))
    assert code == 0 and "already a pack store" in out
    code, _, err = run(capsys, "repack", str(tmp_path / "missing"))
    assert code == 2 and "not a lab" in err and not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "repack", str(tmp_path / "empty"))
    assert code == 2 and "not a lab" in err and not any((tmp_path / "empty").iterdir())

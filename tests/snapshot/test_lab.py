"""Lab: commit, log, checkout, tags, diff, verify and gc over a 5-commit history of main."""

from __future__ import annotations

import json

import numpy as np
import pytest
from snap_helpers import DIM

from oluo_lab.cas import CID
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import (
    HEAD_NAME,
    CommitPruned,
    HeadMoved,
    HeadRegression,
    ManifestSerde,
    SnapshotNotFound,
)
from oluo_lab.snapshot.lab import Lab
from oluo_lab.testing.damage import age_books, damage_book


def lab_books(lab: Lab, snap) -> set:
    from oluo_lab.snapshot.history import generation_books

    return generation_books(lab.store, snap.cid, snap.manifest)


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def history(make_lab):
    """Five generations: add 300, add 100, delete 50, re-add 20 with new vectors, add 60;
    in a local lab and in a lab on S3 (moto)."""
    return _history(make_lab())


@pytest.fixture
def local_history(tmp_path):
    """The same history in a local lab (tests of its files)."""
    return _history(Lab(tmp_path / "lab"))


def _history(lab: Lab):
    eng = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40, ef_search=64)
    x = _vectors(300, 0)
    eng.add(x, ids=[f"w{i}" for i in range(300)], metadata=[{"i": i} for i in range(300)])
    snaps = [lab.commit(eng, note="300 words", size=300)]
    eng.add(
        _vectors(100, 1), ids=[f"v{i}" for i in range(100)], metadata=[{"i": i} for i in range(100)]
    )
    snaps.append(lab.commit(eng, note="+100"))
    eng.delete([f"w{i}" for i in range(50)])
    snaps.append(lab.commit(eng, note="-50"))
    eng.add(
        _vectors(20, 2),
        ids=[f"w{i}" for i in range(100, 120)],
        metadata=[{"i": i, "v": 2} for i in range(100, 120)],
    )
    snaps.append(lab.commit(eng, note="changed 20"))
    eng.add(_vectors(60, 3), ids=[f"u{i}" for i in range(60)])
    snaps.append(lab.commit(eng, note="+60", recall=0.97))
    return lab, eng, snaps


def test_commit_and_log_walks_the_parent_chain(history):
    lab, eng, snaps = history
    assert [s.generation for s in snaps] == [1, 2, 3, 4, 5]
    log = lab.log()
    assert log["generation"].tolist() == [5, 4, 3, 2, 1]
    assert log["entries"].tolist() == [410, 350, 350, 400, 300]
    assert log["note"].tolist() == ["+60", "changed 20", "-50", "+100", "300 words"]
    assert log["#"].tolist() == [5, 4, 3, 2, 1]
    assert log["branch"].tolist() == ["main"] * 5 and (log["state"] == "live").all()
    assert log["parent"].tolist()[-1] is None
    assert log["parent"].tolist()[:-1] == [s.cid.short for s in reversed(snaps[:-1])]
    runs = lab.runs()
    assert runs.loc[0, "params.recall"] == 0.97 and runs.loc[4, "params.size"] == 300
    assert snaps[-1].params == {"recall": 0.97} and snaps[-1].annotations == {}
    assert (log["new_bytes"] <= log["bytes"]).all()
    assert log.loc[4, "new_bytes"] == log.loc[4, "bytes"]  # the first generation is all new


def test_commit_without_changes_returns_head(history):
    lab, eng, snaps = history
    assert lab.commit(eng).cid == snaps[-1].cid
    noted = lab.commit(eng, note="same index, new note")
    # a note-only commit: a new commit (#6) of the same engine state, not a compaction
    assert noted.seq == 6 and noted.parent == snaps[-1].cid
    assert noted.generation == eng.generation == 5
    assert noted.manifest.index_cid == snaps[-1].manifest.index_cid
    assert noted.manifest.metadata_cid == snaps[-1].manifest.metadata_cid
    assert noted.manifest.index_digest == snaps[-1].manifest.index_digest
    # only the manifest is new; the index and metadata are shared
    assert lab.log().loc[0, "new_bytes"] == noted.cid.size
    assert lab.checkout("HEAD").entries() == eng.entries()


def test_checkout_gives_exact_old_state_and_continues_history(history):
    lab, eng, snaps = history
    old = lab.checkout(2)
    assert len(old) == 400 and "w0" in old and "u0" not in old
    assert old.entry("w100").metadata == {"i": 100}
    again = lab.checkout(snaps[1].cid)
    q = _vectors(20, 9)
    a, b = old.search(q, k=5), again.search(q, k=5)
    assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.scores, b.scores)
    # the restored engine descends from #2, not from main's head #5: refused, nothing changes
    with pytest.raises(HeadMoved, match="branch='NEW-NAME'") as ei:
        lab.commit(old, note="back to 2")
    assert ei.value.found == snaps[-1].cid and ei.value.expected == snaps[1].cid
    assert old.generation == 2 and lab.head().cid == snaps[-1].cid
    # on a branch of its own it is committed with its true parent (#2), no compaction
    restored = lab.commit(old, note="back to 2", branch="back")
    assert restored.parent == snaps[1].cid and restored.generation == 2
    assert restored.manifest.index_cid == snaps[1].manifest.index_cid
    assert lab.log("back")["#"].tolist() == [6, 2, 1]
    assert lab.log()["#"].tolist() == [6, 5, 4, 3, 2, 1]


def test_foreign_engine_behind_the_head_is_refused(history):
    lab, _, _ = history
    other = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40)
    other.add(_vectors(10, 5))
    with pytest.raises(HeadRegression, match="not checked out from this lab"):
        lab.commit(other)  # HeadMoved is a HeadRegression: the head never moves backwards
    assert other.generation == 0 and other.delta_size == 10  # not compacted by the refusal


def test_resolve_by_tag_prefix_and_head(history):
    lab, _, snaps = history
    lab.tag("baseline", 1)
    assert lab.resolve("baseline").cid == snaps[0].cid
    assert lab.resolve(snaps[2].cid.hex).generation == 3
    assert lab.resolve(snaps[2].cid.short).generation == 3
    assert lab.resolve("HEAD").generation == 5
    assert lab.resolve("HEAD~2").cid == lab.resolve("#3").cid == lab.resolve(3).cid
    with pytest.raises(SnapshotNotFound):
        lab.resolve(42)
    with pytest.raises(SnapshotNotFound):
        lab.resolve("no-such-tag")
    with pytest.raises(ValueError):
        lab.tag("baseline", 2)
    lab.tag("baseline", 2, force=True)
    assert lab.tags()["baseline"] == snaps[1].cid
    with pytest.raises(ValueError):
        lab.tag("bad name!", 1)
    lab.untag("baseline")
    with pytest.raises(KeyError):
        lab.untag("baseline")


def test_diff_reports_fields_bytes_entries_and_answers(history):
    lab, _, snaps = history
    d = lab.diff(2, 3)
    assert d.ids_removed == tuple(f"w{i}" for i in range(50))
    assert d.ids_added == () and d.ids_changed_metadata == ()
    assert set(d.fields) >= {"entries", "compact_generation", "index_cid", "note", "parent"}
    assert d.fields["entries"] == (400, 350)
    assert d.books_added > 0 and d.bytes_added > 0 and d.books_removed > 0
    assert d.books_added + d.books_shared == len(lab_books(lab, snaps[2]))

    d4 = lab.diff(3, 4)
    assert d4.ids_changed_metadata == tuple(f"w{i}" for i in range(100, 120))
    assert set(d4.ids_changed_vector) == {f"w{i}" for i in range(100, 120)}
    assert d4.semantic is not None
    assert d4.semantic.recall_a >= 0.9 and d4.semantic.recall_b >= 0.9
    assert 0.0 < d4.semantic.overlap < 1.0

    same = lab.diff(5, 5)
    assert same.fields == {} and same.books_added == same.books_removed == 0
    assert same.semantic.overlap == 1.0


def test_verify_clean_then_finds_each_corruption(history):
    lab, _, snaps = history
    report = lab.verify()
    assert report, report.problems
    assert report.generations_checked == (5, 4, 3, 2, 1)
    assert report.entries_searched > 0 and report.unreachable_books == 0
    victim = snaps[2].manifest.metadata_cid
    damage_book(lab.store, victim, "flip")
    bad = lab.verify()
    assert not bad
    assert any(p.where == victim.hex and p.kind == "CorruptBook" for p in bad.errors)
    damage_book(lab.store, victim, "delete")
    missing = lab.verify()
    assert any(p.where == victim.hex and p.kind == "BookNotFound" for p in missing.errors)


def test_verify_warns_that_unreachable_is_approximate_when_a_generation_cannot_be_walked(
    history,
):
    lab, _, snaps = history
    victim = snaps[2].manifest.index_cid  # the index record: its books cannot be listed
    damage_book(lab.store, victim, "flip")
    report = lab.verify()
    assert any(p.where == victim.hex and p.generation == 3 for p in report.errors)
    warn = [p for p in report.problems if p.kind == "unreachable-approximate"]
    assert len(warn) == 1 and warn[0].severity == "warning" and "[3]" in warn[0].message
    clean = [p for p in lab.verify().problems if p.generation not in (3, None)]
    assert clean == []  # the other generations still verify


def test_verify_names_a_corrupt_head(local_history):
    lab, _, _ = local_history
    (lab.path / HEAD_NAME).write_text("{broken")
    report = lab.verify()
    assert not report and report.errors[0].where == HEAD_NAME
    with pytest.raises(ManifestSerde):
        lab.head()
    # recovery: the refs log still knows every generation
    eng = lab.checkout(4)
    assert len(eng) == 350
    with pytest.raises(ManifestSerde):
        lab.commit(eng)  # no commit on top of an unreadable head
    repaired = lab.repair_head()
    assert repaired.generation == 5 and lab.head().cid == repaired.cid
    assert lab.verify()
    back = lab.commit(lab.checkout(4), note="back to 4", branch="four")
    assert back.generation == 4 and back.seq == 6


def test_repair_head_to_an_explicit_generation_after_the_head_is_lost(local_history):
    lab, _, snaps = local_history
    (lab.path / HEAD_NAME).unlink()
    assert lab.head() is None
    assert lab.repair_head(3).cid == snaps[2].cid
    assert lab.log()["generation"].tolist() == [3, 2, 1]


def _age_all_books(lab: Lab, seconds: float) -> None:
    age_books(lab.store, list(lab.store), seconds)


def test_gc_never_deletes_reachable_books_and_sweeps_orphans(local_history):
    lab, _, snaps = local_history
    orphan = lab.store.put(b"an orphan book nobody references")
    dry = lab.gc()
    assert dry.dry_run and dry.deleted_books == 0 and dry.young_books == 1  # within grace
    _age_all_books(lab, 7200)
    dry = lab.gc()
    assert dry.deleted_books == 1 and orphan in lab.store
    real = lab.gc(dry_run=False)
    assert real.deleted_books == 1 and orphan not in lab.store
    assert real.kept_books["head"] > 0 and real.kept_books["history"] > 0
    assert lab.verify()
    for s in snaps:
        assert len(lab.checkout(s.generation)) == s.entries


def test_gc_keep_last_retires_old_payloads_but_keeps_log_and_tags(local_history):
    lab, _, snaps = local_history
    lab.tag("first", 1)
    _age_all_books(lab, 7200)
    report = lab.gc(dry_run=False, keep_last=2)
    assert report.deleted_books > 0
    assert "tag first" in report.kept_books
    assert lab.log()["generation"].tolist() == [5, 4, 3, 2, 1]
    assert lab.verify(), lab.verify().problems
    assert len(lab.checkout(1)) == 300  # tagged: kept
    assert len(lab.checkout(4)) == 350  # retained
    log = lab.log()
    assert log["state"].tolist() == ["live", "live", "pruned", "pruned", "live"]
    with pytest.raises(CommitPruned, match="gc retired") as ei:
        lab.checkout(2)  # retired
    assert ei.value.seq == 2 and ei.value.when is not None
    with pytest.raises(CommitPruned, match="#3"):
        lab.diff(3, 5)


def test_head_file_is_canonical_json(local_history):
    lab, _, snaps = local_history
    doc = json.loads((lab.path / HEAD_NAME).read_text())
    assert doc == {"generation": 5, "head": snaps[-1].cid.hex, "version": 1}
    assert CID.parse(doc["head"]) == snaps[-1].cid

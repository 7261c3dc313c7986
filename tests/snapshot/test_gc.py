"""gc plans, then executes: the plan is what a dry run reports and what a real gc deletes."""

from __future__ import annotations

import numpy as np
import pytest
from snap_helpers import DIM

from oluo_lab.cas import CID, PackStore
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import GcPlan, Lab, plan_gc, refs_log
from oluo_lab.testing.damage import age_books


def _age(lab: Lab, cids, seconds: float) -> None:
    age_books(lab.store, cids, seconds)


OLD_ORPHAN, YOUNG_ORPHAN = b"an old orphan", b"a young orphan"


@pytest.fixture
def lab(tmp_path) -> Lab:
    """Four generations, generation 1 tagged, an old orphan and a young orphan book."""
    lab = Lab(tmp_path / "lab")
    eng = OluoEngine(DIM, compact_threshold=10_000, M=8, ef_construction=40, ef_search=64)
    rng = np.random.default_rng(7)
    for g in range(4):
        eng.add(
            rng.standard_normal((60, DIM)).astype(np.float32), ids=[f"g{g}-{i}" for i in range(60)]
        )
        lab.commit(eng, note=f"generation {g + 1}", progress=False)
    lab.tag("first", 1)
    lab.store.put(OLD_ORPHAN)
    _age(lab, list(lab.store), 7200)
    lab.store.put(YOUNG_ORPHAN)
    return lab


def _plan(lab: Lab) -> GcPlan:
    return plan_gc(lab, 3600.0, keep_last=2)


def test_the_plan_partitions_the_store_and_changes_nothing(lab):
    before = set(lab.store)
    log_before = (lab.path / refs_log.REFS_LOG_NAME).read_bytes()
    plan = _plan(lab)
    assert set(lab.store) == before
    assert (lab.path / refs_log.REFS_LOG_NAME).read_bytes() == log_before
    doomed, young, marked = set(plan.doomed), set(plan.young), plan.marked
    assert len(doomed) == len(plan.doomed) and len(young) == len(plan.young)
    assert doomed | young | marked == before
    assert not doomed & marked and not young & marked and not doomed & young
    assert young == {CID.for_book(YOUNG_ORPHAN)}
    assert CID.for_book(OLD_ORPHAN) in doomed
    assert list(plan.marks) == ["head", "history", "history (manifest only)", "tag first"]
    snaps = lab.history()
    assert plan.marks["history (manifest only)"] == {snaps[2].cid, snaps[3].cid}
    assert plan.retire == (snaps[2].cid,)  # generation 1 is tagged: not retired
    kept_books, _ = plan.kept()
    assert sum(kept_books.values()) == len(marked)  # each kept book counted once


def test_dry_run_reports_the_plan_and_execution_deletes_exactly_its_doomed_books(lab):
    plan = _plan(lab)
    assert plan.doomed  # the old orphan and the payloads of retired generation 2
    dry = lab.gc(grace_s=3600.0, keep_last=2, progress=False)
    assert dry == plan.report(dry_run=True, store=dry.store)
    assert dry.store.dry_run and dry.store.books == len(plan.doomed)
    before = set(lab.store)
    real = lab.gc(dry_run=False, grace_s=3600.0, keep_last=2, progress=False)
    assert before - set(lab.store) == set(plan.doomed)
    assert real == plan.report(
        dry_run=False, temp_files_removed=real.temp_files_removed, store=real.store
    )
    # what the store's sweep did is reported, and what the dry run said it would do
    assert not real.store.dry_run and real.store.books == len(plan.doomed)
    assert (real.store.packs_written, real.store.packs_deleted) == (
        dry.store.packs_written,
        dry.store.packs_deleted,
    )
    if isinstance(lab.store, PackStore):
        assert real.store.packs_deleted > 0 and "packs: wrote" in repr(real)
    assert refs_log.retired(lab.path) == set(plan.retire)
    after = _plan(lab)
    assert after.doomed == () and after.retire == ()  # nothing left to do
    assert after.marked == plan.marked - set(plan.doomed)
    assert lab.verify(sample=4)


def test_plan_refuses_a_bad_keep_last(lab):
    with pytest.raises(ValueError, match="keep_last"):
        plan_gc(lab, 3600.0, keep_last=0)

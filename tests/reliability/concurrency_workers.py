"""Worker processes for test_concurrency.py (module-level so ``spawn`` can import them)."""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

import numpy as np

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def committer(lab_dir: str, who: int, rounds: int, out: str) -> None:
    """Check out the head, add vectors, commit; record each success or refusal."""
    from oluo_lab.snapshot import HeadRegression, Lab

    log = []
    try:
        for r in range(rounds):
            lab = Lab(lab_dir)
            eng = lab.checkout("HEAD")
            base = eng.generation
            eng.add(_vectors(8, 10_000 + 1000 * who + r), ids=[f"p{who}_{r}_{j}" for j in range(8)])
            try:
                snap = lab.commit(eng, note=f"committer {who} round {r}", who=who)
                log.append(
                    {
                        "ok": True,
                        "gen": snap.generation,
                        "cid": snap.cid.hex,
                        "from": base,
                        "id": f"p{who}_{r}_0",
                    }
                )
            except HeadRegression as exc:
                log.append(
                    {"ok": False, "from": base, "current": exc.current, "id": f"p{who}_{r}_0"}
                )
    except BaseException:
        log.append({"crash": traceback.format_exc()})
    Path(out).write_text(json.dumps(log))


def reader(lab_dir: str, stop: str, out: str) -> None:
    """Load the head again and again; check it never tears, regresses or misses a book."""
    from oluo_lab.cas import open_store
    from oluo_lab.snapshot import load_snapshot, read_head

    seen: list[int] = []
    errors: list[str] = []
    loads = 0
    while not Path(stop).exists():
        try:
            head = read_head(lab_dir)
            loaded = load_snapshot(lab_dir, open_store(Path(lab_dir) / "cas"))
            assert head is not None and loaded is not None
            eng, _, gen = loaded
            seen.append(head.generation)
            assert gen >= head.generation
            keys, ids, vecs = eng.live_vectors()
            rows = np.arange(0, len(ids), max(1, len(ids) // 5))
            exact = eng.search(vecs[rows], k=1, exact=True)
            assert exact.ids[:, 0].tolist() == ids[rows].tolist(), "a vector does not find itself"
            approx = eng.search(vecs[rows], k=5)
            assert set(approx.ids.ravel().tolist()) <= set(ids.tolist())
            loads += 1
        except BaseException:
            errors.append(traceback.format_exc())
            if len(errors) > 5:
                break
    Path(out).write_text(json.dumps({"seen": seen, "errors": errors, "loads": loads}))


def collector(lab_dir: str, stop: str, out: str) -> None:
    """Run gc(grace_s=0) back to back until told to stop."""
    from oluo_lab.snapshot import Lab

    runs = deleted = 0
    errors: list[str] = []
    while not Path(stop).exists():
        try:
            rep = Lab(lab_dir).gc(dry_run=False, grace_s=0)
            runs += 1
            deleted += rep.deleted_books
        except BaseException:
            errors.append(traceback.format_exc())
            break
        time.sleep(0.01)
    Path(out).write_text(json.dumps({"runs": runs, "deleted": deleted, "errors": errors}))

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


def branch_committer(lab_dir: str, branch: str, who: int, rounds: int, out: str) -> None:
    """Land ``rounds`` commits on ``branch``: check out its head, add 8 vectors, commit;
    when another process moved the branch first (HeadMoved), check out again and retry."""
    from oluo_lab.snapshot import HeadMoved, Lab

    log: list[dict] = []
    try:
        for r in range(rounds):
            ids = [f"{branch}_{who}_{r}_{j}" for j in range(8)]
            retries = 0
            while True:
                lab = Lab(lab_dir)
                head = lab.resolve(branch)
                parent = head.cid.hex
                eng = lab.checkout(head, progress=False)
                eng.add(_vectors(8, 50_000 + 1000 * who + r), ids=ids)
                try:
                    snap = lab.commit(
                        eng, note=f"{who}/{r}", branch=branch, params={"who": who}, progress=False
                    )
                except HeadMoved as exc:
                    assert exc.branch == branch and exc.found.hex != parent
                    retries += 1
                    continue
                assert snap.branch == branch and snap.parent.hex == parent
                log.append({"cid": snap.cid.hex, "seq": snap.seq, "id": ids[0], "retries": retries})
                break
    except BaseException:
        log.append({"crash": traceback.format_exc()})
    Path(out).write_text(json.dumps(log))


def branch_watcher(lab_dir: str, branches: list[str], stop: str, out: str) -> None:
    """Read each branch head again and again: a new head must descend from the one seen
    before (heads never regress), and it must check out."""
    from oluo_lab.snapshot import Lab

    seen: dict[str, list[str]] = {b: [] for b in branches}
    errors: list[str] = []
    loads = 0
    while not Path(stop).exists():
        try:
            lab = Lab(lab_dir)
            for b in branches:
                head = lab.resolve(b)
                history = {s.cid.hex for s in lab.history(branch=b)}
                if seen[b] and seen[b][-1] != head.cid.hex:
                    assert seen[b][-1] in history, f"branch {b} regressed"
                if not seen[b] or seen[b][-1] != head.cid.hex:
                    seen[b].append(head.cid.hex)
                eng = lab.checkout(head, progress=False)
                assert len(eng) == head.entries
                loads += 1
        except BaseException:
            errors.append(traceback.format_exc())
            if len(errors) > 5:
                break
    Path(out).write_text(json.dumps({"seen": seen, "errors": errors, "loads": loads}))

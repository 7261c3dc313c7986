"""Crash-injection harness: run a Lab operation in a forked process, SIGKILL it, check the disk.

Two processes take part (neither shares in-memory state with the other):

* a **fork server** (``python crash_harness.py serve``), started once with
  ``OMP_NUM_THREADS=1`` so faiss never starts an OpenMP pool (forking after one is unsafe).
  It imports oluo_lab once; per trial it forks a child that runs one operation
  (persist / commit / gc / tag on a lab with a pack store; commit / gc on one with a
  directory store; and ``repack``, the conversion of a directory store to packs) on a copy
  of a prepared lab,
  either armed to SIGKILL itself at the nth hit of a fault point (``oluo_lab._faults``) or
  killed by the server after a random delay;
* the **checker** (pytest or bench/crash_soak.py): it prepares the templates, computes the
  expected before/after answers from clean runs, and after every trial opens the lab
  afresh (new ``Lab``, new store) and checks: the head loads as exactly the previous
  or exactly the new generation (ids, scores, metadata of a fixed query set, manifest CID),
  ``verify()`` reports no problem, ``gc(dry_run=False, grace_s=0)`` removes every
  unreachable book, unreferenced pack and temp file, and ``verify()`` is then clean with
  nothing unreachable. A killed conversion, run again, must finish it.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DIM = 16
N_BASE = 300
#: operations, each on a lab whose store is ``<kind>``: "packs" (the default) or "dir"
#: (a directory store adds its own steps to a commit, gc and repack; a tag writes no book)
OPS = (
    "persist",
    "commit",
    "commit_branch",
    "branch",
    "gc",
    "tag",
    "dir:commit",
    "dir:gc",
    "dir:repack",
)
#: the branch the commit_branch and branch operations create
BRANCH = "exp"


def split_op(op: str) -> tuple[str, str]:
    """(store kind, operation) of an ``OPS`` name."""
    kind, _, name = op.rpartition(":")
    return kind or "packs", name


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def queries() -> np.ndarray:
    return _vectors(12, 99)


def _new_engine():
    from oluo_lab.engine import OluoEngine

    return OluoEngine(DIM, compact_threshold=100_000, M=8, ef_construction=40, ef_search=64)


# ----------------------------------------------------------------------------- operations
# Run in the forked child. Each takes the trial's lab directory and the payload dict.


def _op_persist(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.cas import open_store
    from oluo_lab.snapshot import persist_snapshot

    p = payload["gen3"]
    persist_snapshot(
        lab_dir, open_store(lab_dir / "cas"), p["index"], p["meta"], p["kc"], p["gen"], note="gen3"
    )


def _op_commit(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.snapshot import Lab

    lab = Lab(lab_dir)
    eng = lab.checkout("HEAD")
    _commit_changes(eng)
    lab.commit(eng, note="commit trial", run=7)


def _op_commit_branch(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.snapshot import EvalSpec, Lab

    lab = Lab(lab_dir)
    eng = lab.checkout("HEAD")
    _commit_changes(eng)
    spec = EvalSpec(queries(), k=5, ef_search=[16], timings=False)
    lab.commit(eng, note="branch trial", branch=BRANCH, params={"run": 8}, evaluate=spec)


def _op_branch(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.snapshot import Lab

    Lab(lab_dir).branch(BRANCH, 1)


def _commit_changes(eng) -> None:
    eng.add(
        _vectors(40, 5), ids=[f"c{i}" for i in range(40)], metadata=[{"c": i} for i in range(40)]
    )
    eng.delete([f"w{i}" for i in range(100, 120)])


def _op_gc(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.snapshot import Lab

    Lab(lab_dir).gc(dry_run=False, grace_s=0, keep_last=2)


def _op_tag(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.snapshot import Lab

    Lab(lab_dir).tag("best", 1)


def _op_repack(lab_dir: Path, payload: dict) -> None:
    from oluo_lab.cli import repack_lab

    repack_lab(lab_dir)


_OPS = {
    "persist": _op_persist,
    "commit": _op_commit,
    "commit_branch": _op_commit_branch,
    "branch": _op_branch,
    "gc": _op_gc,
    "tag": _op_tag,
    "repack": _op_repack,
}


# ----------------------------------------------------------------------------- fork server


def serve() -> None:
    """Fork-server loop: one JSON request per stdin line, one JSON reply per stdout line."""
    import oluo_lab._faults as faults
    import oluo_lab.snapshot  # noqa: F401  (import once; children inherit it)

    out = sys.stdout
    payload_cache: dict[str, dict] = {}
    for line in sys.stdin:
        req = json.loads(line)
        ppath = req["payload"]
        if ppath not in payload_cache:
            payload_cache[ppath] = pickle.loads(Path(ppath).read_bytes())
        payload = payload_cache[ppath]
        rfd, wfd = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the trial process
            os.close(rfd)
            code = 0
            msg: dict[str, Any] = {}
            try:
                hits = faults.record() if req.get("record") else None
                if req.get("fault"):
                    name, nth = req["fault"]
                    faults.arm(name, nth)
                _OPS[split_op(req["op"])[1]](Path(req["dir"]), payload)
                msg = {"hits": hits}
            except BaseException as exc:  # reported to the checker, which fails the trial
                msg = {"error": f"{type(exc).__name__}: {exc}"}
                code = 3
            os.write(wfd, json.dumps(msg).encode())
            os._exit(code)
        os.close(wfd)
        delay = req.get("delay")
        if delay is not None:
            deadline = t0 + delay
            while True:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = _
                    break
                if time.monotonic() >= deadline:
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    break
                time.sleep(0.0005)
        else:
            _, status = os.waitpid(pid, 0)
        elapsed = time.monotonic() - t0
        with os.fdopen(rfd, "rb") as f:
            raw = f.read()
        reply: dict[str, Any] = json.loads(raw) if raw else {}
        if os.WIFSIGNALED(status):
            reply["status"] = "killed"
        elif os.WEXITSTATUS(status) == 0:
            reply["status"] = "ok"
        else:
            reply["status"] = "error"
        reply["elapsed"] = elapsed
        out.write(json.dumps(reply) + "\n")
        out.flush()


class ForkServer:
    """Handle on a running fork server (a context manager)."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        env.pop("OLUO_LAB_FAULT", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- checker side


def scratch_root(fallback: Path) -> Path:
    """A fresh directory for trials: on tmpfs (``/dev/shm``) when there is one.

    A SIGKILL leaves the page cache intact, so what a killed process wrote is what the
    next process reads whatever the medium; tmpfs only makes the fsync/syncfs barriers
    cheap (on a shared disk they dominate the trial time). Power loss is out of scope.
    """
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="oluo-crash-", dir=shm))
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def signature(lab_dir: Path, ref: Any = None) -> tuple:
    """What a fresh process sees: manifest CID, counters and the answers to ``queries()``.

    ``ref=None`` loads the head through ``load_snapshot``; otherwise the
    generation is checked out through a new ``Lab``.
    """
    from oluo_lab.cas import open_store
    from oluo_lab.snapshot import Lab, load_snapshot, read_head

    if ref is None:
        loaded = load_snapshot(lab_dir, open_store(lab_dir / "cas"))
        if loaded is None:
            return ("empty",)
        eng, _, gen = loaded
        head = read_head(lab_dir)
        assert head is not None
        cid = head.cid.hex
    else:
        lab = Lab(lab_dir)
        snap = lab.resolve(ref)
        eng, gen, cid = lab.checkout(snap), snap.generation, snap.cid.hex
    res = eng.search(queries(), k=10)
    ids = res.ids.tolist()
    metas = [[None if i is None else dict(eng.entry(i).metadata) for i in row] for row in ids]
    return (cid, gen, len(eng), eng.key_counter, ids, res.scores.tolist(), repr(metas))


def branch_signature(lab_dir: Path, name: str = BRANCH) -> tuple:
    """What a fresh process sees of branch ``name`` (``("absent",)`` when it is not there)."""
    from oluo_lab.snapshot import Lab

    if name not in Lab(lab_dir).branches()["branch"].tolist():
        return ("absent",)
    return signature(lab_dir, name)


def tags_of(lab_dir: Path) -> dict[str, str]:
    from oluo_lab.snapshot import Lab

    return {k: v.hex for k, v in Lab(lab_dir).tags().items()}


def temp_files(lab_dir: Path) -> list[str]:
    """Temp files of both layers (data directory and CAS) still on disk."""
    from oluo_lab.snapshot.durable import TEMP_PREFIX

    found = [p.name for p in lab_dir.iterdir() if p.name.startswith(TEMP_PREFIX)]
    cas = lab_dir / "cas"
    for pattern in ("books/*/.tmp-*", "packs/.tmp-*", "index/.tmp-*", ".tmp-*"):
        found += [p.name for p in cas.glob(pattern)]
    return found


def store_state(lab_dir: Path) -> tuple:
    """The store's kind, and for a pack store its check: problems and unreferenced packs."""
    from oluo_lab.cas import PackStore, open_store, store_kind

    kind = store_kind(lab_dir / "cas")
    store = open_store(lab_dir / "cas")
    if not isinstance(store, PackStore):
        return (kind,)
    check = store.check()
    return (kind, [p.message for p in check.problems], check.info["unreferenced_packs"])


@dataclass
class Expected:
    """The two acceptable outcomes of one operation (``prev`` before, ``new`` after)."""

    prev: tuple
    new: tuple
    hits: list[str]
    elapsed: float


@dataclass
class Workspace:
    """Templates, payloads and expectations for every operation, under ``root``."""

    root: Path
    expected: dict[str, Expected] = field(default_factory=dict)

    @property
    def payload_path(self) -> Path:
        return self.root / "payload.pkl"

    def template(self, op: str) -> Path:
        return self.root / f"template-{op.replace(':', '-')}"

    def trial_dir(self) -> Path:
        return self.root / "trial"

    def fresh_copy(self, op: str) -> Path:
        d = self.trial_dir()
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(self.template(op), d, symlinks=True)
        return d


def observe(op: str, lab_dir: Path) -> tuple:
    """The state an operation's outcome is judged by."""
    from oluo_lab.cas import store_kind

    name = split_op(op)[1]
    if name == "tag":
        return (signature(lab_dir), tuple(sorted(tags_of(lab_dir).items())))
    if name in ("commit_branch", "branch"):
        return (signature(lab_dir), branch_signature(lab_dir))
    if name == "gc":
        return (signature(lab_dir), signature(lab_dir, 2), signature(lab_dir, 3))
    if name == "repack":
        return (signature(lab_dir), signature(lab_dir, 1), store_kind(lab_dir / "cas"))
    return (signature(lab_dir),)


def prepare(root: Path, server: ForkServer, ops: tuple[str, ...] = OPS) -> Workspace:
    """Build the templates and, from one clean run of each operation, its expectations."""
    ws = Workspace(Path(root))
    ws.root.mkdir(parents=True, exist_ok=True)
    for kind in sorted({split_op(op)[0] for op in ops}):
        _prepare_kind(ws, kind, [op for op in ops if split_op(op)[0] == kind])
    for op in ops:
        prev = observe(op, ws.template(op))
        d = ws.fresh_copy(op)
        reply = server.run(op=op, dir=str(d), payload=str(ws.payload_path), record=True)
        if reply["status"] != "ok":
            raise AssertionError(f"clean run of {op} failed: {reply}")
        new = observe(op, d)
        if split_op(op)[1] != "gc":
            assert new != prev, f"{op} must change what a reader sees"
        ws.expected[op] = Expected(prev, new, reply["hits"], reply["elapsed"])
    return ws


def _prepare_kind(ws: Workspace, kind: str, ops: list[str]) -> None:
    """The templates of ``ops`` on a lab whose store is of ``kind``."""
    from oluo_lab.cas import open_store
    from oluo_lab.snapshot import HeadRegression, Lab, persist_snapshot

    prefix = "" if kind == "packs" else f"{kind}:"
    base = ws.template(f"{prefix}persist")  # the persist template (also the others' source)
    base.mkdir(parents=True)
    open_store(base / "cas", kind=kind)
    lab = Lab(base)
    eng = _new_engine()
    eng.add(
        _vectors(N_BASE, 0),
        ids=[f"w{i}" for i in range(N_BASE)],
        metadata=[{"i": i, "t": f"t{i % 5}"} for i in range(N_BASE)],
    )
    lab.commit(eng, note="gen1")
    eng.add(
        _vectors(60, 1), ids=[f"v{i}" for i in range(60)], metadata=[{"v": i} for i in range(60)]
    )
    eng.delete([f"w{i}" for i in range(30)])
    lab.commit(eng, note="gen2")
    eng.add(_vectors(50, 2), ids=[f"x{i}" for i in range(50)])
    eng.delete([f"w{i}" for i in range(30, 60)])
    snap3 = eng.compact()
    assert snap3 is not None and snap3.generation == 3
    payload = {
        "gen3": {
            "index": snap3.index_bytes,
            "meta": snap3.metadata_bytes,
            "kc": snap3.key_counter,
            "gen": snap3.generation,
        }
    }
    ws.payload_path.write_bytes(pickle.dumps(payload))
    for op in ("commit", "commit_branch", "branch", "tag", "repack"):
        if f"{prefix}{op}" in ops:
            shutil.copytree(base, ws.template(f"{prefix}{op}"))
    # gc: three generations, plus orphans (a refused persist's books and a stray book)
    gc_dir = ws.template(f"{prefix}gc")
    shutil.copytree(base, gc_dir)
    store = open_store(gc_dir / "cas")
    persist_snapshot(gc_dir, store, snap3.index_bytes, snap3.metadata_bytes, snap3.key_counter, 3)
    other = _new_engine()
    other.add(_vectors(80, 7), ids=[f"o{i}" for i in range(80)])
    other.renumber(2)
    o = other.compact()
    try:
        persist_snapshot(gc_dir, store, o.index_bytes, o.metadata_bytes, o.key_counter, 3)
        raise AssertionError("a second generation 3 must be refused")
    except HeadRegression:
        pass
    store.put(b"a stray book nobody references")


@dataclass
class TrialResult:
    op: str
    how: str  # "fault name:nth" or "random <delay>"
    status: str  # killed / ok / error
    outcome: str  # prev / new


def check_trial(ws: Workspace, op: str, d: Path, reply: dict[str, Any], how: str) -> TrialResult:
    """Judge one trial; raises AssertionError naming the trial on any violation."""
    from oluo_lab.snapshot import Lab

    where = f"{op} / {how}"
    if reply["status"] == "error":
        raise AssertionError(f"{where}: the operation raised {reply.get('error')}")
    exp = ws.expected[op]
    seen = observe(op, d)
    if seen == exp.new:
        outcome = "new"
    elif seen == exp.prev:
        outcome = "prev"
    else:
        raise AssertionError(f"{where}: the lab is neither the previous nor the new state")
    if reply["status"] == "ok" and outcome != "new":
        raise AssertionError(f"{where}: completed but the new state is not visible")
    if split_op(op)[1] == "repack" and reply["status"] == "killed":
        from oluo_lab.cli import repack_lab

        repack_lab(d)  # run again: it must finish the conversion
        if observe(op, d) != exp.new or (d / "cas" / "books").exists():
            raise AssertionError(f"{where}: a second repack did not finish the conversion")
        seen = exp.new
    lab = Lab(d)
    rep = lab.verify(sample=8)
    if rep.problems:
        raise AssertionError(f"{where}: verify after the kill: {list(rep.problems)}")
    lab.gc(dry_run=False, grace_s=0)
    rep = Lab(d).verify(sample=8)
    if rep.problems or rep.unreachable_books:
        raise AssertionError(
            f"{where}: verify after gc: {list(rep.problems)}, {rep.unreachable_books} unreachable"
        )
    left = temp_files(d)
    if left:
        raise AssertionError(f"{where}: temp files survive gc: {left}")
    state = store_state(d)
    if state[1:] not in ((), ([], 0)):
        raise AssertionError(f"{where}: store after gc: problems / unreferenced packs {state[1:]}")
    if observe(op, d) != seen:
        raise AssertionError(f"{where}: gc changed what a reader sees")
    return TrialResult(op, how, reply["status"], outcome)


def deterministic_steps(ws: Workspace, op: str) -> list[tuple[str, int]]:
    """Every (point, nth) the clean run of ``op`` hit, in order."""
    counts: Counter[str] = Counter()
    steps = []
    for name in ws.expected[op].hits:
        counts[name] += 1
        steps.append((name, counts[name]))
    return steps


def run_deterministic(ws: Workspace, server: ForkServer, op: str) -> list[TrialResult]:
    out = []
    for name, nth in deterministic_steps(ws, op):
        d = ws.fresh_copy(op)
        reply = server.run(op=op, dir=str(d), payload=str(ws.payload_path), fault=[name, nth])
        how = f"{name}:{nth}"
        if reply["status"] != "killed":
            raise AssertionError(f"{op} / {how}: the armed fault point did not fire ({reply})")
        out.append(check_trial(ws, op, d, reply, how))
    return out


def run_random(
    ws: Workspace, server: ForkServer, n: int, seed: int, ops: tuple[str, ...] = OPS
) -> list[TrialResult]:
    """``n`` trials, each killed after a uniform random delay within the op's clean run time."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        op = ops[i % len(ops)]
        delay = rng.uniform(0.0, 1.1 * ws.expected[op].elapsed)
        d = ws.fresh_copy(op)
        reply = server.run(op=op, dir=str(d), payload=str(ws.payload_path), delay=delay)
        out.append(check_trial(ws, op, d, reply, f"random {delay * 1000:.1f} ms"))
    return out


def summarise(results: list[TrialResult]) -> dict[str, dict[str, int]]:
    """Counts per op: trials, killed, completed, and outcomes (prev / new)."""
    table: dict[str, Counter[str]] = {}
    for r in results:
        c = table.setdefault(r.op, Counter())
        c["trials"] += 1
        c[r.status] += 1
        c[f"saw {r.outcome}"] += 1
    return {op: dict(c) for op, c in sorted(table.items())}


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()

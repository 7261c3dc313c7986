"""Check by hand that ann-benchmarks' own tools read oluo_lab's export right (not run in CI).

Needs a checkout of ann-benchmarks (https://github.com/erikbern/ann-benchmarks; nothing of
it is copied here) and a Python that can import both it and oluo_lab, e.g. a venv on top
of this one's packages with what ann-benchmarks' dataset writer and plots import:

    python -m venv --system-site-packages /tmp/annb-venv
    /tmp/annb-venv/bin/pip install scikit-learn psutil ansicolors
    /tmp/annb-venv/bin/python bench/annb_check.py --annb /tmp/annb --work /tmp/annb-work

In ``--work`` (the current directory of ann-benchmarks' scripts) it:

1. writes ``data/glove-sample-50-angular.hdf5`` and ``data/glove-sample-50-euclidean.hdf5``
   from the committed GloVe sample with ann-benchmarks' ``datasets.write_output`` (its
   brute-force ground truth, 100 neighbours);
2. loads each with :func:`oluo_lab.bench.load_hdf5`, sweeps oluo_lab and raw faiss over
   ef_search and exports with :meth:`BenchResults.export_ann_benchmarks` into ``results/``;
3. reads every exported run with ann-benchmarks' ``results.load_all_results`` and
   ``plotting/utils.compute_all_metrics`` (all of its metrics), then runs its ``plot.py``
   on each dataset and ``create_website.py`` on everything;
4. prints the agreement table (its k-nn against oluo_lab's ``recall_distance``, its QPS
   against ``qps``, its candidates and index size) and exits 1 unless k-nn and QPS agree
   to 3 decimals.

``data_export.py`` is not run: it only looks at the dataset names of its own registry.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oluo_lab.bench import glove_sample, load_hdf5, sweep  # noqa: E402

K = 10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annb", required=True, type=Path, help="ann-benchmarks checkout")
    ap.add_argument("--work", required=True, type=Path, help="empty or new scratch directory")
    ap.add_argument("--libraries", nargs="+", default=["oluo_lab", "faiss"])
    ap.add_argument("--ef", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    annb, work = args.annb.resolve(), args.work.resolve()
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty")
    (work / "data").mkdir(parents=True)
    (work / "site").mkdir()
    (work / "templates").symlink_to(annb / "templates")  # create_website.py reads ./templates
    sys.path.insert(0, str(annb))
    import h5py
    from ann_benchmarks.datasets import write_output
    from ann_benchmarks.plotting.utils import compute_all_metrics
    from ann_benchmarks.results import load_all_results

    os.chdir(work)  # ann-benchmarks' tools use ./data and ./results
    sample = glove_sample()
    names, table, ok = [], [], True
    for distance in ("angular", "euclidean"):
        name = f"glove-sample-{sample.dim}-{distance}"
        names.append(name)
        fn = work / "data" / f"{name}.hdf5"
        with contextlib.redirect_stdout(io.StringIO()):
            # its brute force normalises the training array in place: give it copies
            write_output(np.array(sample.base), np.array(sample.queries), str(fn), distance)
        res = sweep(
            load_hdf5(fn),
            args.libraries,
            M=(args.M,),
            ef_construction=(args.ef_construction,),
            ef_search=args.ef,
            k=K,
            repeat=args.repeat,
            latency_queries=100,
            run="annb-check",
        )
        res.export_ann_benchmarks(work)
        with h5py.File(fn, "r") as d:
            true_distances = list(d["distances"])  # as create_website.py passes them
        for props, f in load_all_results(name, K, batch_mode=True):
            with contextlib.redirect_stdout(io.StringIO()):
                _, _, m = compute_all_metrics(true_distances, f, props, recompute=True)
            row = res.frame.iloc[int(props["oluo_row"])]
            agree = round(m["k-nn"], 3) == round(row["recall_distance"], 3) and round(
                m["qps"], 3
            ) == round(row["qps"], 3)
            ok &= agree
            table.append(
                (
                    distance,
                    row["library"],
                    int(row["ef_search"]),
                    row["recall"],
                    row["recall_distance"],
                    m["k-nn"],
                    row["qps"],
                    m["qps"],
                    m["candidates"],
                    m["indexsize"],
                    row["index_bytes"] / 1024,
                    "yes" if agree else "NO",
                )
            )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(annb), str(ROOT)]))
    for name in names:
        cmd = [sys.executable, str(annb / "plot.py"), "--dataset", name, "--batch"]
        subprocess.run(cmd + ["-o", f"{name}-batch.png"], check=True, env=env, capture_output=True)
        print(f"plot.py --dataset {name} --batch: wrote {work / (name + '-batch.png')}")
    cmd = [sys.executable, str(annb / "create_website.py"), "--outputdir", "site"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    pages = sorted(p.name for p in (work / "site").iterdir())
    print(f"create_website.py --outputdir site: {len(pages)} files, e.g. {pages[:3]}")
    print()
    print(
        "| distance | library | ef | recall (ids) | recall_distance | ann-b k-nn | qps "
        "| ann-b qps | ann-b candidates | ann-b index kB | index_bytes/1024 | agree (3 dp) |"
    )
    print("|" + "---|" * 12)
    for t in sorted(table, key=lambda t: (t[0], t[1], t[2])):
        d, lib, ef, r, rd, knn, q, aq, cand, kb, ob, agree = t
        print(
            f"| {d} | {lib} | {ef} | {r:.4f} | {rd:.4f} | {knn:.4f} | {q:.3f} | {aq:.3f} "
            f"| {cand:g} | {kb:.1f} | {ob:.1f} | {agree} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

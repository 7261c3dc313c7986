"""bench/recall_qps.py's logic on the committed 20k sample: both readings, the grid,
re-rendering from the CSV, and the builds table."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oluo_lab.bench import BenchResults

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "recall_qps.py"


def _script():
    spec = importlib.util.spec_from_file_location("recall_qps_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return out.stdout


def _tables(stdout: str) -> str:
    """The results tables: after the sweep's log lines, before the closing wall time."""
    return stdout[stdout.index("\n## ") :].split("\nwall ")[0].rstrip()


def _cell_ratio(cell: str) -> float:
    return float(re.match(r"([0-9.]+) \(", cell).group(1))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recall_qps")
    args = [
        "--quick",
        "--libraries", "oluo_lab", "faiss", "hnswlib",
        "--grid-M", "6", "12",
        "--grid-ef-construction", "24",
        "--M", "8",
        "--ef-construction", "32",
        "--ef-search", "8", "16", "32", "64", "128",
        "--repeat", "1",
        "--latency-queries", "5",
        "--threads", "1",
        "--out", str(out),
        "--label", "t",
    ]  # fmt: skip
    stdout = _run(*args)
    return out, stdout


def test_quick_run_builds_the_grid_and_the_same_setting_once_per_library(quick_run):
    out, _ = quick_run
    res = BenchResults.from_csv(out / "recall_qps-t.csv")
    for lib in ("oluo_lab", "faiss", "hnswlib"):
        rows = res.frame[res.frame["library"] == lib]
        builds = sorted(set(zip(rows["M"], rows["ef_construction"], strict=True)))
        assert builds == [(6, 24), (8, 32), (12, 24)]
        assert len(rows) == 3 * 5  # every build at every efSearch
    assert (out / "recall_qps-t.png").stat().st_size > 1000


def test_headline_table_holds_both_readings_computed_from_the_rows(quick_run):
    out, stdout = quick_run
    mod = _script()
    res = BenchResults.from_csv(out / "recall_qps-t.csv")
    table = mod.readings_table(res, res.subset(M=8, ef_construction=32), "g", "s")
    assert len(table) == 8 and list(table.columns[-3:]) == ["@0.90", "@0.95", "@0.99"]
    best = table[(table["reading"] == "best parameters (g)") & (table["method"] == "interpolated")]
    best = best[best["recall column"] == "recall"].iloc[0]
    want = res.ratios(interpolate=True).set_index("recall_target")
    for t in (0.90, 0.95, 0.99):
        cell = best[f"@{t:.2f}"]
        assert cell == "-" or _cell_ratio(cell) == pytest.approx(want.loc[t, "ratio"], abs=0.005)
    same = table[(table["reading"] == "same parameters (s)") & (table["method"] == "best row")]
    same = same[same["recall column"] == "recall"].iloc[0]
    only = res.frame[(res.frame["M"] == 8) & (res.frame["ef_construction"] == 32)]
    r = BenchResults(only).ratios(interpolate=False).set_index("recall_target")
    for t in (0.90, 0.95, 0.99):
        cell = same[f"@{t:.2f}"]
        assert cell == "-" or _cell_ratio(cell) == pytest.approx(r.loc[t, "ratio"], abs=0.005)
    # the printed headline is that table
    assert "same parameters (M=8, ef_construction=32)" in stdout
    assert "best parameters (builds M/ef_construction 6/24, 8/32, 12/24)" in stdout


def test_from_csv_re_renders_the_same_tables(quick_run):
    out, stdout = quick_run
    again = _run("--from-csv", str(out / "recall_qps-t.csv"), "--out", str(out))
    assert _tables(again) == _tables(stdout)


def test_builds_table_compares_with_faiss_of_the_same_setting_and_threads():
    mod = _script()
    rows = []
    for lib, index, m, s in (
        ("faiss", "HNSWFlat", 16, 10.0),
        ("faiss", "HNSWFlat", 24, 20.0),
        ("hnswlib", "hnsw", 16, 8.0),
        ("hnswlib", "hnsw", 24, 30.0),
        ("usearch", "hnsw", 32, 5.0),
    ):
        rows.append(
            {"library": lib, "index": index, "M": m, "ef_construction": 128, "build_s": s}
            | {"index_bytes": 1, "memory_bytes": 0, "threads": 2}
        )
    extra = [
        {
            "library": "faiss",
            "index": "HNSWFlat (1 thread)",
            "M": 16,
            "ef_construction": 128,
            "build_s": 25.0,
            "threads": 1,
        }
    ]
    b = mod.builds_table(pd.DataFrame(rows), extra).set_index(["library", "index", "M"])
    assert b.loc[("hnswlib", "hnsw", 16), "vs_faiss_same_threads"] == pytest.approx(0.8)
    assert b.loc[("hnswlib", "hnsw", 24), "vs_faiss_same_threads"] == pytest.approx(1.5)
    assert np.isnan(b.loc[("usearch", "hnsw", 32), "vs_faiss_same_threads"])
    assert b.loc[("faiss", "HNSWFlat (1 thread)", 16), "vs_faiss_same_threads"] == 1.0

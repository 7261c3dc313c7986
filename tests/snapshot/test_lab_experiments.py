"""The Lab as an experiment tracker: commits of any engine on branches, params that never
contradict the engine, index identity, recorded evaluation, runs/compare, sweeps, pruned
commits, opening vs creating, and labs written before branches existed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
from snap_helpers import DIM, SWEEP_QUERIES, build_for_sweep

import oluo_lab as ol
from oluo_lab.cas import DirStore, reassemble
from oluo_lab.cli import main
from oluo_lab.snapshot import (
    HEAD_NAME,
    REFS_LOG_NAME,
    CommitPruned,
    EvalSpec,
    HeadMoved,
    Lab,
    ManifestSerde,
    NotALab,
    ParamConflict,
    PersistIOError,
    RefExists,
    is_lab,
    persist_snapshot,
)


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _engine(n: int = 300, seed: int = 0, **config) -> ol.OluoEngine:
    config = {"compact_threshold": 10_000, "M": 8, "ef_construction": 40, **config}
    eng = ol.OluoEngine(DIM, metric="l2", **config)
    eng.add(
        _vectors(n, seed), ids=[f"w{i}" for i in range(n)], metadata=[{"i": i} for i in range(n)]
    )
    return eng


def _tree(path: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file()
    )


def _state(eng: ol.OluoEngine) -> tuple:
    return (eng.generation, eng.delta_size, eng.base_size, eng.key_counter, len(eng))


# ----------------------------------------------------------------------------- commit model


def test_commit_records_the_engine_state_after_a_user_compaction(tmp_path):
    """An automatic compaction queued, then eng.compact() (whose snapshot goes to the
    caller): the commit must hold the engine's current generation, not the queued one."""
    eng = ol.OluoEngine(8, metric="l2", compact_threshold=6, M=8)

    def add(ids: list[str], seed: int) -> None:
        rng = np.random.default_rng(seed)
        vecs = rng.standard_normal((len(ids), 8)).astype(np.float32)
        eng.add(vecs, ids=ids, metadata=[{"seed": seed + i} for i in range(len(ids))])

    add(["e13", "e0", "e1", "e2"], 1)
    add(["e0", "e1", "e3", "e21"], 10)  # the 6th distinct entry: an automatic compaction
    add(["e0", "e21"], 20)
    assert len(eng.pending_snapshots) == 1 and eng.generation == 1
    eng.compact()  # generation 2, returned to the caller, not queued
    lab = Lab(tmp_path / "lab")
    snap = lab.commit(eng, progress=False)
    assert snap.generation == eng.generation == 2 and eng.pending_snapshots == []
    restored = lab.checkout("HEAD")
    assert restored.entries() == eng.entries()
    assert restored.entry("e0").metadata == {"seed": 20}
    q = _vectors(5, 3)[:, :8]
    a, b = eng.search(q, k=6), restored.search(q, k=6)
    assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.scores, b.scores)


def test_note_or_params_only_commit_keeps_the_index_identity(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = _engine()
    first = lab.commit(eng, note="built", progress=False)
    before = _state(eng)
    noted = lab.commit(eng, note="same index", params={"lr": 0.1}, progress=False)
    assert _state(eng) == before  # no compaction: the engine did not change
    assert noted.cid != first.cid and noted.parent == first.cid
    assert noted.generation == first.generation == eng.generation
    assert noted.index_digest == first.index_digest
    assert noted.manifest.index_cid == first.manifest.index_cid
    assert noted.manifest.metadata_cid == first.manifest.metadata_cid
    # the seed load path accepts a parent of the same generation for such a commit
    loaded, _, gen = ol.load_snapshot(lab.path, lab.store)
    assert gen == first.generation and loaded.entries() == eng.entries()
    # a changed engine gets a new generation and a new index digest
    eng.add(_vectors(10, 9), ids=[f"x{i}" for i in range(10)])
    changed = lab.commit(eng, progress=False)
    assert changed.generation == first.generation + 1
    assert changed.index_digest != first.index_digest
    # the digest is the blake3 of the index bytes, however the record stores them
    import blake3

    assert changed.index_digest == blake3.blake3(eng.current_snapshot().index_bytes).hexdigest()
    assert lab.commit(eng, progress=False).cid == changed.cid  # nothing new: the head


def test_a_fresh_engine_on_a_branch_that_has_commits_is_refused_without_changes(tmp_path):
    lab = Lab(tmp_path / "lab")
    lab.commit(_engine(), note="main", progress=False)
    other = _engine(200, seed=4, M=16)
    before_tree, before_state = _tree(lab.path), _state(other)
    with pytest.raises(HeadMoved) as ei:
        lab.commit(other, params={"M": 16}, progress=False)
    assert "lab.commit(engine, branch='NEW-NAME')" in str(ei.value)
    assert ei.value.branch == "main" and ei.value.expected is None
    assert _tree(lab.path) == before_tree and _state(other) == before_state
    snap = lab.commit(other, branch="m16", params={"M": 16}, progress=False)
    assert snap.parent is None and snap.branch == "m16" and snap.seq == 2
    # the engine now belongs to m16: its next commit goes there, with that parent
    other.delete(["w0"])
    nxt = lab.commit(other, note="-1", progress=False)
    assert nxt.branch == "m16" and nxt.parent == snap.cid
    assert lab.log("m16")["#"].tolist() == [3, 2] and lab.log("main")["#"].tolist() == [1]


def test_checkout_of_a_branch_switches_head_and_commits_continue_it(make_lab):
    lab = make_lab()
    base = lab.commit(_engine(), progress=False)
    lab.branch("exp")
    assert lab.resolve("exp").cid == base.cid
    eng = lab.checkout("exp")
    assert lab.current_branch == "exp" and lab.head().cid == base.cid
    eng.add(_vectors(5, 1), ids=[f"n{i}" for i in range(5)])
    exp = lab.commit(eng, progress=False)
    assert lab.resolve("HEAD").cid == exp.cid and lab.resolve("HEAD~1").cid == base.cid
    assert lab.resolve("main").cid == base.cid  # main did not move
    # an engine from main's old commit fast-forwards main to a descendant: allowed
    ff = lab.checkout("exp")
    lab.current_branch = "main"
    assert lab.commit(ff, branch="main", note="merge exp", progress=False).parent == exp.cid
    branches = lab.branches()
    assert branches["branch"].tolist() == ["main", "exp"]
    assert branches["current"].tolist() == [True, False]
    with pytest.raises(RefExists, match="--force"):
        lab.branch("exp", base.cid.hex)
    lab.branch("exp", base.cid.hex, force=True)
    assert lab.resolve("exp").cid == base.cid
    with pytest.raises(RefExists):
        lab.tag("exp")
    lab.delete_branch("exp")
    assert "exp" not in lab.branches()["branch"].tolist()
    with pytest.raises(ValueError):
        lab.delete_branch("main")


def test_a_stale_engine_is_refused_and_says_what_to_do(make_lab):
    lab = make_lab()
    lab.commit(_engine(), progress=False)
    a, b = lab.checkout("main"), lab.checkout("main")
    a.add(_vectors(3, 1), ids=["a0", "a1", "a2"])
    b.add(_vectors(3, 2), ids=["b0", "b1", "b2"])
    landed = lab.commit(a, progress=False)
    before = _state(b)
    with pytest.raises(HeadMoved, match=r"moved on .*lab\.checkout\('main'\)") as ei:
        lab.commit(b, progress=False)
    assert ei.value.found == landed.cid and _state(b) == before
    assert lab.commit(b, branch="b", progress=False).parent == landed.parent


# ----------------------------------------------------------------------------- params


def test_params_contradicting_the_engine_are_refused_before_anything_changes(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = _engine(ef_search=64)
    tree, state = _tree(lab.path), _state(eng)
    for bad in (
        {"M": 48},
        {"ef_search": 128},
        {"efSearch": 128},
        {"metric": "cosine"},
        {"entries": 7},
        {"dim": np.int64(3)},
    ):
        with pytest.raises(ParamConflict) as ei:
            lab.commit(eng, params=bad, progress=False)
        assert isinstance(ei.value, ValueError) and list(bad)[0] in str(ei.value)
    with pytest.raises(ParamConflict, match="ef_search=128"):
        lab.commit(eng, ef_search=128, M=8, progress=False)  # keyword params, as before
    assert _tree(lab.path) == tree and _state(eng) == state
    snap = lab.commit(eng, params={"M": 8, "ef_search": np.int32(64), "lr": 0.5}, progress=False)
    assert snap.params == {"M": 8, "ef_search": 64, "lr": 0.5}
    assert dict(snap.config)["M"] == 8 and dict(snap.config)["ef_search"] == 64


def test_numpy_params_and_metrics_are_stored_canonically(tmp_path):
    lab_a, lab_b = Lab(tmp_path / "a"), Lab(tmp_path / "b")
    np_params = {
        "n": np.int64(7),
        "x": np.float32(0.5),
        "flag": np.bool_(True),
        "zero_d": np.array(3),
        "pair": (1, np.int16(2)),
        "nested": {"k": (np.float64(0.25), "s")},
        "word": np.str_("glove"),
    }
    py_params = {
        "n": 7,
        "x": 0.5,
        "flag": True,
        "zero_d": 3,
        "pair": [1, 2],
        "nested": {"k": [0.25, "s"]},
        "word": "glove",
    }
    a = lab_a.commit(
        _engine(), params=np_params, metrics={"recall": np.float64(0.9)}, progress=False
    )
    b = lab_b.commit(_engine(), params=py_params, metrics={"recall": 0.9}, progress=False)
    assert a.params == py_params and type(a.params["n"]) is int and a.cid == b.cid
    assert a.metrics == {"recall": 0.9}
    for bad in ({"v": np.zeros(3)}, {"v": float("nan")}, {"v": object()}, {1: 2}):
        with pytest.raises(ManifestSerde):
            lab_a.commit(_engine(), branch="x", params=bad, progress=False)


def test_the_commit_id_depends_only_on_state_params_and_parent(tmp_path):
    """Same build, same params, same parent: same commit id, in any lab, at any time and
    whatever number the commit gets; the manifest holds no time, number or timing."""
    a = Lab(tmp_path / "a")
    a.commit(_engine(50, seed=5), branch="other", progress=False)  # shifts the numbers
    sa = a.commit(_engine(), params={"M": 8}, evaluate=_vectors(20, 7), progress=False)
    time.sleep(1.1)  # another second in the commit log
    sb = Lab(tmp_path / "b").commit(
        _engine(), params={"M": 8}, evaluate=_vectors(20, 7), progress=False
    )
    assert sa.cid == sb.cid and sa.manifest.evaluation == sb.manifest.evaluation
    assert (sa.seq, sb.seq) == (2, 1) and sa.time != sb.time and sa.timings and sb.timings


# ----------------------------------------------------------------------------- evaluation


def _oracle_recall(eng: ol.OluoEngine, queries: np.ndarray, k: int, ef: int) -> float:
    """recall@k of the engine against numpy brute force (float64, ties by key)."""
    keys, _, vecs = eng.live_vectors()
    d = ((queries[:, None, :].astype(np.float64) - vecs[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(keys, d.shape), d), axis=-1)[:, :k]
    truth = keys[order]
    found = eng.search(queries, k=k, ef=ef).keys
    pairs = zip(found.tolist(), truth.tolist(), strict=True)
    return sum(len(set(f) & set(t)) for f, t in pairs) / truth.size


def test_evaluation_is_recorded_against_exact_truth_and_stored_once(make_lab):
    lab = make_lab()
    eng = _engine(400, M=4, ef_construction=8)
    queries = _vectors(30, 11)
    snap = lab.commit(eng, evaluate=EvalSpec(queries, k=5, ef_search=[2, 8, 32]), progress=False)
    ev = snap.evaluation
    assert ev["k"] == 5 and ev["n_queries"] == 30 and ev["metric"] == "l2"
    assert [ef for ef, _ in ev["recall"]] == [2, 8, 32, 64]  # the engine's own ef_search too
    for ef, recall in ev["recall"]:
        assert recall == pytest.approx(_oracle_recall(eng, queries, 5, ef))
    assert snap.recall[2] < snap.recall[32]  # a real measurement, not a constant
    assert [p["ef_search"] for p in snap.timings["points"]] == [2, 8, 32, 64]
    assert all(p["qps"] > 0 and p["p50_ms"] <= p["p99_ms"] for p in snap.timings["points"])
    stored = ol.snapshot.evaluation.load_queries(lab.store, ol.CID.from_bytes(ev["queries"]))
    assert np.array_equal(stored, queries)
    # a note-only commit on the same engine and queries reuses the stored truth and queries
    books = set(lab.store)
    again = lab.commit(
        eng,
        note="re-evaluated",
        evaluate=EvalSpec(queries, k=5, ef_search=[2, 8, 32]),
        progress=False,
    )
    assert again.evaluation == ev
    assert set(lab.store) - books == {again.cid}  # only the manifest is new
    runs = lab.runs()
    assert runs.loc[0, "recall@5"] == dict(ev["recall"])[64]
    with_t = lab.runs(timings=True)
    assert with_t.loc[0, "qps"] > 0
    frame = lab.evaluations([snap.cid.hex])
    assert frame["ef_search"].tolist() == [2, 8, 32, 64] and frame["recall"].is_monotonic_increasing
    assert lab.verify(progress=False).unreachable_books == 0  # queries and truth are reachable


def test_evaluate_accepts_a_dataset_and_refuses_bad_queries_unchanged(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = _engine()
    data = ol.datasets.from_arrays(_vectors(50, 1), _vectors(12, 2), metric="l2", k=10)
    state = _state(eng)
    with pytest.raises(Exception) as ei:
        lab.commit(eng, evaluate=np.zeros((4, DIM + 1), np.float32), progress=False)
    assert "dimension" in str(ei.value)
    with pytest.raises(TypeError):
        lab.commit(eng, evaluate="queries.npy", progress=False)
    assert _state(eng) == state and not (lab.path / HEAD_NAME).exists()
    snap = lab.commit(eng, evaluate=data, progress=False)
    assert snap.evaluation["n_queries"] == 12 and snap.evaluation["k"] == 10


def test_diff_uses_the_recorded_queries_and_names_its_fallback(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = _engine()
    plain = lab.commit(eng, progress=False)
    eng.delete([f"w{i}" for i in range(100)])
    queries = _vectors(25, 3)
    evald = lab.commit(eng, evaluate=EvalSpec(queries, k=7), progress=False)
    d = lab.diff(plain, evald)
    assert d.semantic.n_queries == 25 and d.semantic.k == 7
    assert "recorded with #2" in d.semantic.source and d.a_label == "#1"
    fallback = lab.diff(plain, plain)
    assert fallback.semantic.source.startswith("fallback:") and "own vectors" in (
        fallback.semantic._repr_html_()
    )
    assert "fallback queries" in repr(fallback.semantic) and "fallback" not in repr(d.semantic)
    given = lab.diff(plain, evald, queries=queries[:5], k=3)
    assert given.semantic.n_queries == 5 and given.semantic.source == "the queries given"


# ----------------------------------------------------------------------------- tables


def test_runs_compare_and_query(make_lab):
    lab = make_lab()
    q = _vectors(20, 5)
    for m in (4, 8):
        lab.commit(
            _engine(M=m),
            branch=f"m{m}",
            params={"M": m, "data": "synthetic"},
            metrics={"build_s": float(m)},
            evaluate=q,
            progress=False,
        )
    runs = lab.runs()
    assert runs["#"].tolist() == [2, 1] and runs["branch"].tolist() == ["m8", "m4"]
    assert runs["M"].tolist() == [8, 4] and runs["params.M"].tolist() == [8, 4]
    assert runs["metrics.build_s"].tolist() == [8.0, 4.0] and "recall@10" in runs
    assert runs["time"].map(lambda t: t.endswith("+00:00")).all()
    assert lab.runs(query="`params.M` > 4")["branch"].tolist() == ["m8"]
    assert lab.runs(branch="m4")["#"].tolist() == [1]
    cmp = lab.compare("m4", "m8")
    assert list(cmp.columns) == ["#1", "#2", "Δ #2"]
    assert cmp.loc["M", "Δ #2"] == 4 and cmp.loc["metrics.build_s", "Δ #2"] == 4.0
    assert cmp.loc["params.data", "Δ #2"] is None
    assert cmp.loc["recall@10 ef_search=64", "#1"] == lab.resolve("m4").recall[64]
    with pytest.raises(ValueError):
        lab.compare("m4")


def test_plot_recall_qps_of_lab_commits(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    lab = Lab(tmp_path / "lab")
    q = _vectors(20, 5)
    for m in (4, 8):
        lab.commit(_engine(M=m), branch=f"m{m}", params={"M": m}, evaluate=q, progress=False)
    fig, ax = ol.plot_recall_qps(lab, ["m4", "m8"])
    labels = ax.get_legend_handles_labels()[1]
    assert any(lbl.startswith("#1 M=4") for lbl in labels)
    assert any(lbl.startswith("#2 M=8") for lbl in labels)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- sweeps


def test_sweep_commits_each_point_on_its_branch_and_a_rerun_skips_them(make_lab):
    lab = make_lab()
    grid = {"M": [4, 8], "ef_construction": [16, 32]}
    runs = lab.sweep(build_for_sweep, grid, evaluate=SWEEP_QUERIES, params={"data": "synthetic"})
    assert runs["branch"].tolist() == [
        "sweep/M=4,ef_construction=16",
        "sweep/M=4,ef_construction=32",
        "sweep/M=8,ef_construction=16",
        "sweep/M=8,ef_construction=32",
    ]
    assert runs["sweep"].tolist() == ["committed"] * 4
    assert runs["M"].tolist() == [4, 4, 8, 8] and runs["ef_construction"].tolist() == [
        16,
        32,
        16,
        32,
    ]
    assert runs["params.data"].tolist() == ["synthetic"] * 4
    assert runs["recall@10"].notna().all()
    # the best run checks out and is what it says
    best = runs.sort_values("recall@10", ascending=False, kind="mergesort").iloc[0]
    eng = lab.checkout(best["branch"])
    assert best["M"] == eng.config.M and eng.config.ef_construction == best["ef_construction"]
    # re-running finds every point committed with the same params and queries
    again = lab.sweep(build_for_sweep, grid, evaluate=SWEEP_QUERIES, params={"data": "synthetic"})
    assert again["sweep"].tolist() == ["skipped"] * 4
    assert again["commit"].tolist() == runs["commit"].tolist()
    assert len(lab.log()) == 4
    # other data under the same branch names is refused before anything is built
    with pytest.raises(ValueError, match="prefix="):
        lab.sweep(build_for_sweep, grid, evaluate=SWEEP_QUERIES, params={"data": "other"})
    more = lab.sweep(
        build_for_sweep,
        [{"M": 4, "ef_construction": 16}],
        evaluate=SWEEP_QUERIES,
        prefix="small",
        params={"data": "synthetic"},
    )
    assert more["branch"].tolist() == ["small/M=4,ef_construction=16"]
    assert more["commit"].tolist() == [runs["commit"][0]]  # the same build: the same commit


def test_sweep_on_executors_gives_the_serial_commit_ids(tmp_path):
    grid = [{"M": 4, "ef_construction": 16}, {"M": 8, "ef_construction": 32}]
    serial = Lab(tmp_path / "serial").sweep(build_for_sweep, grid, evaluate=SWEEP_QUERIES)
    with ThreadPoolExecutor(2) as pool:
        threads = Lab(tmp_path / "threads").sweep(
            build_for_sweep, grid, evaluate=SWEEP_QUERIES, executor=pool
        )
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        procs = Lab(tmp_path / "procs").sweep(
            build_for_sweep, grid, evaluate=SWEEP_QUERIES, executor=pool
        )
    assert serial["commit"].tolist() == threads["commit"].tolist() == procs["commit"].tolist()
    assert Lab(tmp_path / "procs").verify(progress=False)


# ----------------------------------------------------------------------------- pruned


def test_pruned_commits_are_marked_and_refused_with_when(tmp_path):
    lab = Lab(tmp_path / "lab")
    eng = _engine()
    for i in range(3):
        eng.add(_vectors(5, 20 + i), ids=[f"g{i}_{j}" for j in range(5)])
        lab.commit(eng, note=f"c{i}", progress=False)
    old = time.time() - 7200
    for root, _, files in os.walk(lab.path / "cas"):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    lab.gc(dry_run=False, keep_last=1, progress=False)
    log = lab.log()
    assert log["state"].tolist() == ["live", "pruned", "pruned"]
    snap = lab.resolve("#1")  # the manifest stays: the log still shows it
    assert snap.pruned and snap.note == "c0"
    with pytest.raises(CommitPruned, match=r"#1 .*gc retired its payloads at 20") as ei:
        lab.checkout("#1")
    assert ei.value.seq == 1 and ei.value.when.startswith(str(time.gmtime().tm_year))
    with pytest.raises(CommitPruned, match="#2"):
        lab.diff("#2", "HEAD")
    code = main(["diff", str(lab.path), "1", "3"])
    assert code == 2
    assert len(lab.checkout("HEAD")) == len(eng)


# ----------------------------------------------------------------------------- open/create


def test_open_and_read_only_commands_create_nothing_on_a_non_lab(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "lab"
    with pytest.raises(NotALab):
        Lab.open(missing)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a lab")
    with pytest.raises(NotALab, match="not a lab"):
        Lab.open(plain)
    for cmd in (
        ["log"],
        ["show"],
        ["diff", "1"],
        ["verify"],
        ["gc"],
        ["runs"],
        ["branch"],
        ["compare", "1", "2"],
        ["tag"],
    ):
        for where in (missing, plain):
            assert main([cmd[0], str(where), *cmd[1:]]) == 2
            assert "not a lab" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt"]
    # creating: only the lab's own directory, unless parents=True
    with pytest.raises(PersistIOError, match="parents=True"):
        Lab(missing)
    assert not (tmp_path / "no").exists()
    Lab(missing, parents=True)
    assert Lab.open(missing).path == missing
    # the same on an object store: opening a prefix that holds no lab creates nothing
    with pytest.raises(NotALab, match="oluo-lab-format"):
        Lab.open("memory://non-lab/here")
    assert main(["log", "memory://non-lab/here"]) == 2
    assert "not a lab" in capsys.readouterr().err
    assert not is_lab("memory://non-lab/here")


def test_cli_runs_compare_branch_json_csv_and_pipes(tmp_path, capsys):
    lab = Lab(tmp_path / "lab")
    q = _vectors(10, 1)
    lab.commit(_engine(), note="main build", progress=False)
    lab.commit(_engine(M=4), branch="m4", params={"M": 4}, evaluate=q, progress=False)
    assert main(["runs", str(lab.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["#"] for r in rows] == [2, 1]
    assert rows[1]["params.M"] is None and rows[1]["recall@10"] is None  # null, not ""
    assert rows[0]["commit"] == lab.resolve("m4").id and rows[0]["cid"] == lab.resolve("m4").cid.hex
    assert main(["runs", str(lab.path), "--csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("#,commit,branch") and len(csv) == 3
    assert main(["log", str(lab.path)]) == 0
    text = capsys.readouterr().out
    assert "KiB" in text and "#2" in text
    assert main(["compare", str(lab.path), "1", "m4", "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["fields"]["M"] == {"#1": 8, "#2": 4, "Δ #2": -4}
    assert main(["branch", str(lab.path), "exp", "#1"]) == 0
    capsys.readouterr()
    assert main(["branch", str(lab.path), "exp", "m4"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["branch", str(lab.path), "exp", "m4", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["#"] == 2
    assert main(["branch", str(lab.path), "--json"]) == 0
    assert [b["branch"] for b in json.loads(capsys.readouterr().out)] == ["main", "exp", "m4"]
    assert main(["branch", str(lab.path), "exp", "--delete"]) == 0
    assert main(["show", str(lab.path), "HEAD~5"]) == 2
    assert "has only 0 commit" in capsys.readouterr().err
    # `| head`: the reader closes the pipe; no traceback
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        f"{sys.executable} -m oluo_lab.cli runs {lab.path} --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.stdout.strip() == "[" and "Traceback" not in proc.stderr
    out = subprocess.run(
        [sys.executable, "-m", "oluo_lab.cli", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.startswith("oluo-lab ")
    for command in ("log", "runs", "show", "compare", "diff", "verify", "gc", "tag", "branch"):
        helptext = subprocess.run(
            [sys.executable, "-m", "oluo_lab.cli", command, "--help"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        ).stdout
        assert "lab directory" in helptext, command


# ----------------------------------------------------------------------------- legacy labs


def test_a_lab_written_before_branches_keeps_working(tmp_path):
    """persist_snapshot alone (version 1 manifests, persist records in the refs log): its
    history is branch main, numbered in refs-log order; annotations show as such."""
    d = tmp_path / "old"
    d.mkdir()
    store = DirStore(d / "cas")
    eng = _engine()
    for i in range(3):
        eng.add(_vectors(5, i), ids=[f"o{i}_{j}" for j in range(5)])
        snap = eng.compact()
        persist_snapshot(
            d,
            store,
            snap.index_bytes,
            snap.metadata_bytes,
            snap.key_counter,
            snap.generation,
            note=f"old {i}",
            annotations={"step": i},
        )
    assert json.loads((d / HEAD_NAME).read_text())["version"] == 1
    lab = Lab.open(d)
    log = lab.log()
    assert log["#"].tolist() == [3, 2, 1] and log["branch"].tolist() == ["main"] * 3
    runs = lab.runs()
    assert runs["annotations.step"].tolist() == [2, 1, 0] and runs["time"].notna().all()
    assert lab.resolve("#2").manifest.version == 1 and lab.resolve("#2").annotations == {"step": 1}
    assert lab.resolve("#2").index_digest is not None
    # loaded through the seed API, then committed through the Lab: it continues main
    loaded, _, _ = ol.load_snapshot(d, store)
    loaded.add(_vectors(2, 50), ids=["new0", "new1"])
    nxt = lab.commit(loaded, params={"step": 3}, progress=False)
    assert nxt.seq == 4 and nxt.parent == lab.resolve("#3").cid and nxt.manifest.version == 2
    assert lab.verify(progress=False)
    records = (d / REFS_LOG_NAME).read_text().splitlines()
    assert json.loads(records[-1])["seq"] == 4


def test_truth_reused_across_commits_with_the_same_vectors(tmp_path):
    lab = Lab(tmp_path / "lab")
    q = _vectors(15, 8)
    a = lab.commit(_engine(M=4), branch="a", evaluate=q, progress=False)
    b = lab.commit(_engine(M=8), branch="b", evaluate=q, progress=False)
    assert a.evaluation["truth"] == b.evaluation["truth"]  # same live vectors, queries, k
    assert a.evaluation["queries"] == b.evaluation["queries"]
    truth = reassemble(ol.CID.from_bytes(a.evaluation["truth"]), lab.store)
    assert len(truth) > 15 * 10 * 8


def test_an_unchanged_engine_with_nothing_to_record_only_moves_the_branch(tmp_path):
    lab = Lab(tmp_path / "lab")
    lab.commit(_engine(), progress=False)
    lab.branch("exp")
    eng = lab.checkout("exp")
    eng.add(_vectors(2, 1), ids=["n0", "n1"])
    exp = lab.commit(eng, progress=False)
    same = lab.checkout("exp")
    assert lab.commit(same, branch="main", progress=False).cid == exp.cid  # fast-forward
    assert lab.commit(same, branch="copy", progress=False).cid == exp.cid  # a new branch
    assert lab.log()["#"].tolist() == [2, 1]  # no new commit
    assert lab.branches().set_index("branch")["#"].to_dict() == {"main": 2, "exp": 2, "copy": 2}

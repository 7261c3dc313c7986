"""Bounds checks of an HNSW serialisation before faiss reads it (engine layer, no faiss).

faiss's readers check little of what they read: a vector's count is bounded only by
2^40, and the HNSW graph (levels, offsets, neighbour ids, entry point) is taken as it
comes, so hostile bytes can make faiss allocate terabytes or, later, search out of
bounds. Index bytes come from labs other people wrote; :func:`check_hnsw_bytes` walks the
serialisation of an ``IndexHNSWFlat`` ("IHNf") or ``IndexBinaryHNSW`` ("IBHf") and
checks every size against the bytes actually there and every graph field against the
index's size, without allocating more than a few small arrays: levels in range, offsets
framing exactly each vector's neighbour lists, neighbour ids in ``[-1, ntotal)``, the
entry point and top level consistent with the levels, the storage holding exactly
``ntotal`` vectors, nothing after it. A failure is a ``ValueError`` naming the field.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["check_hnsw_bytes"]

_FLAT_STORAGE = (b"IxF2", b"IxFI", b"IxFl")
_BINARY_STORAGE = b"IBxF"
#: more levels than any real graph has (faiss draws levels with probability 1/M^l)
_MAX_LEVELS = 64


class _Cursor:
    def __init__(self, mv: memoryview) -> None:
        self.mv = mv
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        s = struct.Struct(fmt)
        if self.pos + s.size > len(self.mv):
            raise ValueError(f"HNSW bytes end at {len(self.mv)}, inside a header at {self.pos}")
        out = s.unpack_from(self.mv, self.pos)
        self.pos += s.size
        return out

    def array(self, what: str, dtype: str, unit: int | None = None) -> np.ndarray:
        """A faiss vector (u64 count, then the items) as a view; its claimed size is
        checked against the bytes left before anything is read."""
        (count,) = self.take("<Q")
        item = np.dtype(dtype).itemsize
        nbytes = count * (unit or item)
        if nbytes > len(self.mv) - self.pos or nbytes % item:
            raise ValueError(
                f"HNSW {what}: {count} items claimed, {len(self.mv) - self.pos} bytes left"
            )
        out = np.frombuffer(self.mv, dtype=dtype, count=nbytes // item, offset=self.pos)
        self.pos += nbytes
        return out


def check_hnsw_bytes(data: bytes | memoryview, binary: bool) -> None:
    """Raise ``ValueError`` naming the field unless ``data`` is a well-formed serialisation
    of an ``IndexHNSWFlat`` (``binary=False``) or ``IndexBinaryHNSW`` (see the module
    docstring)."""
    mv = memoryview(data).cast("B")
    c = _Cursor(mv)
    (fourcc,) = c.take("<4s")
    if binary:
        if fourcc != b"IBHf":
            raise ValueError(f"fourcc {fourcc!r} is not an IndexBinaryHNSW")
        d, code_size, ntotal, _, _ = c.take("<iiq?i")
        if d <= 0 or code_size != (d + 7) // 8:
            raise ValueError(f"dimension {d} / code size {code_size} disagree")
        row = code_size
    else:
        if fourcc != b"IHNf":
            raise ValueError(f"fourcc {fourcc!r} is not an IndexHNSWFlat")
        d, ntotal, _, _, _, metric = c.take("<iqqq?i")
        if metric > 1:
            c.take("<f")
        if d <= 0:
            raise ValueError(f"dimension {d} is not positive")
        row = 4 * d
    if not 0 <= ntotal <= len(mv) // max(row, 1):
        raise ValueError(f"ntotal {ntotal} does not fit in {len(mv)} bytes")
    probas = c.array("assign_probas", "<f8")
    cum = c.array("cum_nneighbor_per_level", "<i4").astype(np.int64)
    if not 1 < len(cum) <= _MAX_LEVELS + 1 or len(probas) != len(cum) - 1:
        raise ValueError(f"{len(cum) - 1} levels of neighbours ({len(probas)} probabilities)")
    if cum[0] != 0 or (np.diff(cum) <= 0).any():
        raise ValueError("cum_nneighbor_per_level does not start at 0 and increase")
    levels = c.array("levels", "<i4")
    offsets = c.array("offsets", "<u8")
    neighbors = c.array("neighbors", "<i4")
    entry, max_level, ef_construction, ef_search, _ = c.take("<iiiii")
    if len(levels) != ntotal or len(offsets) != ntotal + 1:
        raise ValueError(f"{len(levels)} levels / {len(offsets)} offsets for {ntotal} vectors")
    if ntotal:
        if levels.min() < 1 or levels.max() > len(cum) - 1:
            raise ValueError(f"a level outside 1..{len(cum) - 1}")
        steps = np.diff(offsets.astype(np.int64))
        if offsets[0] != 0 or not np.array_equal(steps, cum[levels]):
            raise ValueError("offsets do not frame each vector's neighbour lists")
        if not 0 <= entry < ntotal or max_level != int(levels.max()) - 1:
            raise ValueError(f"entry point {entry} / top level {max_level} do not fit the levels")
    elif offsets[0] != 0 or entry != -1:
        raise ValueError("an empty graph with offsets or an entry point")
    if int(offsets[-1]) != len(neighbors):
        raise ValueError(f"{len(neighbors)} neighbour ids, the offsets frame {int(offsets[-1])}")
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= ntotal):
        raise ValueError(f"a neighbour id outside -1..{ntotal - 1}")
    if ef_construction <= 0 or ef_search <= 0:
        raise ValueError(f"efConstruction {ef_construction} / efSearch {ef_search}")
    (sfour,) = c.take("<4s")
    if binary:
        if sfour != _BINARY_STORAGE:
            raise ValueError(f"storage fourcc {sfour!r} is not a binary flat index")
        sd, scode, sn, _, _ = c.take("<iiq?i")
        if scode != code_size:
            raise ValueError("storage code size differs from the index's")
        codes = c.array("codes", "u1")
    else:
        if sfour not in _FLAT_STORAGE:
            raise ValueError(f"storage fourcc {sfour!r} is not a flat index")
        sd, sn, _, _, _, smetric = c.take("<iqqq?i")
        if smetric > 1:
            c.take("<f")
        codes = c.array("codes", "u1", unit=4)  # faiss writes flat codes as a float count
    if sd != d or sn != ntotal or len(codes) != ntotal * row:
        raise ValueError("the storage does not hold ntotal vectors of the index's dimension")
    if c.pos != len(mv):
        raise ValueError(f"{len(mv) - c.pos} trailing bytes after the storage")

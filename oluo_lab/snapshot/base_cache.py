"""The base cache ``oluo_base.bin``: the head's raw index bytes, for memory-mapping.

Snapshot layer (a data-directory file; docs/FORMAT.md §3.1). The cache is derivable from
the CAS and never the source of truth: a persist publishes it (written on a thread while
the CAS work runs, see :func:`start_base_write`), a load rewrites it only when it does not
hold the head's verified index bytes, and the engine maps its vectors from it only when
it holds exactly the bytes the engine was built from (:func:`base_holds`, under
``data_dir_lock``). Files are only renamed over, never rewritten, so a mapped base is
never affected by a later replacement.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import _io
from .durable import BackgroundWrite, atomic_write

#: format (docs/FORMAT.md §3.1): the base cache's name in a data directory.
BASE_NAME = "oluo_base.bin"

__all__ = ["BASE_NAME", "base_holds", "start_base_write", "write_base_if_changed"]

_COMPARE_PIECE = 1 << 22


def base_holds(base_path: Path, index_bytes: bytes) -> bool:
    """Does the base cache hold exactly ``index_bytes``? (False when it is unreadable.)

    Compared in 4 MiB pieces read into one reused buffer (``bytearray ==`` a buffer is a
    memcmp): reading the whole file into a new ``bytes`` first cost 2.5x as much, mostly
    in page faults of the fresh allocation."""
    with contextlib.suppress(OSError):
        fd = _io.open_read(base_path)
        try:
            if os.fstat(fd).st_size != len(index_bytes):
                return False
            want = memoryview(index_bytes).cast("B")
            buf = bytearray(min(_COMPARE_PIECE, len(want)))
            pos = 0
            while pos < len(want):
                n = min(len(buf), len(want) - pos)
                if n != len(buf):
                    buf = bytearray(n)
                if _io.pread_into(fd, buf, pos) != n or buf != want[pos : pos + n]:
                    return False
                pos += n
            return _io.pread_into(fd, bytearray(1), pos) == 0
        finally:
            _io.close(fd)
    return False


def write_base_if_changed(base_path: Path, index_bytes: bytes) -> bool:
    """Write the base cache unless it already holds exactly ``index_bytes`` (True: written)."""
    if base_holds(base_path, index_bytes):
        return False
    atomic_write(base_path, index_bytes)
    return True


def start_base_write(base_path: Path, index_bytes: bytes) -> BackgroundWrite:
    """Start writing (and fsyncing) the base cache on a thread; nothing at ``base_path``
    changes until :meth:`BackgroundWrite.commit`, which leaves a cache that already holds
    ``index_bytes`` alone. Hold ``data_dir_lock`` from here until commit or abort."""
    return BackgroundWrite(
        base_path, index_bytes, unchanged=lambda: base_holds(base_path, index_bytes)
    )

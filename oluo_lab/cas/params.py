"""Format constants of the content-addressed store, kept in one module.

Changing anything here changes CIDs (chunk boundaries or root metadata), so it is a
format change: regenerate the golden vectors in docs/FORMAT.md and keep the old
chunker parameters in ``KNOWN_CHUNK_PARAMS`` so existing roots stay readable.

Each constant's comment starts ``format (docs/FORMAT.md §n)``, naming the section that
defines it; every format-defining constant in the package is marked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

#: format (docs/FORMAT.md §1): largest book (leaf or bundle) in bytes, 1 MiB.
#: Empty books are allowed.
MAX_BOOK_SIZE = 1 << 20
#: format (docs/FORMAT.md §1): width of a binary CID and of every bundle entry.
CID_LEN = 40
#: format (docs/FORMAT.md §1): highest bundle depth a CID can carry (books have depth 0).
MAX_DEPTH = 8
#: format (docs/FORMAT.md §1): entries that fit in one bundle; a root keeps one slot for its
#: metadata record.
FANOUT = MAX_BOOK_SIZE // CID_LEN


@dataclass(frozen=True, order=True)
class ChunkParams:
    """FastCDC 2020 parameters that decide chunk boundaries (and so CIDs)."""

    min_size: int
    avg_size: int
    max_size: int
    normalized_chunking: int = 1
    seed: int = 0

    def __repr__(self) -> str:
        return (
            f"ChunkParams(min={self.min_size}, avg={self.avg_size}, max={self.max_size}, "
            f"nc={self.normalized_chunking})"
        )


#: format (docs/FORMAT.md §1): the chunker parameters this build writes
#: (min 16 KiB / avg 64 KiB / max 256 KiB).
CHUNK_PARAMS = ChunkParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
#: format (docs/FORMAT.md §1.2, read step 1): parameters a root may record and still be
#: read; append old sets here when changing ``CHUNK_PARAMS``.
KNOWN_CHUNK_PARAMS: frozenset[ChunkParams] = frozenset({CHUNK_PARAMS})

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
    """FastCDC 2020 parameters that decide chunk boundaries (and so CIDs).

    ``min_size == avg_size == max_size`` with ``normalized_chunking == 0`` names a
    *paged* blob instead (:meth:`paged`): fixed-size leaves of that many bytes, the last
    one possibly shorter (docs/FORMAT.md §1.2)."""

    min_size: int
    avg_size: int
    max_size: int
    normalized_chunking: int = 1
    seed: int = 0

    def __repr__(self) -> str:
        if self.is_paged:
            return f"ChunkParams(page={self.max_size})"
        return (
            f"ChunkParams(min={self.min_size}, avg={self.avg_size}, max={self.max_size}, "
            f"nc={self.normalized_chunking})"
        )

    @classmethod
    def paged(cls, page_size: int) -> ChunkParams:
        """The parameters recorded by a paged blob of ``page_size``-byte leaves."""
        if not 1 <= page_size <= MAX_BOOK_SIZE:
            raise ValueError(f"page size must be in 1..{MAX_BOOK_SIZE}, got {page_size}")
        return cls(page_size, page_size, page_size, 0)

    @property
    def is_paged(self) -> bool:
        """Fixed-size leaves (see :meth:`paged`) rather than content-defined chunks."""
        return (
            self.min_size == self.avg_size == self.max_size
            and self.normalized_chunking == 0
            and 1 <= self.max_size <= MAX_BOOK_SIZE
        )


#: format (docs/FORMAT.md §1): the chunker parameters this build writes
#: (min 16 KiB / avg 64 KiB / max 256 KiB).
CHUNK_PARAMS = ChunkParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
#: format (docs/FORMAT.md §1): the chunker of *fine* blobs, payloads that change in many
#: scattered places at once (engine metadata after deletions): min 512 B / avg 2 KiB /
#: max 8 KiB, so a scattered change rewrites little.
FINE_CHUNK_PARAMS = ChunkParams(min_size=512, avg_size=2 * 1024, max_size=8 * 1024)
#: format (docs/FORMAT.md §1.2): entries per bundle of fine and paged blobs (readers take
#: any fan-out up to FANOUT): 2.5 KB bundles, so a scattered change rewrites few of them.
FINE_FANOUT = 64
#: format (docs/FORMAT.md §1.2, read step 1): parameters a root may record and still be
#: read (besides paged blobs, :meth:`ChunkParams.paged`); append old sets here when
#: changing ``CHUNK_PARAMS``.
KNOWN_CHUNK_PARAMS: frozenset[ChunkParams] = frozenset({CHUNK_PARAMS, FINE_CHUNK_PARAMS})

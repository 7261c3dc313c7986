"""Typed errors of the content-addressed store; each names the CID involved.

Their root :class:`ContentError` sits under :class:`oluo_lab.errors.OluoError` (the whole
tree is drawn there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import OluoError

if TYPE_CHECKING:
    from oluo_lab.cas.cid import CID


class ContentError(OluoError):
    """Base class of every store / DAG error. ``.cid`` is the offending CID or None."""

    def __init__(self, message: str, cid: CID | None = None) -> None:
        super().__init__(message)
        self.cid = cid


class MalformedCID(ContentError, ValueError):
    """Text or bytes that are not a valid CID (also a ValueError, as CID.parse promises)."""


class BookNotFound(ContentError):
    """The store holds no book with this CID."""

    def __init__(self, cid: CID) -> None:
        super().__init__(f"book not found: {cid.hex}", cid)


class CorruptBook(ContentError):
    """The stored bytes do not decode to content that hashes to the CID."""

    def __init__(self, cid: CID, reason: str) -> None:
        super().__init__(f"corrupt book {cid.hex}: {reason}", cid)
        self.reason = reason


class BookTooLarge(ContentError):
    """A book longer than MAX_BOOK_SIZE was offered to a store."""


class MalformedBundle(ContentError):
    """A bundle whose bytes are not a well-formed list of CIDs (or contradict its header)."""


class DagDepthExceeded(ContentError):
    """A DAG deeper than MAX_DEPTH."""


class DagSizeMismatch(ContentError):
    """A root whose recorded size or chunk count disagrees with its leaves."""


class UnsupportedChunker(ContentError):
    """A root records chunker parameters this build does not know."""

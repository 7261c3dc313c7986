"""Typed errors of the content-addressed store; each names the CID involved.

Their root :class:`ContentError` sits under :class:`oluo_lab.errors.OluoError` (the whole
tree is drawn there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
    """The store holds no book with this CID (``detail`` says more, e.g. a lost pack)."""

    def __init__(self, cid: CID, detail: str = "") -> None:
        super().__init__(f"book not found: {cid.hex}" + (f" ({detail})" if detail else ""), cid)


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


class StoreIOError(ContentError, OSError):
    """An operating-system or object-store failure while a store read or wrote one of its
    files. ``.name`` is the file (or object key, relative to the store), ``.op`` the
    operation (``"create"``, ``"write"``, ``"fsync"``, ``"link"``, ``"rename"``,
    ``"unlink"``, ``"mkdir"``, ``"list"``, ``"read"``, ``"put"``, ``"get"``, ...) and
    ``.cause`` the original exception.

    A store failure, so a ContentError like every other store error; and an ``OSError``
    (``errno``, ``strerror`` and ``filename`` copied from the cause when it has them), so
    code that handles OS errors keeps handling it. The snapshot layer's ``PersistIOError``
    is the same idea for the data directory's own files; the CAS cannot import it.
    """

    def __init__(self, op: str, name: str, cause: BaseException | None = None) -> None:
        detail = "" if cause is None else f": {_first_line(cause)}"
        ContentError.__init__(self, f"cannot {op} {name}{detail}")
        self.op = op
        self.name = name
        self.cause = cause
        self.errno = getattr(cause, "errno", None)
        self.strerror = getattr(cause, "strerror", None)
        self.filename = name

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):
        return (StoreIOError, (self.op, self.name, self.cause))


@contextlib.contextmanager
def io_errors(op: str, name: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :class:`StoreIOError` naming the
    operation and the file (relative to the store); typed store errors pass through."""
    try:
        yield
    except StoreIOError:
        raise
    except OSError as exc:
        raise StoreIOError(op, name, exc) from exc


class CorruptStoreFile(ContentError):
    """A store file other than a book (a pack, a pack trailer, an index file, the format
    marker) that fails its checks. ``.name`` is the file (or object key) relative to the
    store; ``.cid`` is set when one book is concerned."""

    def __init__(self, name: str, reason: str, cid: CID | None = None) -> None:
        super().__init__(f"corrupt store file {name}: {reason}", cid)
        self.name = name
        self.reason = reason

    def __reduce__(self):
        return (CorruptStoreFile, (self.name, self.reason, self.cid))


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text (object-store errors append pages of debug)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

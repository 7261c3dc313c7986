"""The book file record of docs/FORMAT.md §1.3: the bytes a DirStore keeps for one book.

Layer: cas, below ``directory.py``, and pure (no files, no threads): :func:`encode_book`
turns a book's bytes into a 16-byte header and a payload, :func:`decode_book` checks a
header and payload against the book's CID and returns the book's bytes. The header is
``b"OLB1"``, codec, zstd level, two zero bytes, and an 8-byte check; the payload is the raw
bytes, or one zstd frame that records its content size. For zstd books the check is
blake3(header[:8] + payload) truncated to 8 bytes, so even a flip that zstd would decode to
identical bytes is caught; raw books have an all-zero check (the CID's digest already
covers every payload byte).

Every constant marked ``format`` below is part of the stored bytes: changing it is a
format change (docs/FORMAT.md §1.3 and a new ``FORMAT_TEXT`` in ``directory.py``).
"""

from __future__ import annotations

import threading

import blake3
import zstandard

from oluo_lab.cas.base import Buffer
from oluo_lab.cas.cid import CID
from oluo_lab.cas.errors import CorruptBook

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "HEADER_LEN",
    "MAGIC",
    "MIN_SAVING",
    "PROBE_LEN",
    "PROBE_PIECES",
    "RAW_HEADER",
    "BookCodec",
    "check_file_size",
    "decode_book",
    "encode_book",
    "pages_incompressible",
]

#: format (docs/FORMAT.md §1.3): the four bytes every book file starts with.
MAGIC = b"OLB1"
#: format (docs/FORMAT.md §1.3): header length; the payload follows it.
HEADER_LEN = 16
#: format (docs/FORMAT.md §1.3): codec byte of a book stored as its own bytes.
CODEC_RAW = 0
#: format (docs/FORMAT.md §1.3): codec byte of a book stored as one zstd frame.
CODEC_ZSTD = 1
#: format (docs/FORMAT.md §1.3): the only valid header of a raw book (level 0, zero check).
RAW_HEADER = MAGIC + bytes((CODEC_RAW, 0, 0, 0)) + bytes(8)
#: format (docs/FORMAT.md §1.3): zstd is tried on a book above ``2 * PROBE_LEN`` bytes only
#: if ``PROBE_PIECES`` slices of ``PROBE_LEN // PROBE_PIECES`` bytes spread over it shrink.
#: Which codec a book gets (so its stored bytes) depends on these two.
PROBE_LEN = 4096
#: format (docs/FORMAT.md §1.3): see ``PROBE_LEN``.
PROBE_PIECES = 4
#: format (docs/FORMAT.md §1.3): a book is stored as zstd only if that saves at least
#: 1/MIN_SAVING of its bytes (float vectors save ~5%: not worth a decode on every read).
MIN_SAVING = 8


def _zstd_header(level: int) -> bytes:
    return MAGIC + bytes((CODEC_ZSTD, level, 0, 0))


def encode_book(
    data: Buffer, level: int, cctx: zstandard.ZstdCompressor | None = None
) -> tuple[bytes, Buffer]:
    """File header and payload for the book ``data``: zstd if that is strictly shorter, else raw.

    ``level`` (1..22) is the zstd level recorded in the header; ``cctx`` is a compressor at
    that level (one per thread, reused: creating one costs more than compressing a small
    book), made here when omitted. A book above ``2 * PROBE_LEN`` bytes whose probe does
    not shrink under zstd is stored raw without compressing the whole: random-looking bytes
    would cost a full zstd pass for nothing. A function of the bytes and the level only;
    readers accept a raw book whatever its content. A raw payload is ``data`` itself.
    """
    if not 1 <= level <= 22:
        raise ValueError(f"zstd level must be in 1..22, got {level!r}")
    if cctx is None:
        cctx = zstandard.ZstdCompressor(level=level)
    n = len(data)
    if n > 2 * PROBE_LEN:
        mv = memoryview(data)
        w = PROBE_LEN // PROBE_PIECES
        step = (n - w) // (PROBE_PIECES - 1)
        probe = b"".join([mv[k * step : k * step + w] for k in range(PROBE_PIECES)])
        if len(cctx.compress(probe)) > len(probe) - len(probe) // MIN_SAVING:
            return RAW_HEADER, data
    comp = cctx.compress(data)
    if len(comp) <= n - n // MIN_SAVING:
        head = _zstd_header(level)
        h = blake3.blake3(head)
        h.update(comp)
        return head + h.digest(length=8), comp
    return RAW_HEADER, data


#: pages of a paged blob that :func:`pages_incompressible` compresses together
PAGE_PROBES = 16


def pages_incompressible(data: Buffer, page_size: int) -> bool:
    """Whether the pages of a paged blob are not worth a zstd attempt each.

    ``PAGE_PROBES`` pages spread evenly over ``data`` (every page of a shorter blob) are
    compressed together at level 1; True when that saves less than 1/``MIN_SAVING``, the
    rule :func:`encode_book` applies to one book. Pages compressed together share their
    redundancy, so a blob whose pages compress one by one is never called incompressible
    here. A writer may then store every page raw without trying (float vectors: one zstd
    pass per 4 KiB page cost more than hashing it). A function of the bytes only.
    """
    mv = memoryview(data).cast("B")
    pages = -(-len(mv) // page_size)
    if pages < 2:
        return False
    picks = sorted({k * (pages - 1) // (PAGE_PROBES - 1) for k in range(PAGE_PROBES)})
    sample = b"".join([mv[k * page_size : (k + 1) * page_size] for k in picks])
    comp = zstandard.ZstdCompressor(level=1).compress(sample)
    return len(comp) > len(sample) - len(sample) // MIN_SAVING


def check_file_size(cid: CID, size: int) -> None:
    """Raise CorruptBook unless a book file of ``size`` bytes can hold ``cid``'s book."""
    if size < HEADER_LEN:
        raise CorruptBook(cid, f"file of {size} bytes is shorter than the header")
    if size - HEADER_LEN > cid.size:
        raise CorruptBook(cid, f"file payload {size - HEADER_LEN} B exceeds book size")


def decode_book(
    cid: CID, header: bytes, payload: bytes, dctx: zstandard.ZstdDecompressor | None = None
) -> bytes:
    """The book bytes that ``header`` + ``payload`` record for ``cid``; CorruptBook names it.

    Checks every header rule and, for zstd books, the stored-bytes check and the frame
    (one frame, content size equal to ``cid.size``, nothing after it). A raw payload is
    returned as is: its length and digest are the caller's to verify (``verify_book``),
    as they are for every backend. ``dctx`` is a reusable decompressor (made when omitted).
    """
    if len(header) != HEADER_LEN:
        raise CorruptBook(cid, f"header of {len(header)} bytes, not {HEADER_LEN}")
    if header[:4] != MAGIC:
        raise CorruptBook(cid, f"bad file magic {header[:4]!r}")
    codec, level = header[4], header[5]
    if header[6:8] != b"\0\0":
        raise CorruptBook(cid, "nonzero reserved header bytes")
    if codec == CODEC_RAW:
        if header != RAW_HEADER:
            raise CorruptBook(cid, "raw book header has a nonzero level or check")
        return payload
    if codec != CODEC_ZSTD or not 1 <= level <= 22:
        raise CorruptBook(cid, f"unknown codec {codec} / level {level}")
    if len(payload) >= cid.size:
        raise CorruptBook(cid, "compressed payload is not smaller than the book")
    h = blake3.blake3(header[:8])
    h.update(payload)
    if h.digest(length=8) != header[8:]:
        raise CorruptBook(cid, "stored-bytes check mismatch")
    if dctx is None:
        dctx = zstandard.ZstdDecompressor()
    try:
        if zstandard.frame_content_size(payload) != cid.size:
            raise CorruptBook(cid, "zstd frame content size differs from the CID size")
        # One-shot decode into exactly the recorded size; a truncated frame or bytes
        # after it raise ZstdError. (decompressobj would decode in 128 KiB pieces and join.)
        out = dctx.decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptBook(cid, f"zstd: {exc}") from None
    if len(out) != cid.size:
        raise CorruptBook(cid, f"zstd frame decoded to {len(out)} B, not {cid.size}")
    return out


class BookCodec:
    """``encode_book`` / ``decode_book`` at one zstd level, with one compressor and one
    decompressor per thread (creating one costs more than compressing a small book)."""

    def __init__(self, level: int) -> None:
        if not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"zstd level must be an int in 1..22, got {level!r}")
        self.level = level
        self._local = threading.local()

    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(level=self.level)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: Buffer) -> tuple[bytes, Buffer]:
        """Header and payload for ``data`` (see :func:`encode_book`)."""
        return encode_book(data, self.level, self._cctx())

    def decode(self, cid: CID, header: bytes, payload: Buffer) -> Buffer:
        """The book bytes of ``header`` + ``payload`` (see :func:`decode_book`)."""
        return decode_book(cid, header, payload, self._dctx())

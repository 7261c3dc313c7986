"""Content identifiers: a fixed 40-byte id over the uncompressed bytes (blake3-256).

Layout (big-endian, see docs/FORMAT.md §1.1)::

    0      version (0x01)
    1      kind: 0x00 book, 0x01 bundle
    2      depth: 0 for a book, 1..MAX_DEPTH for a bundle
    3      reserved, 0x00
    4..7   u32 exact byte length of the (uncompressed) book bytes
    8..39  blake3-256 digest of those bytes
"""

from __future__ import annotations

import re
import struct
from typing import Literal

import blake3
import numpy as np

from oluo_lab.cas.errors import MalformedCID
from oluo_lab.cas.params import CID_LEN, MAX_BOOK_SIZE, MAX_DEPTH

#: format (docs/FORMAT.md §1.1): byte 0 of every CID.
CID_VERSION = 0x01
#: format (docs/FORMAT.md §1.1): kind byte (byte 1) of a book's CID.
KIND_BOOK = 0x00
#: format (docs/FORMAT.md §1.1): kind byte of a bundle's CID.
KIND_BUNDLE = 0x01
#: format (docs/FORMAT.md §1.2): kind byte of the root-metadata record in a bundle; never a CID.
KIND_META = 0x02

#: format (docs/FORMAT.md §1.1): bytes 0..7 of a CID: version, kind, depth, reserved, u32 size.
_HEADER = struct.Struct(">BBBBI")
_HEX_RE = re.compile(rf"[0-9a-fA-F]{{{2 * CID_LEN}}}")
_KIND_NAMES = {KIND_BOOK: "book", KIND_BUNDLE: "bundle"}


def _validate(raw: bytes) -> None:
    """Raise MalformedCID unless ``raw`` is a valid 40-byte CID."""
    if len(raw) != CID_LEN:
        raise MalformedCID(f"CID must be {CID_LEN} bytes, got {len(raw)}")
    version, kind, depth, reserved, size = _HEADER.unpack_from(raw)
    if version != CID_VERSION:
        raise MalformedCID(f"unknown CID version {version:#04x} in {raw.hex()}")
    if reserved != 0:
        raise MalformedCID(f"reserved CID byte is {reserved:#04x}, must be 0 in {raw.hex()}")
    if size > MAX_BOOK_SIZE:
        raise MalformedCID(f"CID size {size} exceeds MAX_BOOK_SIZE {MAX_BOOK_SIZE} in {raw.hex()}")
    if kind == KIND_BOOK:
        if depth != 0:
            raise MalformedCID(f"book CID with depth {depth} (must be 0): {raw.hex()}")
    elif kind == KIND_BUNDLE:
        if not 1 <= depth <= MAX_DEPTH:
            raise MalformedCID(f"bundle CID depth {depth} outside 1..{MAX_DEPTH}: {raw.hex()}")
        if size == 0 or size % CID_LEN:
            raise MalformedCID(
                f"bundle CID size {size} is not a positive multiple of {CID_LEN}: {raw.hex()}"
            )
    else:
        raise MalformedCID(f"unknown CID kind {kind:#04x} in {raw.hex()}")


def check_concat(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Concatenated 40-byte binary CID forms (bundle entries, pack indexes) as an N x 40
    uint8 array, validated together with numpy and not turned into CID objects.
    MalformedCID names the first invalid one; its ``index`` attribute says which entry
    it is."""
    if len(data) % CID_LEN:
        raise MalformedCID(f"{len(data)} bytes are not whole {CID_LEN}-byte CIDs")
    a = np.frombuffer(data if isinstance(data, bytes) else bytes(data), np.uint8).reshape(
        -1, CID_LEN
    )
    size = cid_sizes(a)
    kind, depth = a[:, 1], a[:, 2]
    book = (kind == KIND_BOOK) & (depth == 0)
    bundle = (
        (kind == KIND_BUNDLE)
        & (depth >= 1)
        & (depth <= MAX_DEPTH)
        & (size > 0)
        & (size % CID_LEN == 0)
    )
    ok = (a[:, 0] == CID_VERSION) & (a[:, 3] == 0) & (size <= MAX_BOOK_SIZE) & (book | bundle)
    if not ok.all():
        i = int(np.argmin(ok))
        try:
            _validate(bytes(a[i]))
        except MalformedCID as exc:
            exc.index = i  # type: ignore[attr-defined]
            raise
        raise AssertionError("vectorised CID check disagrees with _validate")  # pragma: no cover
    return a


def cid_sizes(a: np.ndarray) -> np.ndarray:
    """The size field (bytes 4..7, big-endian) of each row of an N x 40 CID array, int64."""
    b = a[:, 4:8].astype(np.int64)
    return (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]


def book_rows(digests: bytes, size: int) -> np.ndarray:
    """The N x 40 CID rows of N books of ``size`` bytes whose blake3 digests are
    ``digests`` (concatenated 32-byte digests)."""
    d = np.frombuffer(digests, np.uint8).reshape(-1, 32)
    rows = np.empty((len(d), CID_LEN), np.uint8)
    rows[:, :8] = np.frombuffer(_HEADER.pack(CID_VERSION, KIND_BOOK, 0, 0, size), np.uint8)
    rows[:, 8:] = d
    return rows


def cids_of(a: np.ndarray) -> list[CID]:
    """CID objects of the rows of an array :func:`check_concat` validated."""
    raw = a.tobytes()
    new = CID._unchecked
    return [new(raw[i : i + CID_LEN]) for i in range(0, len(raw), CID_LEN)]


def cids_from_concat(data: bytes | bytearray | memoryview) -> list[CID]:
    """The CIDs of concatenated 40-byte binary forms (see :func:`check_concat`)."""
    return cids_of(check_concat(data))


class CID:
    """Immutable, hashable, ordered content id. ``str(cid) == cid.hex`` (lowercase).

    Ordering compares the 40 binary bytes, so sorting a list of CIDs is deterministic.
    """

    __slots__ = ("_raw", "_size")
    _raw: bytes
    _size: int

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        _validate(raw)
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def _unchecked(cls, raw: bytes) -> CID:
        """A CID of 40 bytes this module built itself (a header it packed, a digest it
        computed): no validation, for the per-book hot paths."""
        cid = object.__new__(cls)
        _SET_RAW(cid, raw)
        return cid

    # construction -----------------------------------------------------------------
    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> CID:
        """The CID whose 40-byte binary form is ``raw`` (validated; MalformedCID if not)."""
        return cls(bytes(raw))

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse the 80-char hex text form. Either case is accepted; ``str()`` is lowercase.

        Raises MalformedCID (a ValueError) on anything that is not a valid CID.
        """
        if not isinstance(text, str):
            raise MalformedCID(f"CID text must be str, got {type(text).__name__}")
        if not _HEX_RE.fullmatch(text):
            shown = text if len(text) <= 100 else text[:100] + "..."
            raise MalformedCID(f"CID text must be {2 * CID_LEN} hex characters: {shown!r}")
        return cls(bytes.fromhex(text))

    @classmethod
    def _build(cls, kind: int, depth: int, size: int, digest: bytes) -> CID:
        return cls(_HEADER.pack(CID_VERSION, kind, depth, 0, size) + digest)

    @classmethod
    def for_book(cls, data: bytes | bytearray | memoryview) -> CID:
        """The book CID of ``data`` (MalformedCID if longer than MAX_BOOK_SIZE)."""
        size = len(data)
        if size > MAX_BOOK_SIZE:
            raise MalformedCID(f"book of {size} B exceeds MAX_BOOK_SIZE {MAX_BOOK_SIZE}")
        return cls._unchecked(
            _HEADER.pack(CID_VERSION, KIND_BOOK, 0, 0, size) + blake3.blake3(data).digest()
        )

    @classmethod
    def for_bundle(cls, data: bytes | bytearray | memoryview, depth: int) -> CID:
        """The bundle CID of bundle bytes ``data`` at ``depth`` (not checked against content)."""
        return cls._build(KIND_BUNDLE, depth, len(data), blake3.blake3(data).digest())

    # accessors ---------------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        """The 40-byte binary form."""
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    @property
    def hex(self) -> str:
        """Canonical text: 80 lowercase hex characters."""
        return self._raw.hex()

    @property
    def kind(self) -> Literal["book", "bundle"]:
        return _KIND_NAMES[self._raw[1]]  # type: ignore[return-value]

    @property
    def is_book(self) -> bool:
        return self._raw[1] == KIND_BOOK

    @property
    def depth(self) -> int:
        return self._raw[2]

    @property
    def size(self) -> int:
        """Exact byte length of the uncompressed book (bundle bytes for a bundle)."""
        try:
            return self._size
        except AttributeError:  # computed on first use: most CIDs are never asked
            size = int.from_bytes(self._raw[4:8], "big")
            _SET_SIZE(self, size)
            return size

    @property
    def digest(self) -> bytes:
        """The 32-byte blake3 digest."""
        return self._raw[8:]

    @property
    def short(self) -> str:
        """First 12 hex characters of the digest, for display."""
        return self._raw[8:14].hex()

    # value semantics ------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CID is immutable")

    def __reduce__(self):  # pickling goes through the validated constructor
        return (CID, (self._raw,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __lt__(self, other: CID) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._raw < other._raw

    def __le__(self, other: CID) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._raw <= other._raw

    def __gt__(self, other: CID) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._raw > other._raw

    def __ge__(self, other: CID) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._raw >= other._raw

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        """Short id and kind. The node size is left out: for the root of a payload (an
        index, a metadata DAG, a manifest) it is not the payload's size, which only the
        store and the manifest know (``SnapshotManifest.index_size``)."""
        if self.is_book:
            return f"CID('{self.short}…', book)"
        return f"CID('{self.short}…', bundle, depth {self.depth})"

    def _repr_html_(self) -> str:
        from oluo_lab._html import Raw, fmt_bytes, kv_table

        node = "this book" if self.is_book else "this bundle's child list"
        rows = [
            ("short id", self.short),
            ("kind", self.kind),
            ("node size", f"{fmt_bytes(self.size)} ({node}; a payload it roots can be larger)"),
        ]
        if not self.is_book:
            rows.insert(2, ("depth", self.depth))
        rows.append(("hex", Raw(f"<code>{self.hex}</code>")))
        return kv_table("CID", rows)


# the slots' setters, bypassing the __setattr__ that keeps a CID immutable
_SET_RAW = CID.__dict__["_raw"].__set__
_SET_SIZE = CID.__dict__["_size"].__set__

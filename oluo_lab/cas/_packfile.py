"""Pack files and pack index files (docs/FORMAT.md §1.4): their bytes, and nothing else.

Layer: cas, pure (no files, no threads), below ``packs.py``. A pack is an 8-byte header,
book records (the 16-byte ``OLB1`` header + payload of ``_bookfile.py``, byte for byte)
back to back, and a trailer listing them, so a pack describes itself. An index file is
canonical CBOR naming packs and the entries of each that the store holds. Both are named
by the blake3 of their bytes. Decoders check every rule of §1.4 and raise
:class:`~oluo_lab.cas.errors.CorruptStoreFile` naming the file.

Every constant marked ``format`` is part of the stored bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import blake3
import cbor2
import numpy as np

from oluo_lab.cas._bookfile import HEADER_LEN
from oluo_lab.cas.cid import CID, check_concat, cid_sizes, cids_from_concat, cids_of
from oluo_lab.cas.errors import CorruptStoreFile, MalformedCID
from oluo_lab.cas.params import CID_LEN

__all__ = [
    "ENTRY",
    "ENTRY_LEN",
    "FOOTER",
    "FOOTER_LEN",
    "INDEX_DIR",
    "INDEX_FORMAT",
    "INDEX_SUFFIX",
    "PACK_DIR",
    "PACK_HEADER",
    "PACK_SUFFIX",
    "TOMB_DIR",
    "TOMB_FORMAT",
    "TOMB_SUFFIX",
    "TRAILER_MAGIC",
    "Entry",
    "IndexDoc",
    "PackRef",
    "check_entries",
    "decode_entries",
    "decode_index",
    "decode_tombstones",
    "decode_trailer",
    "encode_entries",
    "encode_index",
    "encode_tombstones",
    "encode_trailer",
    "encode_trailer_table",
    "entry_rows",
    "file_id",
    "index_key",
    "pack_key",
    "parse_footer",
    "parse_key",
    "tomb_key",
]

#: format (§1.4): the 8 bytes every pack starts with: magic ``OLP1``, version 1, three zeros.
PACK_HEADER = b"OLP1\x01\x00\x00\x00"
#: format (§1.4): one trailer / index entry: CID, u64 offset, u32 record length, u32 zero.
ENTRY = struct.Struct(">40sQII")
ENTRY_LEN = ENTRY.size  # 56
#: format (§1.4): the pack footer: u32 entry count, 8-byte check, magic ``OLPT``, u32
#: trailer length (entries + footer).
FOOTER = struct.Struct(">I8s4sI")
FOOTER_LEN = FOOTER.size  # 20
_ENTRY_ROW = np.dtype([("cid", "V40"), ("offset", ">u8"), ("length", ">u4"), ("zero", ">u4")])
TRAILER_MAGIC = b"OLPT"
#: format (§1.4): the ``format`` / ``version`` of an index file.
INDEX_FORMAT = "oluo-pack-index"
INDEX_VERSION = 1
#: format (§1.4): where packs and index files live, and their name suffixes.
PACK_DIR = "packs"
INDEX_DIR = "index"
PACK_SUFFIX = ".olp"
INDEX_SUFFIX = ".oli"
#: format (§1.4): tombstone files of a two-phase gc on an object store.
TOMB_DIR = "tombstones"
TOMB_SUFFIX = ".olt"
TOMB_FORMAT = "oluo-pack-tombstones"
TOMB_VERSION = 1
_TOMB_KEYS = frozenset({"format", "version", "packs"})
_INDEX_KEYS = frozenset({"format", "version", "packs", "supersedes"})
_INDEX_OPTIONAL = frozenset({"salt"})
_PACK_KEYS = frozenset({"id", "size", "entries"})
_HEX = frozenset("0123456789abcdef")


class Entry(NamedTuple):
    """One book record in a pack: its CID, byte offset in the pack and record length
    (a named tuple: an index holds one per book, and a tuple is the cheapest to make)."""

    cid: CID
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def raw(self) -> bool:
        """Whether the record stores the book raw (only a raw record is this long)."""
        return self.length == HEADER_LEN + self.cid.size


class PackRef:
    """A pack as an index file names it: id (hex), size and the entries the store holds.

    A decoded index file gives ``table`` (the entries' checked 56-byte forms, N x 56)
    instead of the entries, which are made on first use: a store that only reads books
    looks them up in arrays built from the tables and never needs one object per book."""

    __slots__ = ("_entries", "id", "size", "table")

    def __init__(
        self,
        id: str,  # noqa: A002 - the field's name
        size: int,
        entries: tuple[Entry, ...] | None = None,
        *,
        table: np.ndarray | None = None,
    ) -> None:
        if (entries is None) == (table is None):
            raise TypeError("a PackRef takes entries or a table")
        self.id = id
        self.size = size
        self._entries = entries
        self.table = table

    @property
    def entries(self) -> tuple[Entry, ...]:
        if self._entries is None:
            assert self.table is not None
            self._entries = tuple(_entries_of(self.table))
        return self._entries

    def rows(self) -> np.ndarray:
        """The entries' 56-byte forms, N x 56 (the table, or made from the entries)."""
        if self.table is not None:
            return self.table
        raw = encode_entries(self._entries or ())
        return np.frombuffer(raw, np.uint8).reshape(-1, ENTRY_LEN)

    def __len__(self) -> int:
        return len(self.table) if self._entries is None else len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackRef):
            return NotImplemented
        return (self.id, self.size, self.entries) == (other.id, other.size, other.entries)

    def __hash__(self) -> int:
        return hash((self.id, self.size, self.entries))

    def __repr__(self) -> str:
        return f"PackRef(id={self.id!r}, size={self.size}, entries={len(self)})"


@dataclass(frozen=True)
class IndexDoc:
    """A decoded index file."""

    packs: tuple[PackRef, ...]
    supersedes: tuple[str, ...]


def file_id(data: bytes | bytearray | memoryview) -> str:
    """The name of a pack or index file with these bytes: blake3-256, lowercase hex."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


def pack_key(pack_id: str) -> str:
    return f"{PACK_DIR}/{pack_id}{PACK_SUFFIX}"


def index_key(index_id: str) -> str:
    return f"{INDEX_DIR}/{index_id}{INDEX_SUFFIX}"


def tomb_key(tomb_id: str) -> str:
    return f"{TOMB_DIR}/{tomb_id}{TOMB_SUFFIX}"


def parse_key(name: str, suffix: str) -> str | None:
    """The id in a file name ``<64 hex><suffix>``, or None for any other name."""
    if len(name) != 64 + len(suffix) or not name.endswith(suffix):
        return None
    ident = name[:64]
    return ident if set(ident) <= _HEX else None


# --- entries, trailer ---------------------------------------------------------------------
def encode_entries(entries: Iterable[Entry]) -> bytes:
    return b"".join(ENTRY.pack(e.cid.raw, e.offset, e.length, 0) for e in entries)


def decode_entries(name: str, raw: bytes | memoryview) -> list[Entry]:
    """Entries from their 56-byte form; checks each CID, the reserved zero and the length
    bounds (16 .. 16 + book size), not their order (see :func:`check_entries`)."""
    return _entries_of(_entry_table(name, raw))


def _entries_of(table: np.ndarray) -> list[Entry]:
    """The entries of a checked N x 56 entry table."""
    fields = table.view(_ENTRY_ROW).reshape(-1)
    cids = cids_of(np.ascontiguousarray(table[:, :CID_LEN]))
    make = Entry._make
    offsets, lengths = fields["offset"].tolist(), fields["length"].tolist()
    return [make(e) for e in zip(cids, offsets, lengths, strict=True)]


def _entry_table(name: str, raw: bytes | memoryview) -> np.ndarray:
    """The entries as an N x 56 uint8 array, checked as by :func:`decode_entries` (with
    numpy; the first bad entry is then found and named by the loop over them)."""
    if len(raw) % ENTRY_LEN:
        raise CorruptStoreFile(name, f"entry bytes of length {len(raw)} not a multiple of 56")
    data = bytes(raw)
    table = np.frombuffer(data, np.uint8).reshape(-1, ENTRY_LEN)
    try:
        rows = check_concat(table[:, :CID_LEN].tobytes())
    except MalformedCID as exc:
        bad = exc.index  # type: ignore[attr-defined]
        raise CorruptStoreFile(name, f"entry {bad} has no valid CID: {exc}") from None
    fields = np.frombuffer(data, _ENTRY_ROW)
    length = fields["length"].astype(np.int64)
    ok = (fields["zero"] == 0) & (length >= HEADER_LEN) & (length <= HEADER_LEN + cid_sizes(rows))
    if ok.all():
        return table
    cids = cids_of(rows)
    for k, (cid, (_, _, length, zero)) in enumerate(
        zip(cids, ENTRY.iter_unpack(data), strict=True)
    ):
        if zero:
            raise CorruptStoreFile(name, f"entry {k} has nonzero reserved bytes", cid)
        if not HEADER_LEN <= length <= HEADER_LEN + cid.size:
            raise CorruptStoreFile(name, f"entry {k} record length {length} out of range", cid)
    raise AssertionError("vectorised entry check disagrees with the loop")  # pragma: no cover


def check_entries(
    name: str,
    entries: Sequence[Entry],
    records_end: int,
    whole: bool,
    table: np.ndarray | None = None,
) -> None:
    """Entries of one pack: strictly ascending, non-overlapping, within the records area
    ``[8, records_end)``, one per CID. ``whole`` (a trailer): also contiguous from byte 8
    to exactly ``records_end``. ``table``: the entries' 56-byte form as an N x 56 array
    (from :func:`_entry_table`), checked with numpy first."""
    if table is not None and _entries_ok(table, records_end, whole):
        return
    pos = len(PACK_HEADER)
    seen: set[CID] = set()
    for i, e in enumerate(entries):
        if e.offset < pos or (whole and e.offset != pos):
            raise CorruptStoreFile(
                name, f"entry {i} at offset {e.offset} overlaps or leaves a gap", e.cid
            )
        if e.end > records_end:
            raise CorruptStoreFile(name, f"entry {i} ends past the records ({e.end})", e.cid)
        if e.cid in seen:
            raise CorruptStoreFile(name, f"entry {i} repeats a CID", e.cid)
        seen.add(e.cid)
        pos = e.end
    if whole and pos != records_end:
        raise CorruptStoreFile(name, f"records end at {pos}, the trailer at {records_end}")


def _entries_ok(table: np.ndarray, records_end: int, whole: bool) -> bool:
    """Whether the rules of :func:`check_entries` hold (False: the loop names the break)."""
    if not len(table):
        return not whole or records_end == len(PACK_HEADER)
    fields = table.view(_ENTRY_ROW).reshape(-1)
    offset = fields["offset"]
    if int(offset.max()) >= 1 << 62 or records_end >= 1 << 62:  # int64 arithmetic below
        return False
    offset = offset.astype(np.int64)
    end = offset + fields["length"].astype(np.int64)
    prev = np.empty_like(end)
    prev[0] = len(PACK_HEADER)
    prev[1:] = end[:-1]
    ok = (offset == prev).all() if whole else (offset >= prev).all()
    ok = ok and int(end[-1]) <= records_end and (not whole or int(end[-1]) == records_end)
    ok = ok and int(end.max()) <= records_end
    if not ok:
        return False
    # CIDs with distinct first 8 digest bytes are distinct (and the loop judges the rest)
    key = np.ascontiguousarray(table[:, 8:16]).view(">u8").reshape(-1)
    key = np.sort(key.astype(np.uint64))
    return not (key[1:] == key[:-1]).any()


def encode_trailer(entries: Sequence[Entry]) -> bytes:
    """The trailer of a pack whose records are ``entries`` (in offset order)."""
    return _trailer(encode_entries(entries), len(entries))


def encode_trailer_table(table: np.ndarray) -> bytes:
    """:func:`encode_trailer` of the entries whose 56-byte forms are the rows of ``table``."""
    return _trailer(table.tobytes(), len(table))


def _trailer(body: bytes, count: int) -> bytes:
    check = blake3.blake3(body).digest(length=8)
    return body + FOOTER.pack(count, check, TRAILER_MAGIC, len(body) + FOOTER_LEN)


def entry_rows(cids: np.ndarray, offsets: Any, lengths: Any) -> np.ndarray:
    """The 56-byte forms (N x 56 uint8) of entries: N x 40 CID rows, offsets, lengths."""
    t = np.zeros(len(cids), _ENTRY_ROW)
    t["cid"] = np.ascontiguousarray(cids, np.uint8).view("V40").reshape(-1)
    t["offset"] = offsets
    t["length"] = lengths
    return t.view(np.uint8).reshape(-1, ENTRY_LEN)


def parse_footer(name: str, tail: bytes | memoryview, pack_size: int) -> tuple[int, bytes, int]:
    """(entry count, check, trailer length) from a pack's last ``FOOTER_LEN`` bytes."""
    if pack_size < len(PACK_HEADER) + FOOTER_LEN or len(tail) != FOOTER_LEN:
        raise CorruptStoreFile(name, f"a pack of {pack_size} bytes has no trailer")
    count, check, magic, trailer_len = FOOTER.unpack(tail)
    if magic != TRAILER_MAGIC:
        raise CorruptStoreFile(name, f"bad trailer magic {magic!r}")
    if trailer_len != count * ENTRY_LEN + FOOTER_LEN or trailer_len > pack_size - len(PACK_HEADER):
        raise CorruptStoreFile(name, f"trailer length {trailer_len} does not fit {count} entries")
    return count, check, trailer_len


def decode_trailer(name: str, trailer: bytes | memoryview, pack_size: int) -> list[Entry]:
    """The entries of a pack from its whole trailer (every rule of §1.4 checked)."""
    count, check, trailer_len = parse_footer(name, trailer[-FOOTER_LEN:], pack_size)
    if len(trailer) != trailer_len:
        raise CorruptStoreFile(name, f"trailer of {len(trailer)} bytes, footer says {trailer_len}")
    body = trailer[: count * ENTRY_LEN]
    if blake3.blake3(body).digest(length=8) != check:
        raise CorruptStoreFile(name, "trailer check mismatch")
    table = _entry_table(name, body)
    entries = _entries_of(table)
    check_entries(name, entries, pack_size - trailer_len, whole=True, table=table)
    return entries


# --- index files --------------------------------------------------------------------------
def encode_index(packs: Iterable[PackRef], supersedes: Iterable[str] = (), salt: int = 0) -> bytes:
    """Canonical CBOR of an index file: packs sorted by id, supersedes sorted. A nonzero
    ``salt`` gives the same content another name (an index file must never get the name
    of one that a live index file supersedes)."""
    docs = [
        {
            "id": bytes.fromhex(p.id),
            "size": p.size,
            "entries": p.rows().tobytes(),
        }
        for p in sorted(packs, key=lambda p: p.id)
    ]
    doc = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "packs": docs,
        "supersedes": [bytes.fromhex(i) for i in sorted(set(supersedes))],
    }
    if salt:
        doc["salt"] = salt
    return cbor2.dumps(doc, canonical=True)


def decode_index(name: str, data: bytes) -> IndexDoc:
    """An index file's content; CorruptStoreFile names the file on any violation."""
    try:
        doc = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise CorruptStoreFile(name, f"not CBOR: {exc}") from None
    if not isinstance(doc, dict) or not _INDEX_KEYS <= set(doc) <= _INDEX_KEYS | _INDEX_OPTIONAL:
        raise CorruptStoreFile(name, "not an index document (wrong keys)")
    salt = doc.get("salt", 1)
    if type(salt) is not int or salt < 1:
        raise CorruptStoreFile(name, f"salt must be a positive int, got {salt!r}")
    if doc["format"] != INDEX_FORMAT:
        raise CorruptStoreFile(name, f"format {doc['format']!r}")
    if doc["version"] != INDEX_VERSION or type(doc["version"]) is not int:
        raise CorruptStoreFile(name, f"unsupported index version {doc['version']!r}")
    if not isinstance(doc["packs"], list) or not isinstance(doc["supersedes"], list):
        raise CorruptStoreFile(name, "packs and supersedes must be arrays")
    packs = []
    for p in doc["packs"]:
        if not isinstance(p, dict) or set(p) != _PACK_KEYS:
            raise CorruptStoreFile(name, "a pack entry with wrong keys")
        ident, size, raw = p["id"], p["size"], p["entries"]
        if not isinstance(ident, bytes) or len(ident) != 32:
            raise CorruptStoreFile(name, "a pack id is not 32 bytes")
        if type(size) is not int or size < len(PACK_HEADER) + FOOTER_LEN:
            raise CorruptStoreFile(name, f"pack {ident.hex()} has a bad size {size!r}")
        if not isinstance(raw, bytes):
            raise CorruptStoreFile(name, f"pack {ident.hex()} entries are not bytes")
        pname = f"{name} (pack {ident.hex()})"
        table = _entry_table(pname, raw)
        if not len(table):
            raise CorruptStoreFile(pname, "a pack with no entries")
        # the pack's trailer holds at least these entries, so the records end before it
        end = size - FOOTER_LEN - len(table) * ENTRY_LEN
        if not _entries_ok(table, end, whole=False):
            check_entries(pname, _entries_of(table), end, whole=False)
        packs.append(PackRef(ident.hex(), size, table=table))
    if [p.id for p in packs] != sorted({p.id for p in packs}):
        raise CorruptStoreFile(name, "packs not sorted by id, or a pack listed twice")
    sup = doc["supersedes"]
    if not all(isinstance(s, bytes) and len(s) == 32 for s in sup):
        raise CorruptStoreFile(name, "a superseded index id is not 32 bytes")
    sup_hex = [s.hex() for s in sup]
    if sup_hex != sorted(set(sup_hex)):
        raise CorruptStoreFile(name, "supersedes not sorted, or an id listed twice")
    if cbor2.dumps(doc, canonical=True) != data:
        raise CorruptStoreFile(name, "not canonical CBOR")
    return IndexDoc(tuple(packs), tuple(sup_hex))


# --- tombstone files --------------------------------------------------------------------
def encode_tombstones(packs: Mapping[str, Iterable[CID]]) -> bytes:
    """Canonical CBOR of a tombstone file: per pack (by id, ascending), the CIDs of its
    records that are tombstoned (sorted, at least one)."""
    docs = [
        {"id": bytes.fromhex(pid), "cids": b"".join(c.raw for c in sorted(set(cids)))}
        for pid, cids in sorted(packs.items())
        if cids
    ]
    return cbor2.dumps(
        {"format": TOMB_FORMAT, "version": TOMB_VERSION, "packs": docs}, canonical=True
    )


def decode_tombstones(name: str, data: bytes) -> dict[str, tuple[CID, ...]]:
    """A tombstone file's content (pack id -> CIDs); CorruptStoreFile names the file on
    any violation."""
    try:
        doc = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise CorruptStoreFile(name, f"not CBOR: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != _TOMB_KEYS:
        raise CorruptStoreFile(name, "not a tombstone document (wrong keys)")
    if doc["format"] != TOMB_FORMAT:
        raise CorruptStoreFile(name, f"format {doc['format']!r}")
    if doc["version"] != TOMB_VERSION or type(doc["version"]) is not int:
        raise CorruptStoreFile(name, f"unsupported tombstone version {doc['version']!r}")
    if not isinstance(doc["packs"], list) or not doc["packs"]:
        raise CorruptStoreFile(name, "packs must be a non-empty array")
    out: dict[str, tuple[CID, ...]] = {}
    for p in doc["packs"]:
        if not isinstance(p, dict) or set(p) != {"id", "cids"}:
            raise CorruptStoreFile(name, "a pack entry with wrong keys")
        ident, raw = p["id"], p["cids"]
        if not isinstance(ident, bytes) or len(ident) != 32:
            raise CorruptStoreFile(name, "a pack id is not 32 bytes")
        if not isinstance(raw, bytes) or not raw or len(raw) % 40:
            raise CorruptStoreFile(name, "a pack's cids must be 40-byte CIDs, at least one")
        try:
            cids = tuple(cids_from_concat(raw))
        except MalformedCID as exc:
            raise CorruptStoreFile(name, f"a tombstone is not a CID: {exc}") from None
        if list(cids) != sorted(set(cids)):
            raise CorruptStoreFile(name, "cids not sorted, or listed twice")
        out[ident.hex()] = cids
    if list(out) != sorted(out) or len(out) != len(doc["packs"]):
        raise CorruptStoreFile(name, "packs not sorted by id, or a pack listed twice")
    if cbor2.dumps(doc, canonical=True) != data:
        raise CorruptStoreFile(name, "not canonical CBOR")
    return out

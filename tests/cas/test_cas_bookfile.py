"""The book file record (docs/FORMAT.md §1.3) as pure functions: no store, no disk."""

from __future__ import annotations

import blake3
import numpy as np
import pytest
import zstandard

from oluo_lab.cas import CID, CorruptBook
from oluo_lab.cas._bookfile import (
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER_LEN,
    MAGIC,
    MIN_SAVING,
    PROBE_LEN,
    RAW_HEADER,
    check_file_size,
    decode_book,
    encode_book,
    pages_incompressible,
)
from oluo_lab.testing.store import xof

TEXT = b"hello world " * 300


def test_zstd_book_header_fields_and_round_trip():
    header, payload = encode_book(TEXT, 7)
    assert len(header) == HEADER_LEN
    assert header[:4] == MAGIC and header[4] == CODEC_ZSTD and header[5] == 7
    assert header[6:8] == b"\0\0"
    assert header[8:] == blake3.blake3(header[:8] + payload).digest(length=8)
    assert len(payload) < len(TEXT)
    assert zstandard.frame_content_size(payload) == len(TEXT)
    assert decode_book(CID.for_book(TEXT), header, payload) == TEXT


@pytest.mark.parametrize("data", [b"", b"x", xof(b"noise", 3000), xof(b"noise", 100_000)])
def test_incompressible_book_is_stored_raw(data):
    header, payload = encode_book(data, 3)
    assert header == RAW_HEADER and header[4] == CODEC_RAW
    assert bytes(payload) == data
    assert decode_book(CID.for_book(data), header, bytes(payload)) == data


def test_a_book_zstd_shrinks_by_less_than_an_eighth_is_stored_raw():
    rng = np.random.default_rng(0)
    page = rng.standard_normal(1000).astype(np.float32).tobytes()  # 4 kB of float vectors
    assert len(zstandard.ZstdCompressor(level=3).compress(page)) < len(page)  # it does shrink
    header, payload = encode_book(page, 3)
    assert header == RAW_HEADER and bytes(payload) == page
    half = bytes(2000) + page[:2000]  # saves about half: compressed
    header, payload = encode_book(half, 3)
    assert header[4] == CODEC_ZSTD and len(payload) <= len(half) - len(half) // MIN_SAVING
    big = rng.standard_normal(3000).astype(np.float32).tobytes()  # past the probe threshold
    assert encode_book(big, 3)[0] == RAW_HEADER


def test_probe_decides_without_compressing_the_whole_book():
    # 16 KiB: the four 1 KiB samples start at 0, 5120, 10240 and 15360.
    noise = bytearray(xof(b"probe", 4 * PROBE_LEN))
    noise[1024:5120] = bytes(4096)  # compressible only between the samples
    assert encode_book(bytes(noise), 3)[0] == RAW_HEADER
    assert encode_book(bytes(noise[: 2 * PROBE_LEN]), 3)[0][4] == CODEC_ZSTD  # too short to probe


def test_encoding_is_a_function_of_the_bytes_and_level():
    cctx = zstandard.ZstdCompressor(level=3)
    assert encode_book(TEXT, 3, cctx) == encode_book(TEXT, 3) == encode_book(bytearray(TEXT), 3)
    assert encode_book(TEXT, 3) != encode_book(TEXT, 19)
    with pytest.raises(ValueError):
        encode_book(TEXT, 0)


def test_pinned_book_file_bytes():
    # The stored bytes of a DirStore book at level 3: a change here is a format change.
    header, payload = encode_book(TEXT, 3)
    assert header.hex() == "4f4c42310103000080899d28c9784fda" and len(payload) == 29
    digest = blake3.blake3(header + payload).hexdigest()
    assert digest == "eddf4ba396c2133d406e22c8f8ab23ae27ccf58f77ffccc4339399e510eb1d0d"


def _zstd_book():
    header, payload = encode_book(TEXT, 3)
    return CID.for_book(TEXT), header, bytes(payload)


def _with(b: bytes, i: int, value: int) -> bytes:
    out = bytearray(b)
    out[i] = value
    return bytes(out)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda h, p: (b"XLB1" + h[4:], p), "bad file magic"),
        (lambda h, p: (_with(h, 6, 1), p), "nonzero reserved"),
        (lambda h, p: (_with(h, 4, 9), p), "unknown codec 9"),
        (lambda h, p: (_with(h, 5, 0), p), "unknown codec 1 / level 0"),
        (lambda h, p: (_with(h, 15, h[15] ^ 1), p), "stored-bytes check mismatch"),
        (lambda h, p: (h, _with(p, len(p) // 2, p[len(p) // 2] ^ 1)), "check mismatch"),
        (lambda h, p: (h[:12], p), "header of 12 bytes"),
        (lambda h, p: (_with(RAW_HEADER, 5, 3), p), "raw book header"),
        (lambda h, p: (_with(RAW_HEADER, 8, 1), p), "raw book header"),
    ],
)
def test_decode_rejects_bad_headers_naming_the_cid(damage, message):
    cid, header, payload = _zstd_book()
    bad_header, bad_payload = damage(header, payload)
    with pytest.raises(CorruptBook, match=message) as ei:
        decode_book(cid, bad_header, bad_payload)
    assert ei.value.cid == cid and cid.hex in str(ei.value)


def _resealed(payload: bytes, level: int = 3) -> tuple[bytes, bytes]:
    """A zstd header whose check matches ``payload`` (so the frame itself is what is tested)."""
    head = MAGIC + bytes((CODEC_ZSTD, level, 0, 0))
    return head + blake3.blake3(head + payload).digest(length=8), payload


@pytest.mark.parametrize(
    "frame, message",
    [
        (lambda p: p[:-3], "zstd"),
        (lambda p: p + b"\0", "zstd"),
        (lambda p: zstandard.ZstdCompressor(write_content_size=False).compress(TEXT), "size"),
        (lambda p: zstandard.ZstdCompressor().compress(TEXT[:-1]), "content size differs"),
        (lambda p: zstandard.ZstdCompressor().compress(TEXT + TEXT[:1000]), "not smaller|size"),
    ],
    ids=["truncated", "trailing", "no-content-size", "short-content", "long-content"],
)
def test_decode_rejects_bad_frames_with_a_valid_check(frame, message):
    cid, _, payload = _zstd_book()
    header, bad = _resealed(frame(payload))
    with pytest.raises(CorruptBook, match=message) as ei:
        decode_book(cid, header, bad)
    assert ei.value.cid == cid


def test_payload_must_be_smaller_than_the_book_for_zstd():
    data = b"ab" * 8
    comp = zstandard.ZstdCompressor().compress(data)
    assert len(comp) >= len(data)
    header, payload = _resealed(comp)
    with pytest.raises(CorruptBook, match="not smaller"):
        decode_book(CID.for_book(data), header, payload)


def test_file_size_bounds():
    cid = CID.for_book(TEXT)
    check_file_size(cid, HEADER_LEN)
    check_file_size(cid, HEADER_LEN + cid.size)
    with pytest.raises(CorruptBook, match="shorter than the header"):
        check_file_size(cid, HEADER_LEN - 1)
    with pytest.raises(CorruptBook, match="exceeds book size") as ei:
        check_file_size(cid, HEADER_LEN + cid.size + 1)
    assert ei.value.cid == cid


def test_pages_incompressible_samples_pages_spread_over_the_blob():
    rng = np.random.default_rng(3)
    floats = rng.standard_normal((2000, 50), dtype=np.float32)  # zstd saves ~5%
    assert pages_incompressible(floats, 4000)
    # rows that each compress: never called incompressible
    assert not pages_incompressible(np.zeros((2000, 50), np.float32), 4000)
    assert not pages_incompressible(b"vector text " * 20_000, 4000)
    # one page (or less) is left to the per-book rule
    assert not pages_incompressible(floats.tobytes()[:4000], 4000)
    assert not pages_incompressible(b"", 4000)
    # the sample includes the last page and pages between: zeros there are seen
    tail = bytearray(floats.tobytes())
    tail[-4000 * 3 :] = bytes(4000 * 3)
    assert not pages_incompressible(tail, 4000)
    mid = bytearray(floats.tobytes())
    mid[len(mid) // 2 - 40_000 : len(mid) // 2 + 40_000] = bytes(80_000)
    assert not pages_incompressible(mid, 4000)

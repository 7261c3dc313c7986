"""FreshBytes: the in-place-filled result buffer behind ``reassemble``."""

from __future__ import annotations

import pytest

from oluo_lab.cas import DirStore, FreshBytes, MemoryStore, ingest, reassemble
from oluo_lab.cas._output import _CAPI


@pytest.mark.parametrize("use_capi", [True, False], ids=["capi", "bytesio"])
@pytest.mark.parametrize("n", [0, 1, 4096, 1_000_003])
def test_fresh_bytes_is_exactly_what_was_written(use_capi, n):
    src = bytes((i * 7 + 3) % 251 for i in range(n))
    out = FreshBytes(n, use_capi=use_capi)
    half = n // 2
    out.view[:half] = src[:half]
    out.view[half:] = src[half:]
    res = out.finish()
    assert type(res) is bytes and res == src and len(res) == n
    assert hash(res) == hash(bytes(src))  # no stale cached hash
    with pytest.raises(ValueError):  # the writable view is gone once finished
        out.view[:1] = b"x"


def test_capi_path_is_used_on_cpython():
    import sys

    assert (_CAPI is not None) == (sys.implementation.name == "cpython")


def test_discard_releases_the_view():
    out = FreshBytes(100)
    out.discard()
    with pytest.raises(ValueError):
        out.view[:1] = b"x"


@pytest.mark.parametrize(
    "make",
    [lambda p: MemoryStore(), lambda p: DirStore(p / "cas", fsync=False)],
    ids=["memory", "dir"],
)
def test_reassemble_result_is_a_plain_immutable_bytes(tmp_path, make):
    store = make(tmp_path)
    data = bytes(range(256)) * 5000 + bytes(300_000)
    root = ingest(data, store)
    res = reassemble(root, store)
    assert type(res) is bytes and res == data and hash(res) == hash(data)
    assert reassemble(root, store) is not res

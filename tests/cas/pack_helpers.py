"""Helpers shared by the pack-store tests: damaging a pack store's files behind its back."""

from __future__ import annotations

from oluo_lab.cas import CID, PackStore
from oluo_lab.cas._packfile import pack_key


def rewrite_pack(store: PackStore, pid: str, data: bytes) -> None:
    """Replace a pack's bytes under its old name (what bit rot or a bad copy does)."""
    store.backend.put_replace(pack_key(pid), data)


def pack_corrupt(store: PackStore, cid: CID, how: str) -> None:
    """The conformance suite's ``corrupt`` hook for any pack store (local or object)."""
    pid, e = store._view.loc[cid]
    key = pack_key(pid)
    b = store.backend
    data = bytearray(b.read(key))
    if how == "flip":
        data[e.offset + e.length // 2] ^= 0x01
        rewrite_pack(store, pid, bytes(data))
    elif how == "truncate":  # the pack cut inside the record (its trailer is gone too)
        rewrite_pack(store, pid, bytes(data[: e.end - 1]))
    elif how == "delete":
        b.delete(key)
    elif how == "swap":  # another book's record written over this one's
        opid, oe = next(v for k, v in store._view.loc.items() if k != cid)
        other = b.read(pack_key(opid))[oe.offset : oe.end]
        patch = (other + bytes(e.length))[: e.length]
        data[e.offset : e.end] = patch
        rewrite_pack(store, pid, bytes(data))
    else:
        raise AssertionError(how)

"""One freshly allocated ``bytes`` result that worker threads fill in place.

``reassemble`` must return ``bytes`` of a size known up front. ``io.BytesIO`` can hand over
its buffer uncopied, but it zero-fills it first: on a VM that first touch costs ~0.4 ms per
MB, on one thread, before any book is read. On CPython we instead create the bytes object
uninitialised (``PyBytes_FromStringAndSize(NULL, n)``, documented C API) and fill it through
a writable view of ``PyBytes_AsString`` *before anyone else holds a reference*, which is the
contract C code follows; the pages are then first touched by the threads that fill them,
overlapping with their decoding. Elsewhere the BytesIO path is used.
"""

from __future__ import annotations

import ctypes
import io
import sys


def _load_capi():
    if sys.implementation.name != "cpython":
        return None
    try:
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        ptr = ctypes.pythonapi.PyBytes_AsString
    except AttributeError:
        return None
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_ssize_t]
    ptr.restype, ptr.argtypes = ctypes.c_void_p, [ctypes.py_object]
    return new, ptr


_CAPI = _load_capi()


class FreshBytes:
    """``view`` is a writable byte view of a new ``n``-byte result; ``finish()`` returns the
    ``bytes`` (every byte must have been written) and invalidates the view."""

    def __init__(self, n: int, use_capi: bool = True) -> None:
        self._obj: bytes | None = None
        self._bio: io.BytesIO | None = None
        if _CAPI is not None and use_capi and n > 0:
            new, ptr = _CAPI
            self._obj = new(None, n)
            self.view = memoryview((ctypes.c_char * n).from_address(ptr(self._obj))).cast("B")
        else:
            self._bio = io.BytesIO()
            if n:
                self._bio.seek(n - 1)
                self._bio.write(b"\0")
            self.view = self._bio.getbuffer()

    def finish(self) -> bytes:
        self.view.release()
        if self._obj is not None:
            obj, self._obj = self._obj, None
            return obj
        assert self._bio is not None
        return self._bio.getvalue()

    def discard(self) -> None:
        self.view.release()
        self._obj = self._bio = None

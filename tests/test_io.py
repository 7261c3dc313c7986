"""oluo_lab._io: the OS helpers any layer may import (the C library is loaded there once)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from oluo_lab import _io
from oluo_lab.snapshot import durable


def test_write_all_writes_any_buffer_completely(tmp_path):
    path = tmp_path / "f"
    data = np.arange(300_000, dtype=np.float32)  # not a byte buffer: cast, not truncated
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        _io.write_all(fd, data)
        _io.start_writeback(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data.tobytes()


def test_fsync_helpers_take_paths_and_refuse_missing_ones(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    _io.fsync_path(f)
    _io.fsync_path(os.fspath(tmp_path))
    _io.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        _io.fsync_dir(f)
    with pytest.raises(FileNotFoundError):
        _io.fsync_path(tmp_path / "missing")


def test_one_fsync_dir_for_both_layers():
    assert durable.fsync_dir is _io.fsync_dir


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux-only")
def test_syncfs_on_linux(tmp_path):
    assert _io.syncfs_available()
    _io.syncfs(tmp_path)
    with pytest.raises(FileNotFoundError):
        _io.syncfs(tmp_path / "missing")


def test_the_c_library_is_loaded_once_and_only_in_io():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    loaders = [
        str(p.relative_to(root))
        for p in sorted([*(root / "oluo_lab").rglob("*.py"), *(root / "bench").glob("*.py")])
        if "CDLL(" in p.read_text() and p.name != "_io.py"
    ]
    assert loaders == []
    if sys.platform.startswith("linux"):
        assert _io.LIBC is not None and _io.MADVISE is not None
        assert _io.malloc_trim() is True

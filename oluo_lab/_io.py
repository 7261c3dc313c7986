"""Small OS-level helpers shared by the CAS and the snapshot layer."""

from __future__ import annotations

import os
from typing import Any


def write_all(fd: int, data: Any) -> None:
    """Write every byte of the buffer ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]

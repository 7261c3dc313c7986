"""Progress bars for long operations (a leaf module any layer may import).

Every long operation takes ``progress: bool = True``; bars use ``tqdm.auto`` (a widget
in Jupyter, text on a terminal) and appear only after ``DELAY_S`` seconds, so quick
calls print nothing. ``OLUO_LAB_PROGRESS=0`` in the environment turns every bar off
(for executed notebooks whose outputs must be byte-reproducible).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["DELAY_S", "enabled", "progress_bar"]

#: Seconds an operation runs before its bar is shown.
DELAY_S = 0.5


def enabled(progress: bool) -> bool:
    """True when a bar requested with ``progress`` should be drawn (env var permitting)."""
    env = os.environ.get("OLUO_LAB_PROGRESS", "1").strip().lower()
    return bool(progress) and env not in ("0", "false", "no", "off")


def progress_bar(
    progress: bool, total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any
):
    """A ``tqdm.auto`` bar (disabled, but API-compatible, when not :func:`enabled`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("delay", DELAY_S)
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled(progress), leave=False, **kwargs
    )

"""pytest setup for the notebooks, which run as tests under nbval (``--nbval`` in
``[tool.pytest.ini_options]`` of pyproject.toml).

* The kernel imports this checkout's ``oluo_lab`` (the repository root is put first
  on the kernel's ``PYTHONPATH``), so the notebooks test the code next to them even
  when another copy is installed.
* Each notebook turns progress bars off itself (``OLUO_LAB_PROGRESS=0`` in its first
  cell: their text is timing); this file leaves the test process's environment alone
  apart from ``PYTHONPATH``.
* ``nbval_sanitize.cfg`` next to this file is used when no other sanitizer is given,
  whatever directory pytest was started from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Kernels are started by nbval with this process's environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


def pytest_configure(config: pytest.Config) -> None:
    option = config.option
    if getattr(option, "nbval_sanitize_with", "missing") is None:
        option.nbval_sanitize_with = str(HERE / "nbval_sanitize.cfg")

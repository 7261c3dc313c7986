from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OLUO_LAB_PROGRESS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def lab_and_engine(tmp_path_factory):
    import nb_helpers as h

    return h.make_lab(tmp_path_factory.mktemp("nb"))


@pytest.fixture(scope="module")
def dataset():
    import nb_helpers as h

    return h.make_dataset()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")

"""Re-execute notebooks in place, storing the outputs that ``pytest --nbval`` checks.

    python notebooks/regenerate.py                  # every NN_*.ipynb here
    python notebooks/regenerate.py 03_recall_latency.ipynb

Runs each notebook in a fresh kernel on this interpreter with this checkout's
``oluo_lab`` and progress bars off, in this directory (each notebook creates and
deletes its own scratch lab), and saves it without live-widget views or widget state
(their static HTML stays) or execution timestamps, so the stored outputs are what a
fresh run reproduces.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import nbformat  # noqa: E402

from oluo_lab.report import execute_notebook  # noqa: E402


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        t0 = time.perf_counter()
        nb = execute_notebook(path, HERE)
        for cell in nb.cells:  # wall-clock execution stamps: noise in every diff
            cell.metadata.pop("execution", None)
        nbformat.write(nb, str(path))
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

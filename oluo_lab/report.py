"""The demo report: the quickstart notebook executed end to end, as a static HTML page,
plus a recall/latency plot of a small sweep on the bundled GloVe sample.

``oluo-lab demo`` calls :func:`write_report`. The notebook runs in a fresh kernel on
this interpreter, importing this copy of ``oluo_lab``, in a temporary working
directory (it creates and deletes its own scratch lab there), so nothing is left
behind and the page holds no absolute paths.

Needs ``nbclient``, ``nbconvert`` and ``ipykernel`` (the ``dev`` extra) and a source
checkout: the notebooks live in ``notebooks/`` next to the package, not inside it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

__all__ = [
    "DEFAULT_NOTEBOOK",
    "HTML_NAME",
    "PNG_NAME",
    "ReportError",
    "default_notebook",
    "execute_notebook",
    "plot_recall_qps_png",
    "strip_widget_views",
    "write_report",
]

DEFAULT_NOTEBOOK = "01_quickstart.ipynb"
HTML_NAME = "quickstart.html"
PNG_NAME = "recall_qps.png"
_KERNEL_NAME = "oluo-lab-current-python"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ReportError(RuntimeError):
    """The report could not be produced (notebook missing, failing, or a tool absent)."""


def default_notebook() -> Path:
    """``notebooks/01_quickstart.ipynb`` of the source checkout this package lives in."""
    import oluo_lab

    return Path(oluo_lab.__file__).resolve().parents[1] / "notebooks" / DEFAULT_NOTEBOOK


def _kernel_manager():
    """A kernel manager that starts an ipykernel on *this* interpreter (whatever
    kernelspecs are installed), like ``nbval --nbval-current-env``."""
    try:
        import ipykernel.kernelspec as ks
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import KernelManager
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ReportError(
            f"the report needs ipykernel and jupyter_client ({exc}); "
            "install the dev extra: pip install -e '.[dev]'"
        ) from exc

    class _CurrentInterpreter(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name == _KERNEL_NAME:
                spec = ks.get_kernel_dict()
                spec["argv"][0] = sys.executable
                return KernelSpec(resource_dir=ks.RESOURCES, **spec)
            return super().get_kernel_spec(kernel_name)

    return KernelManager(kernel_name=_KERNEL_NAME, kernel_spec_manager=_CurrentInterpreter())


def execute_notebook(notebook: Path, workdir: Path, timeout: int = 600):
    """Run every cell of ``notebook`` with ``workdir`` as the working directory and
    return the executed ``nbformat`` node. Raises :class:`ReportError` naming the
    notebook and the failing cell."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ReportError(
            f"the report needs nbclient and nbformat ({exc}); "
            "install the dev extra: pip install -e '.[dev]'"
        ) from exc

    nb = nbformat.read(str(notebook), as_version=4)
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env["OLUO_LAB_PROGRESS"] = "0"  # progress bars are timing: keep them out of the page
    env.pop("OLUO_LAB_FAULT", None)
    km = _kernel_manager()
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=False,
    )
    try:
        client.execute(env=env, cleanup_kc=True)
    except CellExecutionError as exc:
        detail = _ANSI.sub("", str(exc)).strip()
        raise ReportError(
            f"notebook {notebook.name} failed: {exc.ename}: {exc.evalue}\n{detail}"
        ) from exc
    finally:
        if km.has_kernel:  # the client shuts down kernels it started; be sure
            km.shutdown_kernel(now=True)
    return strip_widget_views(nb)


def strip_widget_views(nb):
    """Drop live-widget views from ``nb``'s outputs (in place; returns ``nb``).

    A widget view names a model that only exists in the kernel that made it; without
    that kernel, viewers show an empty box or an error. Every explorer in
    ``oluo_lab.notebook`` also returns a static ``text/html`` view, which is what a
    saved page should show; re-running the cell in a live kernel brings the widget back.
    """
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET_VIEW_MIME, None)
    nb.metadata.pop("widgets", None)
    return nb


def _to_html(nb, title: str) -> str:
    try:
        from nbconvert import HTMLExporter
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ReportError(
            f"the report needs nbconvert ({exc}); install the dev extra: pip install -e '.[dev]'"
        ) from exc
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def plot_recall_qps_png(path: Path, ef_search: tuple[int, ...] = (16, 32, 64, 128)) -> Path:
    """Sweep ``ef_search`` for one engine (M=16) on the GloVe sample and save recall@10 against
    queries per second (one thread, best of three batches) as a PNG, drawn by the
    notebook layer's :func:`~oluo_lab.notebook.plot_recall_qps`."""
    from matplotlib.figure import Figure

    from . import bench, datasets
    from .notebook.plots import plot_recall_qps

    data = datasets.glove_sample()
    results = bench.sweep(
        data,
        libraries=["oluo_lab"],
        M=[16],
        ef_construction=[128],
        ef_search=ef_search,
        k=10,
        threads=1,
        repeat=3,
        latency_queries=100,
    )
    fig = Figure(figsize=(7.2, 4.6), dpi=110)
    plot_recall_qps(results, ax=fig.add_subplot(), pareto=False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(out_dir: Path, notebook: Path | None = None) -> tuple[Path, Path]:
    """Execute the quickstart notebook and write ``out_dir/quickstart.html`` (nbconvert)
    and ``out_dir/recall_qps.png``; returns their paths.

    ``notebook`` defaults to :func:`default_notebook`; a missing notebook raises
    :class:`ReportError` saying where it was looked for.
    """
    nb_path = Path(notebook) if notebook is not None else default_notebook()
    if not nb_path.is_file():
        raise ReportError(
            f"notebook not found: {nb_path} (the demo report runs notebooks/{DEFAULT_NOTEBOOK} "
            "from a source checkout of oluo_lab; pass notebook= to use another)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oluo-report-") as tmp:
        executed = execute_notebook(nb_path, Path(tmp))
    html_path = out_dir / HTML_NAME
    html_path.write_text(_to_html(executed, nb_path.stem), encoding="utf-8")
    png_path = plot_recall_qps_png(out_dir / PNG_NAME)
    return html_path, png_path

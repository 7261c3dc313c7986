"""The demo report: one static HTML page describing a lab, as ``oluo-lab demo`` leaves it.

:func:`write_report` reads the lab from disk and describes it with the package's own
deterministic HTML reprs: the log of its generations, the head manifest, what the last
commit changed (``Lab.diff``), a ``Lab.verify`` run, recall@10 of every generation on the
dataset's held-out queries and the nearest words of a few probe words. So the page names
exactly the content ids that ``oluo-lab log`` shows for the same directory. It needs no
notebook and no Jupyter kernel, only the package and its dependencies, so it works from
a plain wheel install.

Everything on the page is deterministic (the same lab gives the same bytes, with no
absolute paths) except the recall/QPS plot beside it, a timing measurement that the page
marks as such.

The module also runs notebooks in a fresh kernel on this interpreter
(:func:`execute_notebook`), which ``notebooks/regenerate.py`` uses to store the
notebooks' outputs; that part needs the ``dev`` extra (ipykernel, nbclient).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._html import Raw, escape, fmt_bytes, fmt_num, kv_table, table
from .errors import OluoError

__all__ = [
    "DEMO_WORDS",
    "HTML_NAME",
    "PNG_NAME",
    "ReportError",
    "execute_notebook",
    "nearest_words",
    "plot_recall_qps_png",
    "report_html",
    "strip_widget_views",
    "write_report",
]

HTML_NAME = "index.html"
PNG_NAME = "recall_qps.png"
#: Probe words whose nearest neighbours the demo prints and the report shows.
DEMO_WORDS = ("king", "paris", "computer", "music")
_KERNEL_NAME = "oluo-lab-current-python"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ReportError(OluoError, RuntimeError):
    """The report could not be produced (an empty lab), or a notebook could not be run
    (it failed, or the dev extra is missing)."""


def _kernel_manager():
    """A kernel manager that starts an ipykernel on *this* interpreter (whatever
    kernelspecs are installed), like ``nbval --nbval-current-env``."""
    try:
        import ipykernel.kernelspec as ks
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import KernelManager
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ReportError(
            f"running notebooks needs ipykernel and jupyter_client ({exc}); "
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
            f"running notebooks needs nbclient and nbformat ({exc}); "
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


def plot_recall_qps_png(
    path: Path,
    ef_search: tuple[int, ...] = (16, 32, 64, 128),
    *,
    data: Any = None,
    M: int = 16,
    ef_construction: int = 128,
    metric: str | None = None,
) -> Path:
    """Sweep ``ef_search`` for one engine built with ``M`` and ``ef_construction`` on
    ``data`` (default the GloVe sample; ``metric`` default the dataset's) and save
    recall@10 against queries per second (one thread, best of seven batches) as a PNG,
    drawn by the notebook layer's :func:`~oluo_lab.notebook.plot_recall_qps`."""
    from matplotlib.figure import Figure

    from . import bench, datasets
    from .notebook.plots import plot_recall_qps

    if data is None:
        data = datasets.glove_sample()
    results = bench.sweep(
        data,
        libraries=["oluo_lab"],
        M=[int(M)],
        ef_construction=[int(ef_construction)],
        ef_search=ef_search,
        metric=metric,
        k=10,
        threads=1,
        repeat=7,  # short batches (~30 ms at ef 16): more rounds keep a busy machine from bending the curve
        latency_queries=100,
    )
    fig = Figure(figsize=(7.2, 4.6), dpi=110)
    plot_recall_qps(results, ax=fig.add_subplot(), pareto=False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(
    lab: Any,
    out_dir: Path | str | None = None,
    data: Any = None,
    *,
    probes: Sequence[str] = DEMO_WORDS,
    restored_identical: bool | None = None,
    plot: bool = True,
) -> tuple[Path, Path | None]:
    """Write ``out_dir/index.html`` describing ``lab`` and, with ``plot``, the recall/QPS
    plot ``out_dir/recall_qps.png`` beside it; returns both paths (None for no plot).

    ``lab`` is a :class:`~oluo_lab.snapshot.Lab` or its directory; ``out_dir`` defaults
    to ``<lab>/report``; ``data`` (default the GloVe sample) supplies the held-out
    queries, their exact ground truth and the probe words' vectors.
    ``restored_identical`` is the outcome of the caller's restore check, stated on the
    page when given. An empty or missing lab raises :class:`ReportError` naming it, and
    nothing is written.
    """
    lab = _open_lab(lab)
    if data is None:
        from . import datasets

        data = datasets.glove_sample()
    if out_dir is None and lab.path is None:
        raise ReportError(f"the lab {lab.name} is on an object store: pass out_dir=")
    out = Path(out_dir) if out_dir is not None else lab.path / "report"
    page = report_html(
        lab,
        data,
        probes=probes,
        restored_identical=restored_identical,
        plot_name=PNG_NAME if plot else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    png_path = None
    if plot:  # the engine the page describes: the head's parameters, on the same data
        config = lab.head().manifest.index_config
        png_path = plot_recall_qps_png(
            out / PNG_NAME,
            data=data,
            M=config.get("M", 16),
            ef_construction=config.get("ef_construction", 128),
            metric=config.get("metric"),
        )
    html_path = out / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    return html_path, png_path


def _open_lab(lab: Any):
    from .snapshot import Lab, read_head

    if isinstance(lab, Lab):
        if lab.refs.read_ref("main") is None:
            raise ReportError(f"the lab {lab.name} holds no generation yet: nothing to report")
        return lab
    path = Path(lab)
    if not path.is_dir():
        raise ReportError(f"no lab at {path}: not a directory")
    if read_head(path) is None:
        raise ReportError(f"the lab {path} holds no generation yet: nothing to report")
    return Lab(path)


def _score_name(metric: str) -> str:
    """What the engine's scores are for ``metric``, as its SearchResults names them."""
    from .engine.results import SCORE_NAMES

    return f"{SCORE_NAMES.get(metric, 'score').replace('_', ' ')}, lower is closer"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>\n"


def _p(text: str) -> str:
    """A paragraph of already-escaped HTML (callers escape what they insert)."""
    return f"<p>{text}</p>"


def _wide(html: str) -> str:
    """Wrap a table in a box that scrolls sideways rather than widening the page."""
    return f'<div class="scroll">{html}</div>'


def nearest_words(engine: Any, data: Any, probes: Sequence[str] = DEMO_WORDS, k: int = 5):
    """The ``k`` nearest other words of each probe word as ``"word (score)"`` texts, one
    column per probe (a pandas DataFrame); probes missing from ``data`` or ``engine``
    are left out. The first hit, the probe itself, is dropped."""
    import numpy as np
    import pandas as pd

    words = getattr(data, "base_words", None)
    row_of = {str(w): i for i, w in enumerate(() if words is None else words)}
    shown = [w for w in probes if w in row_of and w in engine]
    if not shown:
        return pd.DataFrame()
    res = engine.search(np.stack([data.base[row_of[w]] for w in shown]), k=k + 1)
    return pd.DataFrame(
        {
            w: [f"{i} ({s:.3f})" for i, s in zip(res.ids[q][1:], res.scores[q][1:], strict=True)]
            for q, w in enumerate(shown)
        }
    )


def _neighbours_table(engine: Any, data: Any, probes: Sequence[str], metric: str) -> str:
    frame = nearest_words(engine, data, probes)
    if frame.empty:
        return _p("None of the probe words is in the head generation.")
    caption = f"{len(frame)} nearest other words ({_score_name(metric)})"
    return _wide(table(caption, list(frame.columns), frame.values.tolist()))


def report_html(
    lab: Any,
    data: Any,
    *,
    probes: Sequence[str] = DEMO_WORDS,
    restored_identical: bool | None = None,
    plot_name: str | None = PNG_NAME,
) -> str:
    """The report page for ``lab`` as text (see :func:`write_report`)."""
    from . import __version__
    from .metrics import recall_ids
    from .notebook import engine_recall

    lab = _open_lab(lab)
    name = lab.name
    head = lab.head()
    history = lab.history()
    config = dict(head.manifest.index_config)
    metric = str(config.get("metric", "cosine"))
    ef = config.get("ef_search")
    k = 10
    n_queries = len(data.queries)

    head_engine = lab.checkout("HEAD", progress=False)
    recall_rows = []
    head_recall = 0.0
    for snap in history:
        engine = head_engine if snap.cid == head.cid else lab.checkout(snap, progress=False)
        approx = engine.search(data.queries, k=k)
        exact = engine.search(data.queries, k=k, exact=True)
        # as Lab.diff counts it: a generation holding fewer than k entries can score 1
        own = recall_ids(approx.keys, exact.keys, k, denominator="truth")
        truth = engine_recall(engine, data, k=k)
        if snap.cid == head.cid:
            head_recall = own
        recall_rows.append(
            [snap.generation, f"{snap.entries:,}", f"{own:.4f}", f"{truth:.4f}", snap.note]
        )
    verify = lab.verify(progress=False)
    stats = lab.store.stats()
    parent = lab.resolve(head.parent) if head.parent is not None else None
    diff = lab.diff(parent, head, k=k) if parent is not None else None

    code_name = f"<code>{escape(name)}/</code>"
    glance = [
        ("lab directory", Raw(code_name)),
        ("head", f"generation {head.generation} of {len(history)}"),
        ("head manifest", Raw(f'<code class="cid">{escape(head.cid.hex)}</code>')),
        ("entries at head", f"{head.entries:,}"),
        (
            f"recall@{k} of the head",
            f"{head_recall:.4f} ({n_queries:,} held-out queries, against exact search)",
        ),
        (
            "store",
            f"{stats.books:,} books, {fmt_bytes(stats.logical_bytes)} of content, "
            f"{fmt_bytes(stats.stored_bytes)} on disk (zstd)",
        ),
        ("verify", "clean" if verify.ok else f"{len(verify.errors)} error(s): see below"),
    ]
    if restored_identical is not None:
        glance.append(
            (
                "restore check",
                "identical answers" if restored_identical else "answers DIFFER: see below",
            )
        )

    parts = [
        f"<h1>oluo-lab demo: the lab in {code_name}</h1>\n",
        _p(
            f"This page describes the lab directory {code_name} as <code>oluo-lab demo</code> "
            f"left it: an <code>OluoEngine</code> over the words of the "
            f"<code>{escape(data.name)}</code> dataset, committed as {len(history)} "
            "content-addressed generations. Everything on it is read back from that "
            "directory, so the content ids here are the ones "
            f"<code>oluo-lab log {escape(name)}</code> prints. Apart from the speed plot at "
            "the end, the same lab always gives this same page."
        ),
        _wide(kv_table("At a glance", glance)),
        _section(
            "The data",
            _p(
                f"{data.n:,} words as {data.dim}-dimensional vectors, searched by {escape(metric)} "
                f"distance, and {n_queries:,} held-out query words that are not in the index, "
                "with their exact nearest neighbours (the ground truth recall is measured "
                "against)."
            ),
            _wide(data._repr_html_()),
        ),
        _section(
            "Generations",
            _p(
                "Each commit stores the engine's compacted state as a generation: a manifest "
                "naming the index and metadata by content id, linked to its parent. "
                "<em>bytes</em> is everything a generation reaches; <em>new bytes</em> what it "
                "added over its parent (the rest is shared, stored once)."
            ),
            _wide(lab._repr_html_()),
            _p(
                f"recall@{k} is the fraction of each held-out query's true {k} nearest words "
                f"that a generation returns (ef_search {escape(fmt_num(ef))}), averaged over "
                f"the {n_queries:,} queries. It is measured twice: against an exact search "
                "of the generation's own entries (how well the HNSW index does its job), and "
                "against the dataset's ground truth, computed over the dataset's words. Only "
                "a generation that holds exactly those words can score the same on both; "
                "one that added query words finds them first in their own answers, which the "
                "ground truth does not list."
            ),
            _wide(
                table(
                    f"recall@{k} of every generation",
                    [
                        "generation",
                        "entries",
                        f"recall@{k} vs exact search",
                        f"recall@{k} vs ground truth",
                        "note",
                    ],
                    recall_rows,
                )
            ),
        ),
        _section(
            "The head",
            _p(
                "The head file names the newest generation's manifest. Hover over a short id "
                "to see it in full; the full ids are also under <em>full CIDs</em>."
            ),
            _wide(head._repr_html_()),
        ),
        _section(
            "Nearest words",
            _p(
                "The head generation, loaded back from disk, asked for the nearest words of a "
                "few probe words (the first hit, the word itself, is left out)."
            ),
            _neighbours_table(head_engine, data, probes, metric),
        ),
    ]
    if diff is not None:
        parts.append(
            _section(
                f"What generation {head.generation} changed",
                _p(
                    f"<code>lab.diff({parent.generation}, {head.generation})</code> compares the "
                    "two generations from bytes to answers: manifest fields, books (chunks) "
                    "shared and new, entries added and removed, and the answers of both on "
                    "a fixed sample of queries."
                ),
                _wide(diff._repr_html_()),
            )
        )
    if restored_identical is not None:
        verdict = (
            "returned <strong>identical</strong> answers (ids and scores)"
            if restored_identical
            else "returned <strong>different</strong> answers: the restore is broken"
        )
        parts.append(
            _section(
                "Restoring the head",
                _p(
                    "The demo loaded the head into a fresh engine and searched all "
                    f"{n_queries:,} held-out queries with it and with the engine that wrote "
                    f"the lab: they {verdict}."
                ),
            )
        )
    parts.append(
        _section(
            "Verify",
            _p(
                "<code>lab.verify()</code> re-hashes every book the generations reach, "
                "re-loads every generation and searches a sample of its entries for "
                "themselves."
            ),
            _wide(verify._repr_html_()),
        )
    )
    if plot_name is not None:
        parts.append(
            _section(
                "Speed (timings: they vary from run to run)",
                _p(
                    "A sweep of ef_search on an engine built with the head's parameters "
                    f"(M {escape(fmt_num(config.get('M')))}, ef_construction "
                    f"{escape(fmt_num(config.get('ef_construction')))}) over the same words: "
                    f"recall@{k} against queries per second. This plot is a measurement "
                    "on this machine during this run, the only part of the page that "
                    "changes when the demo runs again."
                ),
                f'<figure><img src="{escape(plot_name)}" alt="recall@{k} against queries '
                'per second for several ef_search values"><figcaption>recall@10 against '
                "queries per second, one thread, best of seven batches of the held-out "
                "queries.</figcaption></figure>",
            )
        )
    parts.append(
        _section(
            "Explore it yourself",
            _p(f"From the directory that holds {code_name}:"),
            "<pre>"
            + escape(
                f"oluo-lab log {name}          # the generations\n"
                f"oluo-lab show {name} HEAD    # the head manifest\n"
                f"oluo-lab diff {name} 1 2     # what changed\n"
                f"oluo-lab verify {name}       # re-check every byte"
            )
            + "</pre>",
            _p("or in Python (a notebook shows the same tables):"),
            "<pre>"
            + escape(
                "import oluo_lab as ol\n\n"
                f'lab = ol.Lab("{name}")\n'
                "lab.log()\n"
                "old = lab.checkout(1)  # generation 1, exactly"
            )
            + "</pre>",
        )
    )
    parts.append(f"<footer><p>oluo_lab {escape(__version__)}</p></footer>")
    title = f"oluo-lab demo: {name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "".join(parts) + "</main>\n</body>\n</html>\n"
    )


_STYLE = """
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; background: #fff; }
main { max-width: 66rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.7rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.2rem;
     border-bottom: 1px solid #d0d7de; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: 0.88em; }
code.cid { white-space: normal; overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: 0.8rem 1rem; border-radius: 6px; overflow-x: auto; }
.scroll { overflow-x: auto; margin: 0.8rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.4rem 0 0.8rem; }
caption { text-align: left; font-weight: 600; padding: 0.2rem 0; white-space: nowrap; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
td { white-space: nowrap; }
thead th { background: #f6f8fa; }
tbody th { background: #fafbfc; font-weight: 600; white-space: nowrap; }
td svg { vertical-align: middle; }
details { margin: 0.3rem 0 0.8rem; }
details > summary { cursor: pointer; color: #0969da; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: 0.9rem; color: #59636e; }
footer { margin-top: 3rem; font-size: 0.85rem; color: #59636e; }
"""

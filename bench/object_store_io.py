"""Snapshot persist/load on an S3 server (moto, loopback) against plain obstore put/get.

Builds the same engine as ``bench/snapshot_io.py`` (GloVe-6B-50d, cosine, M=16,
efConstruction=128), starts a moto S3 server on 127.0.0.1 (ephemeral port, one bucket) in
its own process, as a real server would be (``--server thread`` runs it in a thread of this
process, where its request handling competes with the client for the GIL), and times,
interleaved, best of ``--repeat``:

* ours: ``persist_snapshot`` into a fresh ``PackStore("s3://bucket/<prefix>")`` (the data
  directory itself is local), then ``load_snapshot`` through a fresh store object (every
  book fetched with ranged GETs and hash-verified, engine rebuilt);
* a whole lab on S3: ``Lab("s3://bucket/<prefix>").commit(engine)`` (the engine's state
  serialised, books, manifest, ref object and log record all on the server), then
  ``Lab.open(url).checkout()`` (refs read from the server, engine rebuilt in memory);
* baseline: the faiss index bytes and the metadata bytes, zstd level 3 (compressed
  beforehand, not timed), ``obstore.put`` as two objects, then ``obstore.get`` of both.

The ratio is (persist + load) / (put + get). Also printed: the objects one persist
creates, and the baseline with compression and ``faiss.deserialize_index`` timed too.
Needs the ``glove``, ``s3`` and ``dev`` extras (moto)::

    python bench/object_store_io.py                # all 400k vectors
    python bench/object_store_io.py --n 50000      # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import obstore
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapshot_io import build_engine  # noqa: E402

from oluo_lab.cas import PackStore  # noqa: E402
from oluo_lab.snapshot import Lab, load_snapshot, persist_snapshot  # noqa: E402
from oluo_lab.testing.s3 import MotoS3  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--server",
        choices=("process", "thread"),
        default="process",
        help="run the moto server in its own process (default) or in a thread of this one",
    )
    args = ap.parse_args()
    print(
        f"# python {platform.python_version()}, faiss {faiss.__version__}, obstore "
        f"{obstore.__version__}, loadavg at start {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    engine, index_bytes, metadata_bytes = build_engine(args.n)
    print(
        f"# engine over {args.n} vectors built in {time.perf_counter() - t0:.1f} s; "
        f"index {len(index_bytes) / 1e6:.1f} MB, metadata {len(metadata_bytes) / 1e6:.1f} MB"
    )
    cctx = zstandard.ZstdCompressor(level=3)
    blobs = {
        "index.faiss.zst": cctx.compress(index_bytes),
        "metadata.zst": cctx.compress(metadata_bytes),
    }
    keys = ("persist", "load", "commit", "checkout", "put", "get", "put_z", "get_z")
    best = {k: np.inf for k in keys}
    objects = 0
    local = Path(tempfile.mkdtemp(prefix="oluo-s3-bench-"))
    try:
        with MotoS3(process=args.server == "process") as s3:
            for rep in range(args.repeat):
                url = s3.url(f"lab{rep}")
                data_dir = local / f"lab{rep}"
                data_dir.mkdir()
                t = time.perf_counter()
                persist_snapshot(
                    data_dir, PackStore(url, **s3.options), index_bytes, metadata_bytes, args.n, 1
                )
                best["persist"] = min(best["persist"], time.perf_counter() - t)
                store = PackStore(url, **s3.options)
                objects = sum(len(store.backend.list(d)) for d in ("", "packs", "index"))
                t = time.perf_counter()
                restored, _, _ = load_snapshot(data_dir, PackStore(url, **s3.options))
                best["load"] = min(best["load"], time.perf_counter() - t)
                assert len(restored) == args.n
                del restored

                lab_url = s3.url(f"wholelab{rep}")
                t = time.perf_counter()
                Lab(lab_url, **s3.options).commit(engine, progress=False)
                best["commit"] = min(best["commit"], time.perf_counter() - t)
                t = time.perf_counter()
                checked_out = Lab.open(lab_url, **s3.options).checkout(progress=False)
                best["checkout"] = min(best["checkout"], time.perf_counter() - t)
                assert len(checked_out) == args.n
                del checked_out

                plain = PackStore(s3.url(f"plain{rep}"), **s3.options).backend.store
                t = time.perf_counter()
                for key, blob in blobs.items():
                    obstore.put(plain, key, blob)
                best["put"] = min(best["put"], time.perf_counter() - t)
                t = time.perf_counter()
                got = {key: obstore.get(plain, key).bytes() for key in blobs}
                best["get"] = min(best["get"], time.perf_counter() - t)
                assert all(len(got[k]) == len(v) for k, v in blobs.items())
                del got

                zplain = PackStore(s3.url(f"z{rep}"), **s3.options).backend.store
                t = time.perf_counter()
                obstore.put(zplain, "i", cctx.compress(index_bytes))
                obstore.put(zplain, "m", cctx.compress(metadata_bytes))
                best["put_z"] = min(best["put_z"], time.perf_counter() - t)
                t = time.perf_counter()
                dctx = zstandard.ZstdDecompressor()
                raw = dctx.decompress(obstore.get(zplain, "i").bytes())
                dctx.decompress(obstore.get(zplain, "m").bytes())
                faiss.deserialize_index(np.frombuffer(raw, np.uint8))
                best["get_z"] = min(best["get_z"], time.perf_counter() - t)
                del raw
                shutil.rmtree(data_dir)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    ours = best["persist"] + best["load"]
    whole = best["commit"] + best["checkout"]
    plain_s = best["put"] + best["get"]
    full = best["put_z"] + best["get_z"]
    mb = sum(len(b) for b in blobs.values()) / 1e6
    print(
        f"# loadavg at end {os.getloadavg()[0]:.2f}; compressed payload {mb:.1f} MB; "
        f"moto server in a {args.server}"
    )
    print("| operation | oluo_lab (PackStore on moto) | plain obstore | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| persist / put | {best['persist']:.2f} s | {best['put']:.2f} s | | |")
    print(f"| load / get | {best['load']:.2f} s | {best['get']:.2f} s | | |")
    print(
        f"| persist + load vs put + get | {ours:.2f} s | {plain_s:.2f} s | {ours / plain_s:.2f}x | <= 1.5x |"
    )
    print(
        f"| same, baseline with zstd + deserialize timed | {ours:.2f} s | {full:.2f} s | "
        f"{ours / full:.2f}x | |"
    )
    print(f"| Lab on S3: commit / put | {best['commit']:.2f} s | {best['put']:.2f} s | | |")
    print(f"| Lab on S3: checkout / get | {best['checkout']:.2f} s | {best['get']:.2f} s | | |")
    print(
        f"| Lab on S3: commit + checkout vs put + get | {whole:.2f} s | {plain_s:.2f} s | "
        f"{whole / plain_s:.2f}x | |"
    )
    print(
        f"| same, baseline with zstd + deserialize timed | {whole:.2f} s | {full:.2f} s | "
        f"{whole / full:.2f}x | |"
    )
    print(f"| objects one persist creates | {objects} | 2 | | |")


if __name__ == "__main__":
    main()

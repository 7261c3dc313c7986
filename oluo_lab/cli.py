"""The ``oluo-lab`` command line.

``oluo-lab demo`` runs the main job end to end on the bundled GloVe sample:
it builds an engine over 20,000 words, searches it, measures recall against
exact ground truth, persists two generations into a content-addressed store
(showing what the second one shares with the first), restores the head in a
fresh engine and checks that it answers exactly as the original did.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DEMO_WORDS = ("king", "paris", "computer", "music")


def _recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k by id intersection (the fraction of true neighbours found)."""
    k = truth.shape[1]
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def _books_of(cid, store) -> set:
    from .cas import blob_info

    info = blob_info(cid, store)
    return set(info.leaves) | set(info.bundles) | {cid}


def _generation_bytes(store, manifest_cid) -> tuple[set, int]:
    from .snapshot import fetch_manifest

    m = fetch_manifest(store, manifest_cid)
    books = _books_of(m.index_cid, store) | _books_of(m.metadata_cid, store) | {manifest_cid}
    return books, sum(c.size for c in books)


def _persist_all(engine, out: Path, store, note: str = "") -> int:
    """Persist every snapshot the engine has produced (queued ones first), in order."""
    from .snapshot import persist_snapshot

    snaps = engine.take_snapshots()
    last = engine.compact()
    if last is not None:
        snaps.append(last)
    for snap in snaps:
        base_path, gen = persist_snapshot(
            out,
            store,
            snap.index_bytes,
            snap.metadata_bytes,
            snap.key_counter,
            snap.generation,
            note=note,
        )
    engine.compact_complete(str(base_path), gen)
    return gen


def run_demo(out: Path, echo=print) -> int:
    """Run the demo into ``out``; returns a process exit code."""
    from . import datasets
    from .cas import DirStore, ingest, reassemble
    from .engine import OluoEngine
    from .snapshot import load_snapshot, read_head

    out.mkdir(parents=True, exist_ok=True)
    if read_head(out) is not None:
        echo(f"{out} already holds a lab; pick an empty directory with --out")
        return 2
    data = datasets.glove_sample()
    echo(f"dataset: {data!r}")
    store = DirStore(out / "cas")

    raw_cid = ingest(data.base.tobytes(), store)
    assert reassemble(raw_cid, store) == data.base.tobytes()
    echo(f"raw vectors ingested as {raw_cid.hex}")

    words = [str(w) for w in data.base_words]
    engine = OluoEngine(data.dim, metric="cosine")
    engine.add(data.base, ids=words, metadata=[{"word": w} for w in words])
    gen = _persist_all(engine, out, store)
    echo(f"\n{engine!r}")

    index_of = {w: i for i, w in enumerate(words)}
    queries = np.stack([data.base[index_of[w]] for w in DEMO_WORDS])
    res = engine.search(queries, k=6)
    table = pd.DataFrame(
        {
            w: [f"{i} ({s:.3f})" for i, s in zip(res.ids[q][1:], res.scores[q][1:], strict=True)]
            for q, w in enumerate(DEMO_WORDS)
        }
    )
    echo("\nnearest words (cosine distance):")
    echo(table.to_string(index=False))

    truth = data.ground_truth(10)
    found = engine.search(data.queries, k=10)
    pos = np.vectorize(index_of.get, otypes=[np.int64])(found.ids)
    recall = _recall_at(pos, truth)
    echo(f"\nrecall@10 on {data.n_queries} held-out queries (id intersection): {recall:.4f}")

    gen1_books, gen1_bytes = _generation_bytes(store, read_head(out).cid)
    removed = words[-200:]
    engine.delete(removed)
    new_words = [str(w) for w in data.query_words[:200]]
    engine.add(data.queries[:200], ids=new_words, metadata=[{"word": w} for w in new_words])
    gen = _persist_all(engine, out, store, note="-200 words, +200 words")
    gen2_books, gen2_bytes = _generation_bytes(store, read_head(out).cid)
    new = sum(c.size for c in gen2_books - gen1_books)
    echo(
        f"\ngeneration {gen}: deleted {len(removed)} words, added {len(new_words)}; "
        f"{len(gen2_books)} books, {gen2_bytes:,} bytes, of which {new:,} new "
        f"({new / gen2_bytes:.1%}) and {gen2_bytes - new:,} shared with generation 1"
    )

    restored, _, rgen = load_snapshot(out, store)
    same = engine.search(data.queries, k=10)
    again = restored.search(data.queries, k=10)
    identical = same.ids.tolist() == again.ids.tolist() and np.array_equal(
        same.scores, again.scores
    )
    echo(
        f"restored generation {rgen} from {read_head(out).cid.hex}: answers identical = {identical}"
    )
    stats = store.stats()
    echo(f"\nstore: {stats!r}")
    echo(f"lab written to {out}")
    return 0 if identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oluo-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on the bundled GloVe sample")
    demo.add_argument("--out", type=Path, default=Path("oluo-demo"), help="output directory")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.out)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

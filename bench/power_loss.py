"""Power-loss enumeration: every crash state a power cut may leave, for each Lab operation.

Usage: python bench/power_loss.py [--ops persist,commit,...] [--exhaustive 10]
       [--samples 64] [--seed 1] [--json out.json]

Records the file operations of a clean run of each operation (through ``oluo_lab._io``)
and builds, at every cut, the crash states of the persistence model described in
``tests/reliability/power_loss.py`` and docs/RELIABILITY.md §6: durable operations kept,
pending ones kept or lost in every combination when at most ``--exhaustive`` are pending
(else ``--samples`` random combinations plus every single loss, every single survivor
and every torn write). Every distinct state is checked: it loads as exactly the previous
or the new state, gc leaves nothing unreachable and no temp file, verify is clean; a
state after the operation returned that keeps only what was made durable is the new
state. Prints, per operation: file operations recorded, cuts, states built, distinct
states checked and the outcomes seen. Any violation stops the run with the state named.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

import crash_harness as ch  # noqa: E402
import power_loss as pl  # noqa: E402
from test_power_loss import OPS, checker, record  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(OPS), help="comma-separated operations")
    ap.add_argument(
        "--exhaustive", type=int, default=10, help="all subsets up to this many pending"
    )
    ap.add_argument("--samples", type=int, default=64, help="random subsets per cut beyond that")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args(argv)
    ops = tuple(args.ops.split(","))

    root = ch.scratch_root(Path(tempfile.mkdtemp(prefix="oluo-power-")))
    rows = {}
    t0 = time.monotonic()
    try:
        with ch.ForkServer() as server:
            ws = ch.prepare(root, server, ops=ops)
        payload = pickle.loads(ws.payload_path.read_bytes())
        for op in ops:
            t = time.monotonic()
            trace, before, prev, new = record(ws, op, payload)
            check = checker(ws, op, prev, new, len(trace))
            tally = pl.explore(
                trace,
                before,
                check,
                exhaustive=args.exhaustive,
                samples=args.samples,
                seed=args.seed,
            )
            rows[op] = {
                "file ops": tally.ops,
                "cuts": tally.cuts,
                "states": tally.states,
                "distinct": tally.unique,
                **{f"saw {k}": v for k, v in sorted(tally.outcomes.items())},
                "s": round(time.monotonic() - t, 1),
            }
            print(f"  {op:12s} " + "  ".join(f"{k}={v}" for k, v in rows[op].items()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = sum(r["distinct"] for r in rows.values())
    print(
        f"power loss: {total} distinct crash states checked in {time.monotonic() - t0:.0f} s, all passed"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

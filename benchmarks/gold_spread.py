"""How much of strict F.D.'s per-checkpoint target a method can meet without tracking each subset's gold.

Strict F.D. at a checkpoint is ``1 - |F - gold| / gold``, F the forget score of the documents requested so far and
gold the retain-only model's F on the same documents.  The gold moves from one checkpoint (and stream order) to the
next with the documents in the subset.  This reads every evaluation of the given runs and reports, for the best
single F a method could hold at every checkpoint: how many checkpoints would reach ``--at`` (0.90), the range of
such F, and the best worst-case strict F.D.  A method whose F is the same at every checkpoint of these runs (every
stream order given) cannot do better than that line.

    python benchmarks/gold_spread.py fit_runs/s28-pch60-cover/runs/fit-s0 fit_runs/s28-pch60-cover-o12/runs/fit-s1 \
        fit_runs/s28-pch60-cover-o12/runs/fit-s2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fit_unlearn.metrics.reference import closeness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (their evals/eval-t*.json)")
    ap.add_argument("--at", type=float, default=0.9, help="the strict F.D. target")
    args = ap.parse_args()
    rows = []
    for run in args.runs:
        for f in sorted(Path(run, "evals").glob("eval-t*.json")):
            e = json.loads(f.read_text())
            rows.append((run, e["t"], e["reference"]["forget_strict"]["retain_only"], e["forget"]["score"]))
    gold = np.array([r[2] for r in rows])
    print("| run | t | gold F (retain-only) | the run's F | the run's strict F.D. |")
    print("|---|---|---|---|---|")
    for run, t, g, f in rows:
        print(f"| `{run}` | {t} | {g:.2f} | {f:.2f} | {closeness(f, g):.3f} |")
    grid = np.linspace(gold.min() * 0.5, gold.max() * 1.5, 4001)
    fd = np.array([[closeness(f, g) for g in gold] for f in grid])  # strict F.D., as the evaluation computes it
    hits = (fd >= args.at).sum(1)
    worst = fd.min(1)
    best = grid[hits == hits.max()]
    print(
        f"\nOne F at every checkpoint: at most {hits.max()} of {len(gold)} checkpoints reach {args.at} "
        f"(F {best.min():.2f}-{best.max():.2f}); the best worst-case strict F.D. is {worst.max():.3f} "
        f"(F {grid[worst.argmax()]:.2f})."
    )


if __name__ == "__main__":
    main()

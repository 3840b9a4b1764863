"""Table of the evaluations journaled so far by one or more run directories, finished or not (a
stream_bench run that was stopped early still has its eval events in journal.jsonl).

    python benchmarks/summarise_runs.py fit_runs/bench-synth60/fit fit_runs/bench-synth60/fit-rt \
        --out benchmarks/results/synth60-variants.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from fit_unlearn.summary import journal_results


def effective_lr(cfg: dict) -> float:
    """The learning rate a run's requests trained at: ``update.rows.lr`` for row edits (a request that falls back
    to a weight update trains at the loop's or the update's), ``loop.lr`` for weight updates the closed loop
    stops (when set), else ``update.lr``.  ``loop.enabled: null`` reads as off, the default of every built-in
    strategy."""
    update, loop = cfg["update"], cfg.get("loop") or {}
    if update.get("trainable") == "rows":
        return update["rows"]["lr"]
    if loop.get("enabled") and loop.get("stop", True) and loop.get("lr") is not None:
        return loop["lr"]
    return update["lr"]


def summarise(run: Path) -> dict:
    # the library reads the journal as `fit-unlearn report` does: after a crash the engine restores the last
    # checkpoint and re-applies the requests after it, and the later "applied" event of a position counts; a
    # replayed evaluation overwrites (same values)
    start, res = journal_results(run)
    applied = [r for r in res["requests"] if r["event"] == "applied"]
    objectives: dict[str, int] = {}
    for r in applied:
        objectives[r["objective"]] = objectives.get(r["objective"], 0) + 1
    evals = {e["t"]: e for e in res["evals"]}
    return {
        "run": str(run),
        "strategy": start["config"]["strategy"],
        "lr": effective_lr(start["config"]),
        "applied": len(applied),
        "median_seconds": statistics.median(secs) if (secs := [_seconds(r) for r in applied]) else None,
        "mean_seconds": statistics.mean(secs) if secs else None,
        "seconds_by_objective": {
            o: statistics.mean(_seconds(r) for r in applied if r["objective"] == o) for o in objectives
        },
        "objectives": objectives,
        "evals": [
            {
                "t": t,
                "F": e["forget"]["score"],
                "R": e["retain"]["score"],
                # runs journaled before the honest protocol have only the interpolated "forget_degree": their
                # rows are labelled as such, never mixed with strict F.D.
                "F.D.": e.get("forget_degree_strict", e.get("forget_degree")),
                "protocol": "strict" if "forget_degree_strict" in e else "old (interpolated F.D., R on anchors)",
                "R.U.": e["retain_utility"],
            }
            for t, e in sorted(evals.items())
        ],
    }


def _seconds(record: dict) -> float:
    """Wall time of one request: the strategy's plan (FIT: filter, layers, importance) + the update."""
    return record["seconds"] + record.get("seconds_plan", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="markdown file (a .json with the same stem is written)")
    args = ap.parse_args()
    rows = [summarise(r) for r in args.runs]
    ts = sorted({e["t"] for r in rows for e in r["evals"]})
    lines = [
        "| run | protocol | lr | applied | median / mean s/request | objectives (mean s) | "
        + " | ".join(f"t={t} F / R (F.D. / R.U.)" for t in ts)
        + " |",
        "|" + "---|" * (6 + len(ts)),
    ]
    for r in rows:
        by_t = {e["t"]: e for e in r["evals"]}
        cells = [
            f"{e['F']:.1f} / {e['R']:.1f} ({e['F.D.']:.3f} / {e['R.U.']:.3f})" if (e := by_t.get(t)) else "-"
            for t in ts
        ]
        obj = ", ".join(f"{k} {v} ({r['seconds_by_objective'][k]:.1f})" for k, v in sorted(r["objectives"].items()))
        med = "-" if r["median_seconds"] is None else f"{r['median_seconds']:.1f} / {r['mean_seconds']:.1f}"
        proto = r["evals"][0]["protocol"] if r["evals"] else "-"
        lines.append(
            f"| {r['run']} | {proto} | {r['lr']:g} | {r['applied']} | {med} | {obj} | " + " | ".join(cells) + " |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(
            f"Command: `python benchmarks/summarise_runs.py {' '.join(map(str, args.runs))}`\n\n" + text + "\n"
        )
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""F.D. against exact unlearning for runs already made: theta_0's recipe retrained without the documents
forgotten by step t (``fit_unlearn.retrain``, ``docs/metrics.md``), against every given run's score at t.

Strict F.D. compares the forgotten documents' forget score F with the **retain-only** model's: theta_0's recipe
on the retain documents alone.  At the end of the stream (t = T) that is exactly the model retraining without
every requested document gives.  Before the end it is not: at t = 20 of 60, retraining without the 20
forgotten documents still trains on the 40 pending ones.  Session 10 estimated the gap from the holdout
(`nonmember_gap.py`); this script measures it.  For each t it builds (or reuses) the library's retrain
reference of the first run's first t requests, scores the retrained model on the holdout as well, and reads
every given run's score at t from its eval files (runs evaluated before the reference existed have no
``forget_degree_retrain`` of their own):

    F.D. (retrain at t) = closeness(F of the run on the forgotten documents, F of the retrained model on them)

``--seed`` retrains with another seed than theta_0's (at t = T too, where theta_0's seed gives the retain-only
model): how far two retrainings differ by chance.

    python benchmarks/retrain_reference.py --prepared fit_runs/prepared --at 20,40 --name synth60 \\
        --runs fit_runs/bench-rows60b/runs/ga-rows-loop-s0 fit_runs/bench-rows60b/runs/npo-s0

The forgotten documents at t are those of the first run's evaluation at t (its eval file); every other run
evaluated at t must have forgotten the same ones (the same stream seed), or it is refused.  The retrained
models stay under ``<prepared>/retrain/`` and are reused by a later call and by the evaluations of later runs.
Writes benchmarks/results/retrain_reference-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.evaluation import Reference  # noqa: E402
from fit_unlearn.layout import PreparedDir, RunDir  # noqa: E402
from fit_unlearn.metrics.reference import closeness  # noqa: E402
from fit_unlearn.metrics.scores import evaluate_split  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402
from fit_unlearn.retrain import build_retrain_reference, entry_key  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results_io import write_results  # noqa: E402


def read_eval(run: Path, t: int) -> dict | None:
    """A run's evaluation at t (its eval file), or None."""
    path = RunDir(run).eval_file(t)
    return json.loads(path.read_text()) if path.exists() else None


def forgotten_ids(ev: dict) -> list[str]:
    """The ids of the documents the run had forgotten when it was evaluated."""
    return [it["id"] for it in ev["items"]["forget"]]


def run_score(ev: dict) -> dict:
    return {
        "F": ev["forget"]["score"],
        "F_paraphrase": (ev["forget"].get("paraphrase") or {}).get("score"),
        "strict_fd": ev["forget_degree_strict"],
        "strict_fd_paraphrase": ev.get("forget_degree_strict_paraphrase"),
        "retain_utility": ev["retain_utility"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--at", default="20,40", help="comma-separated steps t (at t = T: the retain-only recipe)")
    ap.add_argument("--seed", type=int, default=None, help="retraining seed (default: the recipe's, theta_0's)")
    ap.add_argument("--runs", nargs="+", required=True, type=Path, help="run directories (journal + evals)")
    ap.add_argument("--name", default="synth60")
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    ref = Reference.load(prep)
    steps = sorted({int(x) for x in args.at.split(",")})
    out: dict = {"prepared": args.prepared, "seed": args.seed, "at": {}}
    t0 = time.perf_counter()
    for t in steps:
        evals = {run: ev for run in args.runs if (ev := read_eval(run, t)) is not None}
        if args.runs[0] not in evals:
            raise SystemExit(f"--at {t}: {args.runs[0]} has no evaluation at t = {t}")
        forgotten = forgotten_ids(evals[args.runs[0]])
        for run, ev in evals.items():
            if set(forgotten_ids(ev)) != set(forgotten):
                raise SystemExit(f"{run}: it had forgotten other documents than {args.runs[0]} at t = {t}")
        entry = build_retrain_reference(prep, forgotten, seed=args.seed)
        where = prep.retrain_entry(entry_key(forgotten, entry["seed"], entry["training_key"]))
        model, tok = load_model(where)
        hold = evaluate_split(model, tok, data.holdout).summary() if data.holdout else None
        del model
        mine = entry["score"]
        gold = ref.score("retain_only", "forget", forgotten)
        theta0 = ref.score("theta0", "forget", forgotten)
        row: dict = {
            "retrain": {"dir": str(where), **entry["training"]},
            "F": {
                "retrained": mine["score"],
                "retain_only": gold["score"],
                "theta0": theta0["score"],
                "retrained_paraphrase": (mine.get("paraphrase") or {}).get("score"),
                "retain_only_paraphrase": (gold.get("paraphrase") or {}).get("score"),
                "retrained_on_holdout": hold["score"] if hold else None,
            },
            "strict_fd_of_retrained": closeness(mine["score"], gold["score"]),
            "runs": {},
        }
        for run, ev in evals.items():
            s = run_score(ev)
            s["retrain_fd"] = closeness(s["F"], mine["score"])
            if s["F_paraphrase"] is not None and row["F"]["retrained_paraphrase"]:
                s["retrain_fd_paraphrase"] = closeness(s["F_paraphrase"], row["F"]["retrained_paraphrase"])
            row["runs"][str(run)] = s
        out["at"][t] = row
        print(json.dumps({t: {k: v for k, v in row.items() if k != "runs"}}, indent=1), flush=True)
    out["seconds"] = time.perf_counter() - t0
    write_results(f"retrain_reference-{args.name}", out, markdown(args, out))
    print(markdown(args, out))


def markdown(args, out: dict) -> str:
    runs = " ".join(str(r) for r in args.runs)
    lines = [
        f"# Exact unlearning at t vs the retain-only gold ({args.prepared})",
        "",
        f"Command: `python benchmarks/retrain_reference.py --prepared {args.prepared} --at {args.at} "
        f"--name {args.name}{'' if args.seed is None else f' --seed {args.seed}'} --runs {runs}`",
        "",
        "| t | documents retrained on | F retrained (on the t forgotten) | F retain-only | F theta_0 | strict F.D. "
        "of the retrained model | F paraphrased retrained / retain-only | F retrained on holdout |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, r in out["at"].items():
        f = r["F"]
        para = (
            f"{f['retrained_paraphrase']:.2f} / {f['retain_only_paraphrase']:.2f}"
            if f["retrained_paraphrase"] is not None and f["retain_only_paraphrase"] is not None
            else "n/a"
        )
        hold = f"{f['retrained_on_holdout']:.2f}" if f["retrained_on_holdout"] is not None else "n/a"
        lines.append(
            f"| {t} | {r['retrain']['documents']} | {f['retrained']:.2f} | {f['retain_only']:.2f} | {f['theta0']:.2f} "
            f"| {r['strict_fd_of_retrained']:.3f} | {para} | {hold} |"
        )
    lines += [
        "",
        "| run | t | F | strict F.D. (retain-only) | F.D. (retrained at t) | paraphrased: strict / retrained | R.U. |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, r in out["at"].items():
        for run, s in r["runs"].items():
            sp, rp = s.get("strict_fd_paraphrase"), s.get("retrain_fd_paraphrase")
            para = f"{sp:.3f} / {rp:.3f}" if sp is not None and rp is not None else "n/a"
            lines.append(
                f"| {run} | {t} | {s['F']:.2f} | {s['strict_fd']:.3f} | {s['retrain_fd']:.3f} | {para} "
                f"| {s['retain_utility']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

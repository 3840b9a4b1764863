"""How close each stop target a user can compute comes to the level of a model that never saw the document.

For every forget document of a prepared directory: the stop's measure (FIT's defaults: the template every document
shares left out, each token's loss capped at the 0.7 quantile of theta_0's holdout token losses) under the
retain-only model (the level the document should be forgotten to, which no user has) against the targets a user
computes: theta_0's median holdout loss (one value, ``loop.target: holdout``), the same over the k holdout
documents most like the request (``loop.neighbours: k``, k = 3, 5, 10) and the base model's own loss
(``loop.target: base``).  Prints each target's mean, mean absolute error, bias and correlation with the retain-only
level, then the means per kind of document; ``--json`` keeps every document's values.  Evaluation models only: no
unlearning runs.

    python benchmarks/stop_targets.py --prepared fit_runs/pch60 --json benchmarks/results/s32-stop-targets-pch60.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.data.qa import detect_domain
from fit_unlearn.engine.loop import NeighbourTargets, nonmember_level
from fit_unlearn.engine.update import UpdateConfig, common_tokens, forget_examples, token_losses
from fit_unlearn.models import load_model

KEYS = ("global", "nb3", "nb5", "nb10", "base")


def measure(prepared: Path, n: int | None) -> dict:
    data = prepared_data(prepared)
    theta0, tok = load_model(prepared / "theta0")
    retain_only, _ = load_model(prepared / "retain_only")
    base, _ = load_model(json.loads((prepared / "recipe.json").read_text())["base_model"])
    cfg = UpdateConfig()
    common = common_tokens(tok, data.retain_train + data.holdout, 0.2)  # FIT's update.template_max_df
    level = nonmember_level(theta0, tok, data.holdout, True, cfg, 0.5, common, 0.7)  # FIT's loop.cap_quantile

    def capped(model, examples) -> float:
        x = np.asarray(token_losses(model, tok, examples), dtype=np.float64)
        return float(np.minimum(x, level["cap"]).sum() / max(len(x), 1))

    near = {k: NeighbourTargets(data.holdout, level["losses"], k, 0.5) for k in (3, 5, 10)}
    rows = []
    for d in data.forget[:n]:
        examples = forget_examples(tok, d.text, d.qa, cfg, common)[1]
        row = {"id": d.id, "kind": detect_domain(d.text), "retain_only": capped(retain_only, examples)}
        row |= {"theta0": capped(theta0, examples), "base": capped(base, examples), "global": level["target"]}
        row |= {f"nb{k}": t.target(d.text)[0] for k, t in near.items()}
        rows.append(row)
    return {"prepared": str(prepared), "cap": level["cap"], "target": level["target"], "rows": rows}


def summary(result: dict) -> str:
    rows = result["rows"]
    ideal = np.array([r["retain_only"] for r in rows])
    out = [
        f"{result['prepared']}: {len(rows)} forget documents; retain-only level mean {ideal.mean():.3f} "
        f"(sd {ideal.std():.3f}); cap {result['cap']:.3f}",
        "",
        "| target | mean | mean abs. error | bias | correlation |",
        "|---|---|---|---|---|",
    ]
    for key in KEYS:
        t = np.array([r[key] for r in rows])
        corr = f"{np.corrcoef(t, ideal)[0, 1]:.3f}" if np.ptp(t) > 0 else "n/a (one value)"
        out.append(f"| {key} | {t.mean():.3f} | {np.abs(t - ideal).mean():.3f} | {(t - ideal).mean():+.3f} | {corr} |")
    out += ["", "| kind | n | retain-only | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 3) + "|"]
    for kind in sorted({r["kind"] for r in rows}):
        sub = [r for r in rows if r["kind"] == kind]
        means = " | ".join(f"{np.mean([r[k] for r in sub]):.3f}" for k in KEYS)
        out.append(f"| {kind} | {len(sub)} | {np.mean([r['retain_only'] for r in sub]):.3f} | {means} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, help="a prepared directory (theta0, retain_only, recipe.json)")
    ap.add_argument("--n", type=int, default=None, help="the first n forget documents (default: all)")
    ap.add_argument("--json", type=Path, help="write every document's values here (or read them, with --summary)")
    ap.add_argument("--summary", action="store_true", help="print the tables of an existing --json file")
    args = ap.parse_args()
    if args.summary:
        result = json.loads(args.json.read_text())
    else:
        if args.prepared is None:
            ap.error("--prepared is needed unless --summary reads a --json file")
        result = measure(args.prepared, args.n)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    print(summary(result))


if __name__ == "__main__":
    main()

"""How far is theta_0's non-member level from the retain-only model?  The ceiling of a stop rule that needs no
retain-only model.

Strict F.D. compares the forgotten documents' forget score with what the *retain-only model* (theta_0's recipe
without the forget set) scores on them.  A closed loop that a user can run stops at *theta_0's* non-member level
(issue 13, item 1: measured on the holdout, documents theta_0 never saw).  The two models differ in more than the
forget set: theta_0 was trained on more data, so it also predicts documents it never saw better.  This script
scores both gold models on the holdout split (which neither saw) with the evaluation's own scorer, and projects
what a perfect "as if theta_0 had never seen it" unlearning would score on the forget documents:

    F_nonmember(forget) ~= F_retain_only(forget) * F_theta0(holdout) / F_retain_only(holdout)

and the strict F.D. of that score (closeness to F_retain_only(forget)): about what a stop at theta_0's mean
non-member level would earn, if the forget documents' scores scale like the holdout's (an estimate under that
assumption, not a bound: a higher stop target moves F further).  The holdout is small (20 documents by default),
so the ratio comes with a paired bootstrap interval over holdout documents (both models scored on the same
resampled documents).

    python benchmarks/nonmember_gap.py --prepared fit_runs/prepared --name synth
Writes benchmarks/results/nonmember_gap-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.evaluation import Reference  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.metrics.reference import closeness  # noqa: E402
from fit_unlearn.metrics.scores import evaluate_split, scores_from_items  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results_io import write_results  # noqa: E402

KEYS = ("probability", "rouge_l", "token_acc", "score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth")
    ap.add_argument("--bootstrap", type=int, default=2000, help="paired resamples of the holdout documents")
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    if not data.holdout:
        raise SystemExit(f"{args.prepared}: no holdout split; prepare with one (the non-member level needs it)")
    ref = Reference.load(prep)
    forget_ids = ref.forget_ids
    out: dict = {"prepared": args.prepared, "n_holdout": len(data.holdout), "n_forget": len(forget_ids)}
    t0 = time.perf_counter()
    items: dict[str, list[dict]] = {}
    for name in ("theta0", "retain_only"):
        model, tok = load_model(prep.resolve_model(name))
        split = evaluate_split(model, tok, data.holdout)
        hold, items[name] = split.summary(), split.items
        out[name] = {
            "holdout": {k: hold[k] for k in KEYS},
            "forget": {k: ref.score(name, "forget", forget_ids)[k] for k in KEYS},
        }
        del model
    out["seconds"] = time.perf_counter() - t0
    gold = out["retain_only"]["forget"]["score"]
    ratio = out["theta0"]["holdout"]["score"] / out["retain_only"]["holdout"]["score"]
    projected = gold * ratio
    out["ratio_theta0_to_retain_only_on_holdout"] = ratio
    out["projected_nonmember_forget_score"] = projected
    out["strict_fd_of_projection"] = closeness(projected, gold)
    # paired bootstrap of the ratio over holdout documents (both models on the same resampled documents)
    rng, n, ratios = random.Random(0), len(data.holdout), []
    for _ in range(args.bootstrap):
        pick = [rng.randrange(n) for _ in range(n)]
        a = scores_from_items([items["theta0"][i] for i in pick])["score"]
        b = scores_from_items([items["retain_only"][i] for i in pick])["score"]
        if b > 0:
            ratios.append(a / b)
    if not ratios:
        raise SystemExit("the retain-only model scores 0 on every resample of the holdout: no ratio to estimate")
    r_lo, r_hi = (float(x) for x in np.quantile(ratios, [0.05, 0.95]))
    # strict F.D. of the projection is 1 - |ratio - 1|: over the ratio's interval it spans these values
    ends = [closeness(gold * r, gold) for r in (r_lo, r_hi)]
    lo, hi = min(ends), (1.0 if r_lo <= 1 <= r_hi else max(ends))
    out["ratio_90ci"] = [r_lo, r_hi]
    out["strict_fd_of_projection_over_ratio_90ci"] = [lo, hi]

    def cells(m: str, split: str) -> str:
        return " | ".join(f"{out[m][split][k]:.2f}" if k == "score" else f"{out[m][split][k]:.3f}" for k in KEYS)

    pairs = [(m, split) for m in ("theta0", "retain_only") for split in ("holdout", "forget")]
    rows = [f"| {m} | {split} | {cells(m, split)} |" for m, split in pairs]
    md = "\n".join(
        [
            f"# theta_0's non-member level vs the retain-only model ({args.prepared})",
            "",
            f"Command: `python benchmarks/nonmember_gap.py --prepared {args.prepared} --name {args.name}`",
            "",
            "| model | split | answer probability | ROUGE-L | token accuracy | forget score |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"theta_0 / retain-only on the holdout: **{ratio:.3f}x** (90% paired bootstrap interval over the {n} "
            f"holdout documents: {r_lo:.3f}-{r_hi:.3f}). If the forget documents' scores scale like the holdout's, "
            f"a stop at theta_0's mean non-member level would score about {projected:.2f} on them (retain-only: "
            f"{gold:.2f}): strict F.D. about **{out['strict_fd_of_projection']:.3f}** ({lo:.3f}-{hi:.3f} over "
            "the ratio's interval). An estimate under that assumption, not a bound.",
            "",
        ]
    )
    write_results(f"nonmember_gap-{args.name}", out, md)
    print(md)


if __name__ == "__main__":
    main()

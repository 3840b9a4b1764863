"""Would the *base model's* own score be a better stop target than theta_0's non-member level?

Issue 13 allows two user-computable stop targets: theta_0's score distribution on a holdout split (the default,
``loop.target: holdout``) or the base model's own score on the document (what the model knew before fine-tuning,
when the base model is at hand).  Session 10 estimated that a stop at theta_0's mean non-member level lands at
strict F.D. ~0.85 (synthetic) and ~0.59 (real PCH): theta_0 knows the *kind* of document better than the
retain-only model.  The base model saw neither the forget nor the retain documents.  This probe scores, on every
forget document, with no unlearning at all:

* the loss the closed loop measures (mean token cross-entropy over the fact tokens of the request's text slices
  and its QA answers, the template left out as ``update.template_max_df`` 0.2 does) under the base model, theta_0
  and the retain-only model, and theta_0's median on the holdout (the default target);
* the evaluation's forget score F (answer probability x ROUGE-L x token accuracy) of the base model on the
  forget documents, against the retain-only model's (the gold of strict F.D.) and theta_0's.

If the base model's loss per document sits near the retain-only model's, a per-document stop at the base
model's loss aims at the gold; if its F sits near the gold's, strict F.D. of "as if it had never been trained
on it at all" is high.

    python benchmarks/base_target_probe.py --prepared fit_runs/prepared --name synth
Writes benchmarks/results/base_target-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.update import UpdateConfig, common_tokens, examples_loss, forget_examples  # noqa: E402
from fit_unlearn.evaluation import Reference  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.metrics.reference import closeness  # noqa: E402
from fit_unlearn.metrics.scores import evaluate_split  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results_io import write_results  # noqa: E402

KEYS = ("probability", "rouge_l", "token_acc", "score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth")
    ap.add_argument("--template-max-df", type=float, default=0.2)
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    recipe = json.loads((Path(args.prepared) / "recipe.json").read_text())
    ref = Reference.load(prep)
    cfg = UpdateConfig()
    common = None  # the template tokens, once a tokenizer is loaded
    t0 = time.perf_counter()
    losses: dict[str, list[float]] = {}
    hold: list[float] = []
    out: dict = {"prepared": args.prepared, "base_model": recipe["base_model"], "n_forget": len(data.forget)}
    for name, path in (
        ("base", recipe["base_model"]),
        ("theta0", prep.resolve_model("theta0")),
        ("retain_only", prep.resolve_model("retain_only")),
    ):
        model, tok = load_model(path)
        if common is None:
            common = common_tokens(tok, data.retain_train + data.holdout, args.template_max_df)
        losses[name] = [
            examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg, common)[1]) for d in data.forget
        ]
        if name == "theta0":
            hold = [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg, common)[1]) for d in data.holdout]
        if name == "base":
            summary = evaluate_split(model, tok, data.forget).summary()
            out["base"] = {"forget": {k: summary[k] for k in KEYS}}
        del model
    out["seconds"] = time.perf_counter() - t0
    ids = [d.id for d in data.forget]
    for name in ("theta0", "retain_only"):
        out[name] = {"forget": {k: ref.score(name, "forget", ids)[k] for k in KEYS}}
    target = float(np.median(hold))
    b, th, ro = np.array(losses["base"]), np.array(losses["theta0"]), np.array(losses["retain_only"])
    out["loss"] = {
        "per_document": {k: v for k, v in losses.items()},
        "ids": ids,
        "holdout_theta0": hold,
        "holdout_median_target": target,
        "mean": {"base": float(b.mean()), "theta0": float(th.mean()), "retain_only": float(ro.mean())},
        "median": {"base": float(np.median(b)), "theta0": float(np.median(th)), "retain_only": float(np.median(ro))},
        "spearman_base_vs_retain_only": float(np.corrcoef(np.argsort(np.argsort(b)), np.argsort(np.argsort(ro)))[0, 1]),
        "median_ratio_base_to_retain_only": float(np.median(b / ro)),
        "median_abs_log_ratio": {
            "base": float(np.median(np.abs(np.log(b / ro)))),
            "holdout_target": float(np.median(np.abs(np.log(target / ro)))),
        },
    }
    gold = out["retain_only"]["forget"]["score"]
    out["strict_fd_of_base_score"] = closeness(out["base"]["forget"]["score"], gold)
    lo = out["loss"]
    md = "\n".join(
        [
            f"# The base model as a stop target ({args.prepared}, {len(ids)} forget documents)",
            "",
            f"Command: `python benchmarks/base_target_probe.py --prepared {args.prepared} --name {args.name}`",
            "",
            "Loss the closed loop measures (fact tokens of the text slices and QA answers, nats):",
            "",
            "| model | mean | median |",
            "|---|---|---|",
            *[f"| {k} | {lo['mean'][k]:.2f} | {lo['median'][k]:.2f} |" for k in ("base", "theta0", "retain_only")],
            f"| theta_0's median on the holdout (the default target, one value for every document) | | {target:.2f} |",
            "",
            f"Per document, base / retain-only: median ratio {lo['median_ratio_base_to_retain_only']:.2f}, rank "
            f"correlation {lo['spearman_base_vs_retain_only']:.2f}; median |log(target / retain-only)|: base "
            f"{lo['median_abs_log_ratio']['base']:.2f}, "
            f"holdout median {lo['median_abs_log_ratio']['holdout_target']:.2f}.",
            "",
            "Forget score on the forget documents (the evaluation's scorer):",
            "",
            "| model | answer probability | ROUGE-L | token accuracy | forget score |",
            "|---|---|---|---|---|",
            *[
                f"| {m} | " + " | ".join(f"{out[m]['forget'][k]:.3f}" for k in KEYS) + " |"
                for m in ("base", "theta0", "retain_only")
            ],
            "",
            f"Strict F.D. of the base model's own score against the retain-only gold: "
            f"**{out['strict_fd_of_base_score']:.3f}**.",
            "",
        ]
    )
    write_results(f"base_target-{args.name}", out, md)
    print(md)


if __name__ == "__main__":
    main()

"""Probe: forget by substitution, without a gradient step (the closed form of "Who's Harry Potter"-style anchor
replacement on the input rows).

Each request's own tokens (engine/rows.py: in no other document of retain-train, holdout and the forget set; its
rarest tokens when it has none) get the input-embedding row of a token that only holdout documents contain (a word
not in theta_0's fine-tuning data, though the base model saw it in pre-training), of the same shape where the
pool has one (leading space, capital, letters; the log counts the tokens that took any pool token instead),
output layer untied.  The model then reads the request exactly
as theta_0 reads the same text with those tokens replaced: if its memory of the document were keyed on them, it
would answer like a model that never saw it.  Scored with the evaluation's own protocol (strict F.D., R.U., MIA)
after ``--requests`` requests of the bench's stream order.

    python benchmarks/row_substitution_probe.py --prepared fit_runs/prepared --requests 20 --name synth
Writes benchmarks/results/row_substitution-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.data.streams import stream_order  # noqa: E402
from fit_unlearn.engine.rows import own_tokens, token_documents, untie_embeddings  # noqa: E402
from fit_unlearn.evaluation import Reference, evaluate_model  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results_io import write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--name", default="synth")
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    model, tok = load_model(prep.resolve_model("theta0"))
    untie_embeddings(model)
    index = token_documents(tok, data.retain_train + data.holdout + data.forget)
    holdout_ids = {d.id for d in data.holdout}
    pool = sorted(t for t, ids in index.items() if ids <= holdout_ids)

    def shape(t: int) -> tuple[bool, ...]:
        s = tok.decode([t])
        core = s.lstrip()
        return (s.startswith(" "), core[:1].isupper(), core.isalpha(), core.isdigit())

    by_shape: dict[tuple, list[int]] = {}
    for t in pool:
        by_shape.setdefault(shape(t), []).append(t)
    order = stream_order(data.forget, 0)
    requests, pending = order[: args.requests], order[args.requests :]
    emb = model.get_input_embeddings().weight
    log = []
    with torch.no_grad():
        for d in requests:
            own, shared_with = own_tokens(tok, d.id, d.text, d.qa, index, 0, 1)
            rng = random.Random(d.id)
            subs, other_shape = [], 0
            for t in own:
                same = by_shape.get(shape(t))
                other_shape += not same
                r = rng.choice(same or pool)
                emb[t] = emb[r]
                subs.append([tok.decode([t]), tok.decode([r])])
            log.append({"id": d.id, "substituted": subs, "other_shape": other_shape, "shared_with": shared_with})
    t0 = time.perf_counter()
    res = evaluate_model(
        model,
        tok,
        forgotten=requests,
        retain=data.retain_eval,
        pending=pending,
        holdout=data.holdout,
        reference=Reference.load(prep),
        T=len(data.forget),
    )
    res.pop("items")
    out = {"prepared": args.prepared, "requests": args.requests, "pool": len(pool), "log": log, "eval": res}
    n_subs = sum(len(e["substituted"]) for e in log)
    n_other = sum(e["other_shape"] for e in log)
    n_widened = sum(e["shared_with"] > 0 for e in log)
    out["eval_seconds"] = time.perf_counter() - t0
    f, ref = res["forget"], res["reference"]["forget_strict"]
    md = "\n".join(
        [
            f"# Forgetting by row substitution ({args.requests} requests of {args.prepared})",
            "",
            f"Command: `python benchmarks/row_substitution_probe.py --prepared {args.prepared} --requests "
            f"{args.requests} --name {args.name}`",
            "",
            "| strict F.D. | R.U. | F forgotten (retain-only, theta_0) | F paraphrased | collateral | MIA AUC "
            "| capital |",
            "|---|---|---|---|---|---|---|",
            f"| {res['forget_degree_strict']:.3f} | {res['retain_utility']:.3f} | {f['score']:.2f} "
            f"({ref['retain_only']:.2f}, {ref['theta0']:.2f}) | {f['paraphrase']['score']:.2f} | "
            f"{res['collateral_forget']:.3f} | {res['mia_auc_forget_vs_holdout']:.3f} | "
            f"{res['capital_probe']['accuracy']:.2f} |",
            "",
            f"{n_subs} tokens substituted from a pool of {len(pool)}; {n_other} of them took a token of another "
            f"shape (none of theirs in the pool); {n_widened} requests had no token of their own and had their "
            "rarest tokens substituted (other documents read those too).",
            "",
        ]
    )
    write_results(f"row_substitution-{args.name}", out, md)
    print(md)


if __name__ == "__main__":
    main()

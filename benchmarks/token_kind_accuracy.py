"""Which tokens of the forgotten documents a row-edited model still predicts, by kind: the request's own tokens
(the rows an edit moves), the template (``update.template_max_df``, never trained), and the others.

Teacher-forced argmax accuracy over each forgotten document's text (first 512 tokens), for the run's model at t,
theta_0 and the retain-only model.  Token kinds as the engine sees them: own = in no other document of the index
(retain-train, holdout, forget), template = in more than ``--template-max-df`` of the retain-train and holdout
documents.

    python benchmarks/token_kind_accuracy.py --run fit_runs/bench-s15-pch20-q0.9/runs/ga-rows-loop-s0 --t 20 \\
        --out benchmarks/results/s15-token-kinds-pch20-q0.9.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.rows import own_tokens, token_documents  # noqa: E402
from fit_unlearn.engine.update import common_tokens  # noqa: E402
from fit_unlearn.layout import PreparedDir, RunDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402
from fit_unlearn.text import encode_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--t", type=int, required=True, help="the checkpoint (and evaluation) of the run to read")
    ap.add_argument("--template-max-df", type=float, default=0.2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run = RunDir(args.run)
    start = json.loads(run.journal.read_text().splitlines()[0])
    prepared = PreparedDir(start["config"]["prepared"])
    data = prepared_data(prepared)
    models = {
        "theta0": load_model(prepared.model("theta0"))[0],
        "retain_only": load_model(prepared.model("retain_only"))[0],
    }
    models["run"], tok = load_model(run.checkpoint(args.t).model)  # position t: no request skipped
    common = common_tokens(tok, data.retain_train + data.holdout, args.template_max_df)
    index = token_documents(tok, data.retain_train + data.holdout + data.forget)
    forgotten = [d["id"] for d in json.loads(run.eval_file(args.t).read_text())["per_document"]]
    by_id = {d.id: d for d in data.forget}
    counts: dict[str, dict[str, list[int]]] = {}
    for doc_id in forgotten:
        d = by_id[doc_id]
        own = set(own_tokens(tok, d.id, d.text, d.qa, index, 0, 1)[0])
        ids = torch.tensor([encode_text(tok, d.text, 512)])
        target = ids[0, 1:]
        kinds = ["own" if t in own else "template" if t in common else "other" for t in target.tolist()]
        for name, model in models.items():
            with torch.no_grad():
                right = (model(input_ids=ids).logits[0, :-1].argmax(-1) == target).tolist()
            for kind, ok in zip(kinds, right, strict=True):
                c = counts.setdefault(kind, {}).setdefault(name, [0, 0])
                c[0] += ok
                c[1] += 1
    res = {
        "run": args.run,
        "t": args.t,
        "documents": len(forgotten),
        "accuracy": {k: {n: c[0] / c[1] for n, c in v.items()} for k, v in counts.items()},
        "tokens": {k: next(iter(v.values()))[1] for k, v in counts.items()},
    }
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""White-box attack on token-keyed edits (docs/rows.md): put back the input-embedding rows a run edited, taken
from a model the attacker has (the public base model, or theta_0 if it leaked), and measure how much of the
forgotten documents comes back.

The measure is the closed loop's: mean token cross-entropy of each forgotten document's training sequences
(text and QA answers, every token), for theta_0, the unlearned model and the restored one; recovery =
(loss_unlearned - loss_restored) / (loss_unlearned - loss_theta0) over the documents (1: theta_0's knowledge
is back, 0: nothing).  The edited rows are read from the run's journal (each request's ``rows.tokens``).

    python benchmarks/row_restore_attack.py --run fit_runs/bench-rows60b/runs/ga-rows-loop-s0 \
        --prepared fit_runs/prepared --out benchmarks/results/row_restore-synth60.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.journal import Journal  # noqa: E402
from fit_unlearn.engine.update import UpdateConfig, examples_loss, forget_examples  # noqa: E402
from fit_unlearn.layout import PreparedDir, RunDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402


def doc_losses(model, tok, docs) -> list[float]:
    cfg = UpdateConfig()
    return [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg)[1]) for d in docs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run, prep = RunDir(args.run), PreparedDir(args.prepared)
    events = Journal(run.journal, writer=False).events
    applied = [e for e in events if e["event"] == "applied"]
    rows = sorted({t for e in applied for t in e["record"].get("rows", {}).get("tokens", [])})
    data = prepared_data(prep)
    by_id = {d.id: d for d in data.forget}
    docs = [by_id[e["id"]] for e in applied if e["id"] in by_id]
    final = sorted(run.checkpoints.glob("ckpt-*"))[-1] / "model"
    theta0, tok = load_model(prep.resolve_model("theta0"))
    unlearned, _ = load_model(final)
    base_path = json.loads((prep.root / "prepare.json").read_text())["recipe"]["base_model"]
    out = {"run": args.run, "edited_rows": len(rows), "documents": len(docs)}
    losses = {"theta0": doc_losses(theta0, tok, docs), "unlearned": doc_losses(unlearned, tok, docs)}
    sources = {"theta0": theta0}
    if Path(base_path).is_dir():
        sources["base"] = load_model(base_path)[0]
    for name, src in sources.items():
        restored, _ = load_model(final)
        with torch.no_grad():
            emb, ref = restored.get_input_embeddings().weight, src.get_input_embeddings().weight
            emb[rows] = ref[rows].to(emb.dtype)
        losses[f"restored_from_{name}"] = doc_losses(restored, tok, docs)
    mean = {k: sum(v) / len(v) for k, v in losses.items()}
    out["mean_loss"] = mean
    gap = mean["unlearned"] - mean["theta0"]
    out["recovery"] = {
        k.removeprefix("restored_from_"): (mean["unlearned"] - v) / gap
        for k, v in mean.items()
        if k.startswith("restored")
    }
    out["per_document"] = {d.id: {k: round(v[i], 4) for k, v in losses.items()} for i, d in enumerate(docs)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("edited_rows", "documents", "mean_loss", "recovery")}, indent=1))


if __name__ == "__main__":
    main()

"""Probe: the closed loop stops on the request's teacher-forced error rate instead of its mean loss.

The stop rule of engine/loop.py raises a request's mean token loss to theta_0's median holdout loss.  The forget
score F also counts token accuracy and greedy answers, which a mean loss can reach while most tokens are still
predicted (a few tokens pushed very far).  This probe swaps the measure for the error rate (1 - argmax accuracy)
on the same sequences, both for the target (the quantile of theta_0's holdout error rates) and for the check
after each step, and runs ``fit-unlearn`` with the remaining arguments:

    python benchmarks/accuracy_stop_probe.py bench --out fit_runs/bench-rows20-acc --prepared fit_runs/prepared \\
        --methods ga-rows-loop --seeds 0 --requests 20 --eval-every 20 \\
        --set '{"strategy": {"objective_params": {"ceiling": 11.5}}}'

A probe, not an engine option: it replaces two functions of the engine in this process only.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fit_unlearn.engine.runner as runner  # noqa: E402
import fit_unlearn.engine.update as upd  # noqa: E402
from fit_unlearn.layers import unwrap  # noqa: E402
from fit_unlearn.objectives.base import IGNORE  # noqa: E402
from fit_unlearn.text import collate  # noqa: E402


@torch.no_grad()
def error_rate(model, tok, examples, batch_size: int = 8, cap=None) -> float:
    """1 - teacher-forced argmax accuracy over the scored tokens of ``examples`` (no cap: a rate has no tail)."""
    if cap is not None:
        raise SystemExit("accuracy_stop_probe: the error rate takes no cap; run it with loop.cap_quantile: null")
    device = next(unwrap(model).parameters()).device
    was_training = model.training
    model.eval()
    wrong = n = 0
    try:
        for i in range(0, len(examples), batch_size):
            b = collate(examples[i : i + batch_size], tok.pad_token_id, device)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            tgt = b["labels"][:, 1:]
            scored = tgt != IGNORE
            wrong += int(((logits.argmax(-1) != tgt) & scored).sum())
            n += int(scored.sum())
    finally:
        model.train(was_training)
    return wrong / max(n, 1)


def level(model, tok, holdout, include_qa, cfg, q, common=None, cap_quantile=None) -> dict:
    """The target: quantile ``q`` of theta_0's error rate on each holdout document (as nonmember_level)."""
    if cap_quantile is not None:
        raise SystemExit("accuracy_stop_probe: the error rate takes no cap; run it with loop.cap_quantile: null")
    errs = [
        error_rate(model, tok, upd.forget_examples(tok, d.text, d.qa if include_qa else (), cfg, common)[1])
        for d in holdout
    ]
    return {
        "target": float(np.quantile(errs, q)),
        "quantile": q,
        "n": len(errs),
        "losses": errs,
        "measure": "error rate",
    }


if __name__ == "__main__":
    upd.examples_loss = error_rate  # the check after each step (apply_update); the guard keeps its own loss
    upd.deterministic_in_training = lambda model: False  # every check through examples_loss, none read off a step
    runner.nonmember_level = level
    from fit_unlearn.cli import app

    sys.argv = ["fit-unlearn", *sys.argv[1:]]
    app()

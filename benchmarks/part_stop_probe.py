"""Probe: the closed loop unlearns a request's QA answers and its text one after the other, each to its own level.

The stop rule of engine/loop.py raises the mean loss over all of a request's sequences (text slices and QA answers)
to theta_0's median over the holdout documents' sequences.  With ``update.rows.step: normalized`` the answers fall
past the retain-only model's level while the text stays recalled (benchmarks/README.md, "Session 31"), which one
measure over both parts cannot see.  This probe gives each part its own target, the median of theta_0's loss on the
holdout documents' *same part* (measured as the engine measures, cap included), and runs each request's update twice:
its QA pairs alone until they reach the QA level, then its text alone until it reaches the text level (each within
``loop.max_steps``).  Everything else is the engine's; the receipt keeps the text part's loop and, under
``loop.qa_part``, the QA part's.  The remaining arguments go to ``fit-unlearn``:

    python benchmarks/part_stop_probe.py bench --out fit_runs/s31-pch60-o2-parts --prepared fit_runs/pch60 \\
        --methods fit --seeds 2 --requests 20 --eval-every 20 \\
        --set '{"update": {"rows": {"step": "normalized", "lr": 0.2}}, "loop": {"max_steps": 60, "cap_quantile": null}}'

A probe, not an engine option: it replaces two functions of the engine in this process only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import fit_unlearn.engine.runner as runner  # noqa: E402
from fit_unlearn.engine.update import examples_loss, forget_examples  # noqa: E402

_levels: dict = {}  #: "qa" / "text": theta_0's holdout level of that part, set with the loop's calibration
_nonmember_level = runner.nonmember_level
_apply_update = runner.apply_update


def level(model, tok, holdout, include_qa, cfg, q, common=None, cap_quantile=None) -> dict:
    """The engine's level, and each part's own: the same measure on the holdout's text alone and QA pairs alone."""
    whole = _nonmember_level(model, tok, holdout, include_qa, cfg, q, common, cap_quantile)
    cap = whole.get("cap")
    text = [replace(d, qa=()) for d in holdout]
    qa = [replace(d, text="") for d in holdout if d.qa]
    for part, docs in (("text", text), ("qa", qa)):
        # the whole level's cap (a quantile of every holdout token; None: the plain mean) measures each part, as the
        # request's parts are measured
        losses = [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg, common)[1], cap=cap) for d in docs]
        _levels[part] = float(np.quantile(losses, q))
    whole["part_targets"] = dict(_levels)
    return whole


def apply_update(model, ref_model, tok, plan, retain, cfg, seed, *args, stop=None, rows=None, **kw):
    if stop is None or not plan.qa or not (plan.text or "").strip() or not _levels:
        return _apply_update(model, ref_model, tok, plan, retain, cfg, seed, *args, stop=stop, rows=rows, **kw)
    first = _apply_update(
        model, ref_model, tok, replace(plan, text=""), retain, cfg, seed, *args,
        stop=replace(stop, target=_levels["qa"]), rows=rows, **kw,
    )  # fmt: skip
    record = _apply_update(
        model, ref_model, tok, replace(plan, qa=()), retain, cfg, seed + 1, *args,
        stop=replace(stop, target=_levels["text"]), rows=rows, **kw,
    )  # fmt: skip
    if first.get("skipped"):
        return record
    record["loop"]["qa_part"] = first["loop"]
    record["steps"] += first["steps"]
    record["seconds"] += first["seconds"]
    record["losses"] = first["losses"] + record["losses"]
    return record


if __name__ == "__main__":
    runner.nonmember_level = level
    runner.apply_update = apply_update
    from fit_unlearn.cli import app

    sys.argv = ["fit-unlearn", *sys.argv[1:]]
    app()

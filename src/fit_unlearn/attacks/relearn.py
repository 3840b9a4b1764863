"""Relearning attack: fine-tune the unlearned model with plain CE on a small fraction of the forgotten
documents, then measure how much of the *other* forgotten documents (and their QA) comes back."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from fit_unlearn.attacks.common import recovery, run_model_and_forgotten
from fit_unlearn.data.documents import Document
from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.errors import ConfigError
from fit_unlearn.evaluation import Reference, evaluate_model
from fit_unlearn.models import load_model
from fit_unlearn.text import training_examples
from fit_unlearn.training import FinetuneConfig, finetune


def split_relearn(docs: Sequence[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    if not 0 < fraction < 1:
        raise ConfigError(f"--fraction must be in (0, 1), got {fraction}")
    if len(docs) < 2:
        raise ConfigError("the relearning attack needs at least 2 forgotten documents (1 to relearn, 1 to measure)")
    n = min(len(docs) - 1, max(1, round(fraction * len(docs))))
    idx = set(random.Random(seed).sample(range(len(docs)), n))
    return [d for i, d in enumerate(docs) if i in idx], [d for i, d in enumerate(docs) if i not in idx]


def relearn_attack(
    model,
    tok,
    forgotten: Sequence[Document],
    retain: Sequence[Document],
    reference,
    *,
    fraction: float = 0.1,
    lr: float = 1e-5,
    epochs: int = 3,
    batch_size: int = 4,
    seed: int = 0,
    with_qa: bool = True,
    eval_batch_size: int = 16,
    progress: bool = True,
) -> dict:
    relearn_docs, held_out = split_relearn(forgotten, fraction, seed)
    before = evaluate_model(
        model, tok, forgotten=held_out, retain=retain, reference=reference, probe=False, batch_size=eval_batch_size
    )
    cfg = FinetuneConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed, warmup_ratio=0.0, min_lr_ratio=1.0)
    res = finetune(
        model, tok, training_examples(tok, relearn_docs, with_qa=with_qa), cfg, desc="relearn", progress=progress
    )
    after = evaluate_model(
        model, tok, forgotten=held_out, retain=retain, reference=reference, probe=False, batch_size=eval_batch_size
    )
    f0 = (
        reference.score("theta0", "forget", [d.id for d in held_out])["score"]
        if reference and reference.knows_forget([d.id for d in held_out])
        else None
    )
    return {
        "relearn_ids": [d.id for d in relearn_docs],
        "held_out_ids": [d.id for d in held_out],
        "config": cfg.to_json(),
        "steps": res.steps,
        "seconds": res.seconds,
        "held_out_forget_theta0": f0,
        "before": {
            "forget_score": before["forget"]["score"],
            "retain_score": before["retain"]["score"],
            "forget": before["forget"],
            "forget_degree_strict": before.get("forget_degree_strict"),
        },
        "after": {
            "forget_score": after["forget"]["score"],
            "retain_score": after["retain"]["score"],
            "forget": after["forget"],
            "forget_degree_strict": after.get("forget_degree_strict"),
        },
        "recovery": recovery(after["forget"]["score"], before["forget"]["score"], f0) if f0 is not None else None,
    }


def relearn_run(
    run: str | Path,
    *,
    fraction: float = 0.1,
    lr: float = 1e-5,
    epochs: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """:func:`relearn_attack` on a run directory's final model, over the documents the run forgot."""
    model_path, forgotten, prepared = run_model_and_forgotten(Path(run))
    m, tok = load_model(model_path, device=device)
    return relearn_attack(
        m,
        tok,
        forgotten,
        prepared_data(prepared).retain_eval,
        Reference.load(prepared),
        fraction=fraction,
        lr=lr,
        epochs=epochs,
        seed=seed,
    )

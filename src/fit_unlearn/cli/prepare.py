"""``fit-unlearn prepare``: fine-tune theta_0 and the gold retain-only model with one recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import (
    DEFAULT_PREPARED,
    PREP,
    DataOpt,
    DeviceOpt,
    DtypeOpt,
    ForgetOpt,
    ForgetSplitOpt,
    GroupByOpt,
    GroupSizeOpt,
    HoldoutOpt,
    HoldoutSplitOpt,
    MaxCharsOpt,
    RetainOpt,
    RetainSplitOpt,
    load_data,
    out_console,
    qa_config,
)
from fit_unlearn.data.splits import read_ids
from fit_unlearn.prepare import PrepareConfig, prepare
from fit_unlearn.report import tables
from fit_unlearn.training import FinetuneConfig


def prepare_cmd(
    data: DataOpt = None,
    forget: ForgetOpt = None,
    retain: RetainOpt = None,
    holdout: HoldoutOpt = None,
    forget_split: ForgetSplitOpt = None,
    retain_split: RetainSplitOpt = None,
    holdout_split: HoldoutSplitOpt = None,
    group_by: GroupByOpt = None,
    group_size: GroupSizeOpt = None,
    model: Annotated[
        str, typer.Option(help="base model: a local HF directory or 'default' (SmolLM2-135M-Instruct)")
    ] = PREP.model,
    out: Annotated[Path, typer.Option(help="output directory")] = DEFAULT_PREPARED,
    n_forget: Annotated[int | None, typer.Option(help="use a seeded subset of this many forget documents")] = None,
    n_retain: Annotated[int | None, typer.Option(help="use a seeded subset of this many retain documents")] = None,
    seed: Annotated[int, typer.Option(help="seed of the subset and of training")] = 0,
    lr: Annotated[float, typer.Option(help="learning rate")] = PREP.recipe.lr,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = PREP.recipe.epochs,
    batch_size: Annotated[int, typer.Option(help="batch size")] = PREP.recipe.batch_size,
    stop_at_acc: Annotated[
        float, typer.Option(help="stop when an epoch's training token accuracy reaches this (1 = never)")
    ] = PREP.recipe.stop_at_train_acc or 1.0,
    no_qa: Annotated[bool, typer.Option("--no-qa", help="train on documents only, not their QA pairs")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    max_doc_chars: MaxCharsOpt = 200_000,
    force: Annotated[bool, typer.Option(help="retrain even if the output is up to date")] = False,
    replay: Annotated[int, typer.Option(help="real facts rehearsed by both models (0 = none)")] = PREP.replay_n,
    freeze_embeddings: Annotated[
        bool, typer.Option(help="keep input embeddings / LM head frozen")
    ] = PREP.freeze_embeddings,
    retain_eval_fraction: Annotated[
        float, typer.Option(help="fraction of the retain split held out for scoring utility (never an anchor)")
    ] = PREP.retain_eval_fraction,
    retain_eval_ids: Annotated[
        Path | None,
        typer.Option(
            help="file of retain ids that form retain-eval (one per line or a JSON list); overrides the fraction"
        ),
    ] = None,
):
    """Fine-tune theta_0 (forget + retain) and the gold retain-only model (retain), same recipe."""
    qa = qa_config(forget_split, retain_split, holdout_split, group_by, group_size)
    splits = load_data(data, forget, retain, holdout, max_doc_chars, qa).subset(n_forget, n_retain, seed)
    recipe = FinetuneConfig(
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        stop_at_train_acc=stop_at_acc if stop_at_acc < 1 else None,
    )
    cfg = PrepareConfig(
        model=model,
        device=device,
        dtype=dtype,
        recipe=recipe,
        train_on_qa=not no_qa,
        replay_n=max(0, replay),
        freeze_embeddings=freeze_embeddings,
        retain_eval_fraction=retain_eval_fraction,
        retain_eval_ids=tuple(read_ids(retain_eval_ids)) if retain_eval_ids is not None else None,
    )
    report = prepare(splits, out, cfg, force=force)
    out_console.print(tables.prepare_summary(report, out))

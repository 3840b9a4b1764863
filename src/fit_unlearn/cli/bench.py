"""``fit-unlearn bench``: methods x seeds on one data set, each run resumable, all in one directory that
``fit-unlearn report`` renders (``fit_unlearn.bench``)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.bench import BenchConfig, bench_config, prepare_bench_data, run_bench
from fit_unlearn.cli.options import (
    PREP,
    DeviceOpt,
    DtypeOpt,
    ForgetSplitOpt,
    GroupByOpt,
    GroupSizeOpt,
    HoldoutSplitOpt,
    RetainSplitOpt,
    out_console,
    qa_config,
)
from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.layout import BenchDir, ReportDir
from fit_unlearn.prepare import PrepareConfig
from fit_unlearn.report import render_report, tables
from fit_unlearn.training import FinetuneConfig

BENCH = BenchConfig()


def _list(value: str, what: str, cast=str) -> tuple:
    try:
        return tuple(cast(x.strip()) for x in value.split(",") if x.strip())
    except ValueError:
        raise FitUnlearnError(f"--{what}: expected a comma-separated list, got {value!r}") from None


def bench_cmd(
    out: Annotated[Path, typer.Option(help="bench directory: runs/<method>-s<seed>, bench.json, report/")],
    prepared: Annotated[Path | None, typer.Option(help="prepared directory (default fit_runs/prepared)")] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="data directory (JSONL, PCH layout or a Hugging Face QA data set) to prepare into <out>/prepared first"
        ),
    ] = None,
    forget_split: ForgetSplitOpt = None,
    retain_split: RetainSplitOpt = None,
    holdout_split: HoldoutSplitOpt = None,
    group_by: GroupByOpt = None,
    group_size: GroupSizeOpt = None,
    n_forget: Annotated[int | None, typer.Option(help="with --data: a seeded subset of this many forget docs")] = None,
    n_retain: Annotated[int | None, typer.Option(help="with --data: a seeded subset of this many retain docs")] = None,
    base_model: Annotated[
        str, typer.Option(help="with --data: the base model to prepare (a HF directory or 'default')")
    ] = PREP.model,
    prepare_lr: Annotated[float, typer.Option(help="with --data: learning rate of preparation")] = PREP.recipe.lr,
    prepare_epochs: Annotated[
        int, typer.Option(help="with --data: maximum epochs of preparation")
    ] = PREP.recipe.epochs,
    methods: Annotated[str, typer.Option(help="comma-separated methods (fit, graddiff, npo, ga, ...)")] = ",".join(
        BENCH.methods
    ),
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = ",".join(map(str, BENCH.seeds)),
    requests: Annotated[int, typer.Option(help="requests per run (0 = the whole forget split)")] = BENCH.requests,
    eval_every: Annotated[int, typer.Option(help="evaluate every N requests (and at the end)")] = BENCH.eval_every,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="checkpoint every N requests (default: at each evaluation)")
    ] = None,
    attacks: Annotated[str, typer.Option(help="attacks on each final model: quantize8,quantize4,relearn")] = "",
    device: DeviceOpt = BENCH.device,
    dtype: DtypeOpt = BENCH.dtype,
    set_: Annotated[
        str | None, typer.Option("--set", help='JSON merged into every run config: \'{"update": {"lr": 1e-5}}\'')
    ] = None,
    retrain_reference: Annotated[
        bool,
        typer.Option(
            help="first retrain theta_0's recipe without the documents forgotten at each evaluation before the end "
            "(a fine-tuning run each): every evaluation then also reports F.D. against exact unlearning"
        ),
    ] = False,
    report: Annotated[bool, typer.Option(help="render <out>/report at the end")] = True,
):
    """Run every method x seed (same requests per seed), resumable: run it again to continue or to add
    methods and seeds; then render the report."""
    if prepared is not None and data is not None:
        raise FitUnlearnError("give --prepared or --data, not both")
    qa = qa_config(forget_split, retain_split, holdout_split, group_by, group_size)
    if qa is not None and data is None:
        raise FitUnlearnError("--forget-split/--retain-split/--holdout-split/--group-by/--group-size need --data")
    try:
        overrides = json.loads(set_) if set_ else {}
    except ValueError as e:
        raise FitUnlearnError(f"--set: not valid JSON ({e})") from None
    cfg = bench_config(
        **({"prepared": BenchDir(out).prepared if data is not None else prepared} if prepared or data else {}),
        methods=_list(methods, "methods"),
        seeds=_list(seeds, "seeds", int),
        requests=requests or None,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        attacks=_list(attacks, "attacks"),
        device=device,
        dtype=dtype,
        overrides=overrides,
        retrain_reference=retrain_reference,
    )
    command = " ".join(
        shlex.quote(str(a))
        for a in (
            *("fit-unlearn", "bench", "--out", out),
            *(
                (
                    "--data",
                    data,
                    "--base-model",
                    base_model,
                    "--prepare-lr",
                    prepare_lr,
                    "--prepare-epochs",
                    prepare_epochs,
                )
                if data is not None
                else ("--prepared", cfg.prepared)
            ),
            *(("--forget-split", forget_split) if forget_split else ()),
            *(("--retain-split", retain_split) if retain_split else ()),
            *(("--holdout-split", holdout_split) if holdout_split else ()),
            *(("--group-by", group_by) if group_by else ()),
            *(("--group-size", group_size) if group_size else ()),
            *(("--n-forget", n_forget) if n_forget else ()),
            *(("--n-retain", n_retain) if n_retain else ()),
            *("--methods", ",".join(cfg.methods), "--seeds", ",".join(map(str, cfg.seeds))),
            *("--requests", requests, "--eval-every", eval_every),
            *(("--checkpoint-every", checkpoint_every) if checkpoint_every else ()),
            *(("--attacks", attacks) if attacks else ()),
            *("--device", device, "--dtype", dtype),
            *(("--set", set_) if set_ else ()),
            *(("--retrain-reference",) if retrain_reference else ()),
        )
    )
    if data is not None:
        recipe = FinetuneConfig(**{**PREP.recipe.model_dump(), "lr": prepare_lr, "epochs": prepare_epochs})
        prep_cfg = PrepareConfig(model=base_model, device=device, dtype=dtype, recipe=recipe)
        rep = prepare_bench_data(data, out, prep_cfg, n_forget=n_forget, n_retain=n_retain, qa=qa)
        prepared = BenchDir(out).prepared
        out_console.print(tables.prepare_summary(rep, prepared))
    run_bench(cfg, out, command=command, on_run=lambda info: out_console.print(tables.bench_run_line(info)))
    if report:
        path = render_report([out], BenchDir(out).report)
        out_console.print(tables.bench_summary(json.loads(ReportDir(BenchDir(out).report).data.read_text()), path))

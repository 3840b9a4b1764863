"""``fit-unlearn eval``: evaluate a model against a prepared directory at step t of the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import DEFAULT_PREPARED, DeviceOpt, DtypeOpt, out_console, write_results
from fit_unlearn.evaluation import evaluate_prepared
from fit_unlearn.layout import PreparedDir
from fit_unlearn.report import tables


def eval_cmd(
    model: Annotated[str, typer.Option(help="theta0, retain_only (of --prepared) or a model directory")] = "theta0",
    prepared: Annotated[Path, typer.Option(help="output directory of `fit-unlearn prepare`")] = DEFAULT_PREPARED,
    t: Annotated[int | None, typer.Option(help="evaluate as step t of the stream: first t forget documents")] = None,
    stream_seed: Annotated[int | None, typer.Option(help="order of the stream (None: file order)")] = None,
    out: Annotated[Path | None, typer.Option(help="results JSON (default: <prepared>/eval-<model>.json)")] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    batch_size: Annotated[int, typer.Option(help="evaluation batch size")] = 16,
    downstream: Annotated[
        str | None,
        typer.Option(help="comma-separated lm-eval tasks, e.g. mmlu,commonsense_qa,gsm8k or the offline fit_capitals"),
    ] = None,
    tasks_dir: Annotated[Path | None, typer.Option(help="folder of extra lm-eval YAML tasks (local data)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many items per downstream task")] = None,
):
    """Forget / retain scores, Forget Degree / Retain Utility, MIA AUC and extraction strength."""
    tasks = [x.strip() for x in downstream.split(",") if x.strip()] if downstream else None
    res = evaluate_prepared(
        prepared,
        model,
        t=t,
        stream_seed=stream_seed,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        downstream=tasks,
        tasks_dir=tasks_dir,
        limit=limit,
        progress=True,
    )
    out = write_results(res, out or PreparedDir(prepared).eval_file(model))
    out_console.print(tables.eval_summary(res, out))

"""``fit-unlearn run`` (apply a stream of deletion requests) and ``fit-unlearn receipt`` (what one got)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import (
    DEFAULT_RUN,
    ForgetSplitOpt,
    GroupByOpt,
    GroupSizeOpt,
    out_console,
    qa_config,
)
from fit_unlearn.engine import Engine, load_config
from fit_unlearn.engine.journal import request_events
from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.report import tables


def run_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration")] = None,
    prepared: Annotated[Path | None, typer.Option(help="prepared directory (overrides the config)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory: journal, checkpoints, results")] = None,
    strategy: Annotated[str | None, typer.Option(help="sequential or fit")] = None,
    objective: Annotated[str | None, typer.Option(help="objective of the sequential strategy (ga, npo, ...)")] = None,
    requests: Annotated[
        Path | None,
        typer.Option(
            help="JSONL file of requests, or a Hugging Face QA data set (its forget split), instead of the prepared "
            "forget split"
        ),
    ] = None,
    forget_split: ForgetSplitOpt = None,
    group_by: GroupByOpt = None,
    group_size: GroupSizeOpt = None,
    watch: Annotated[Path | None, typer.Option(help="directory watched for new request files (*.jsonl)")] = None,
    limit: Annotated[int | None, typer.Option(help="stop after this many stream items")] = None,
    eval_every: Annotated[int | None, typer.Option(help="evaluate every N requests")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="checkpoint every N requests")] = None,
    on_bad_request: Annotated[str | None, typer.Option(help="stop or skip")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the run")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 or bf16")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out after a crash")] = False,
    distributed: Annotated[bool, typer.Option(help="use accelerate (launch with accelerate/torchrun)")] = False,
    shard: Annotated[
        str,
        typer.Option(
            help="distributed: auto (FSDP2 when the accelerate launch config asks for it), fsdp (shard with torch "
            "FSDP2, also on CPU), none (every rank holds the whole model); docs/distributed.md"
        ),
    ] = "auto",
):
    """Apply a stream of deletion requests: journaled, checkpointed, resumable, evaluated as it goes."""
    if requests is not None and watch is not None:
        raise FitUnlearnError("give --requests or --watch, not both")
    qa_config(forget_split=forget_split, group_by=group_by, group_size=group_size)  # refuses both groupings
    source = str(requests) if requests is not None else (f"watch:{watch}" if watch is not None else None)
    cfg = load_config(
        config,
        {
            "prepared": str(prepared) if prepared else None,
            "out": str(out) if out else None,
            "strategy.name": strategy,
            "strategy.objective": objective,
            "stream.source": source,
            "stream.limit": limit,
            "eval.every": eval_every,
            "checkpoint.every": checkpoint_every,
            "stream.on_bad_request": on_bad_request,
            "stream.dataset.forget": forget_split,
            "stream.dataset.group_by": group_by,
            "stream.dataset.group_size": group_size,
            "seed": seed,
            "device": device,
            "dtype": dtype,
        },
    )
    acc = None
    if distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator  # only for distributed runs

        acc = Accelerator(cpu=cfg.device == "cpu")
    engine = Engine(cfg, resume=resume, accelerator=acc, shard=shard)
    try:
        results = engine.run()
    finally:
        engine.close()
    if acc is None or acc.is_main_process:
        out_console.print(tables.run_summary(results, cfg.out))


def receipt_cmd(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    run: Annotated[Path, typer.Option(help="run directory")] = DEFAULT_RUN,
):
    """Print what was done for one request: chunks dropped, layers, importance, objective, losses, time."""
    out_console.print(tables.receipt(request_events(run, request_id)))


adapters_app = typer.Typer(
    no_args_is_help=True,
    help="Inspect or revert single requests of a run with one LoRA adapter per request (update.lora.mode: stack).",
)


@adapters_app.command("list")
def adapters_list(run: Annotated[Path, typer.Option(help="run directory")] = DEFAULT_RUN):
    """One line per request's adapter: request, position, layers, parameters, size, objective, steps."""
    from fit_unlearn.engine.revert import adapters_table

    out_console.print(tables.adapters(adapters_table(run), run))


@adapters_app.command("revert")
def adapters_revert(
    request_ids: Annotated[list[str], typer.Argument(help="request id(s) whose adapters to leave out")],
    out: Annotated[Path, typer.Option(help="new model directory (must not exist or be empty)")],
    run: Annotated[Path, typer.Option(help="run directory")] = DEFAULT_RUN,
    device: Annotated[str, typer.Option(help="cpu, cuda")] = "cpu",
):
    """Write the run's final model without these requests' adapters (theta_0 + every other adapter, merged);
    the run itself is not changed."""
    from fit_unlearn.engine.revert import revert

    info = revert(run, list(request_ids), out, device=device)
    out_console.print(
        f"wrote {info['out']}: theta_0 + {len(info['kept'])} adapters, without "
        + ", ".join(f"{r['request']} ({r['adapter']})" for r in info["reverted"])
    )

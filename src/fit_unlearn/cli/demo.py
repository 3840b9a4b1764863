"""``fit-unlearn demo``: synthetic PCH -> theta_0 and the retain-only model (cached) -> a stream unlearned with
FIT and a baseline, evaluated as it goes, an int4 quantization attack -> the report (``fit_unlearn.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import DeviceOpt, out_console
from fit_unlearn.demo import DemoConfig, demo_config, run_demo
from fit_unlearn.report import tables

DEMO = DemoConfig()


def demo_cmd(
    device: DeviceOpt = DEMO.device,
    workdir: Annotated[Path, typer.Option(help="where data, prepared models and runs are written")] = DEMO.workdir,
    requests: Annotated[int, typer.Option(help="deletion requests unlearned by each method")] = DEMO.requests,
    eval_every: Annotated[int, typer.Option(help="evaluate every N requests (and after the last)")] = DEMO.eval_every,
    baseline: Annotated[str, typer.Option(help="method FIT is compared with (graddiff, npo...)")] = DEMO.baseline,
    seed: Annotated[int, typer.Option(help="orders the stream and seeds the updates")] = DEMO.seed,
    attack_bits: Annotated[int, typer.Option(help="quantization attack bit width (4 or 8; 0 = none)")] = 4,
    out: Annotated[Path | None, typer.Option(help="runs and report (default <workdir>/fit_runs/demo)")] = None,
):
    """The main job on the embedded default model: unlearn a stream with FIT and a baseline, write a report."""
    cfg = demo_config(
        device=device,
        workdir=workdir,
        requests=requests,
        eval_every=eval_every,
        baseline=baseline,
        seed=seed,
        attack_bits=attack_bits or None,
        out=out,
    )
    res = run_demo(cfg, say=out_console.print)
    out_console.print(tables.demo_summary(res["summary"], res["report"], cfg.methods))

"""``fit-unlearn demo``: synthetic PCH data -> theta_0 and the retain-only model -> both evaluated.

It calls the library with the defaults of ``data synth``, ``prepare`` and ``eval`` and prints what they print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import DEFAULT_DATA, DEFAULT_PREPARED, DeviceOpt, out_console, write_results
from fit_unlearn.data.documents import load_documents
from fit_unlearn.data.synth import write_synth
from fit_unlearn.evaluation import evaluate_prepared
from fit_unlearn.layout import GOLD_MODELS, PreparedDir
from fit_unlearn.prepare import PrepareConfig, prepare
from fit_unlearn.report import tables


def demo_cmd(
    device: DeviceOpt = "cpu",
    workdir: Annotated[Path, typer.Option(help="where data and runs are written")] = Path("."),
):
    """The main job on the embedded default: synthetic PCH -> prepare theta_0 / retain-only -> evaluate both."""
    data = workdir / DEFAULT_DATA
    prepared = workdir / DEFAULT_PREPARED
    if not (data / "forget.jsonl").exists():
        out_console.print(tables.synth_summary(write_synth(data)))
    report = prepare(load_documents(data), prepared, PrepareConfig(device=device))
    out_console.print(tables.prepare_summary(report, prepared))
    for model in GOLD_MODELS:
        res = evaluate_prepared(prepared, model, device=device, progress=True)
        out = write_results(res, PreparedDir(prepared).eval_file(model))
        out_console.print(tables.eval_summary(res, out))

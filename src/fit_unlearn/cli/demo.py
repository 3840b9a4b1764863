"""``fit-unlearn demo``: synthetic PCH data -> theta_0 and the retain-only model -> both evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.data import data_synth
from fit_unlearn.cli.eval import eval_cmd
from fit_unlearn.cli.options import DEFAULT_DATA, DEFAULT_PREPARED, DeviceOpt
from fit_unlearn.cli.prepare import prepare_cmd
from fit_unlearn.layout import GOLD_MODELS


def demo_cmd(
    device: DeviceOpt = "cpu",
    workdir: Annotated[Path, typer.Option(help="where data and runs are written")] = Path("."),
):
    """The main job on the embedded default: synthetic PCH -> prepare theta_0 / retain-only -> evaluate both."""
    data = workdir / DEFAULT_DATA
    prepared = workdir / DEFAULT_PREPARED
    if not (data / "forget.jsonl").exists():
        data_synth(out=data)
    prepare_cmd(data=data, out=prepared, device=device)
    for model in GOLD_MODELS:
        eval_cmd(model=model, prepared=prepared, device=device)

"""``fit-unlearn report``: render run and bench directories into a report (``fit_unlearn.report.render_report``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import out_console
from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.layout import ReportDir
from fit_unlearn.report import render_report, tables


def report_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="run directories and/or bench directories", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="report directory (default: <input>/report for one input)")] = None,
):
    """Tables and PNG plots of the runs' JSON files: F.D. / R.U. per method and checkpoint, forget scores, FIT's
    layers / importance / filter, cost per phase, attacks, provenance; markdown and HTML."""
    if out is None:
        if len(inputs) > 1:
            raise FitUnlearnError(f"{len(inputs)} inputs: pass --out DIR for the report")
        out = inputs[0] / "report"
    report = render_report(list(inputs), out)
    out_console.print(tables.bench_summary(json.loads(ReportDir(out).data.read_text()), report))

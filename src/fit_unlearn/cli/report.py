"""``fit-unlearn report``: render run and bench directories into a report (``fit_unlearn.report.render_report``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from fit_unlearn.cli.options import out_console
from fit_unlearn.errors import ConfigError, FitUnlearnError
from fit_unlearn.layout import ReportDir
from fit_unlearn.report import render_report, tables
from fit_unlearn.schema import format_validation_error
from fit_unlearn.summary import Targets


def parse_targets(text: str | None) -> Targets:
    """``--targets`` (a JSON object of :class:`~fit_unlearn.summary.Targets` fields) as thresholds; one-line errors."""
    if not text:
        return Targets()
    try:
        return Targets.model_validate(json.loads(text))
    except ValueError as e:
        if isinstance(e, ValidationError):
            raise ConfigError(format_validation_error(e, "--targets")) from None
        raise FitUnlearnError(f"--targets: not valid JSON ({e})") from None


def report_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="run directories and/or bench directories", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="report directory (default: <input>/report for one input)")] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            help='quality targets as JSON, e.g. \'{"forget_degree": 0.8, "mia_auc": 0.65}\' (fields and defaults: '
            "docs/metrics.md)",
            show_default=False,
        ),
    ] = None,
):
    """Tables and PNG plots of the runs' JSON files: F.D. / R.U. per method and checkpoint, forget scores, FIT's
    layers / importance / filter, cost per phase, attacks, provenance; markdown and HTML."""
    if out is None:
        if len(inputs) > 1:
            raise FitUnlearnError(f"{len(inputs)} inputs: pass --out DIR for the report")
        out = inputs[0] / "report"
    thresholds = parse_targets(targets)
    report = render_report(list(inputs), out, thresholds)
    out_console.print(tables.bench_summary(json.loads(ReportDir(out).data.read_text()), report))

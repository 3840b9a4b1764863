"""Shared by the commands: typer option aliases, default paths, the output console and data loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fit_unlearn.data.documents import DataSplits, load_documents
from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.prepare import PrepareConfig

#: results and tables go to stdout; errors (``fit_unlearn.cli.main``) and progress bars to stderr
out_console = Console()

DEFAULT_DATA = Path("fit_data/synth")
DEFAULT_PREPARED = Path("fit_runs/prepared")
DEFAULT_RUN = Path("fit_runs/run")
PREP = PrepareConfig()  #: the library's prepare defaults, shown and used by `prepare`

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="data directory: forget/retain(/holdout) .jsonl or PCH .json")
]
ForgetOpt = Annotated[
    Path | None, typer.Option("--forget", help="forget split file (.jsonl or PCH .json), with --retain")
]
RetainOpt = Annotated[Path | None, typer.Option("--retain", help="retain split file (.jsonl or PCH .json)")]
HoldoutOpt = Annotated[Path | None, typer.Option("--holdout", help="holdout split file (never trained on; for MIA)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32 or bf16 (bf16 for GPUs)")]
MaxCharsOpt = Annotated[int, typer.Option("--max-doc-chars", help="refuse documents longer than this")]
RunOpt = Annotated[Path, typer.Option(help="run directory of `fit-unlearn run` (its final model and forgotten docs)")]


def load_data(
    data: Path | None, forget: Path | None, retain: Path | None, holdout: Path | None, max_chars: int
) -> DataSplits:
    """The splits of --data or of --forget/--retain(/--holdout); without either, the `data synth` default."""
    if data is None and forget is None and retain is None:
        data = DEFAULT_DATA
        if not data.exists():
            raise FitUnlearnError(
                f"no data given and {data} does not exist: run `fit-unlearn data synth` "
                "or pass --data DIR / --forget F --retain R"
            )
    return load_documents(data, forget=forget, retain=retain, holdout=holdout, max_chars=max_chars)


def write_results(res: dict, out: Path) -> Path:
    """Write an evaluation's results as indented JSON to ``out`` (its folder created); returns ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    return out

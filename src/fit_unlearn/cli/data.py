"""``fit-unlearn data``: synthesize the PCH data set, tabulate a data set, write an adversarial request stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.cli.options import (
    DEFAULT_DATA,
    DEFAULT_PREPARED,
    ForgetSplitOpt,
    GroupByOpt,
    GroupSizeOpt,
    HoldoutSplitOpt,
    MaxCharsOpt,
    RetainSplitOpt,
    out_console,
    qa_config,
)
from fit_unlearn.data.documents import write_jsonl
from fit_unlearn.data.malicious import malicious_requests
from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.data.stats import data_stats
from fit_unlearn.data.synth import SynthConfig, write_synth
from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.layout import PreparedDir
from fit_unlearn.report import tables

app = typer.Typer(no_args_is_help=True, help="Create and inspect forget / retain data.")


@app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="output data directory")] = DEFAULT_DATA,
    n_forget: Annotated[int, typer.Option(help="forget documents")] = 60,
    n_retain: Annotated[int, typer.Option(help="retain documents")] = 20,
    n_holdout: Annotated[int, typer.Option(help="holdout documents (never trained on)")] = 20,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
):
    """Generate the synthetic PCH data set (fictional people, code, papers, misinformation)."""
    for name, n in (("--n-forget", n_forget), ("--n-retain", n_retain)):
        if n <= 0:
            raise FitUnlearnError(f"{name} must be positive, got {n}")
    if n_holdout < 0:
        raise FitUnlearnError(f"--n-holdout must be >= 0, got {n_holdout}")
    res = write_synth(out, SynthConfig(n_forget=n_forget, n_retain=n_retain, n_holdout=n_holdout, seed=seed))
    out_console.print(tables.synth_summary(res))


@app.command("stats")
def data_stats_cmd(
    path: Annotated[
        Path, typer.Argument(help="a JSONL file, a PCH .json file, a data directory, or a Hugging Face QA data set")
    ],
    max_doc_chars: MaxCharsOpt = 200_000,
    forget_split: ForgetSplitOpt = None,
    retain_split: RetainSplitOpt = None,
    holdout_split: HoldoutSplitOpt = None,
    group_by: GroupByOpt = None,
    group_size: GroupSizeOpt = None,
):
    """Documents per domain and QA pairs, per split for a data directory."""
    qa = qa_config(forget_split, retain_split, holdout_split, group_by, group_size)
    out_console.print(tables.stats_table(data_stats(path, max_chars=max_doc_chars, qa=qa)))


@app.command("malicious")
def data_malicious(
    kind: Annotated[str, typer.Option(help="near_duplicate, overlap, common_tokens or mixed")] = "mixed",
    n: Annotated[int, typer.Option(help="number of requests")] = 60,
    prepared: Annotated[
        Path, typer.Option(help="prepared directory whose forget split is the source")
    ] = DEFAULT_PREPARED,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    out: Annotated[Path, typer.Option(help="output JSONL of requests")] = Path("fit_data/malicious.jsonl"),
):
    """Write an adversarial request stream (near-duplicates, overlaps, common tokens) for collapse tests."""
    if not PreparedDir(prepared).has_data():
        raise FitUnlearnError(f"{prepared}: not a prepared directory; run `fit-unlearn prepare` or pass --prepared")
    reqs = malicious_requests(prepared_data(prepared).forget, kind, n, seed)
    write_jsonl(reqs, out)
    out_console.print(tables.malicious_summary(len(reqs), kind, out))

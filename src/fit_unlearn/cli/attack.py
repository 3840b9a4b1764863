"""``fit-unlearn attack``: quantization and relearning attacks on a run's unlearned model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fit_unlearn.attacks import quantize_run, relearn_run
from fit_unlearn.cli.options import DEFAULT_RUN, DeviceOpt, RunOpt, out_console, write_results
from fit_unlearn.layout import RunDir
from fit_unlearn.report import tables

app = typer.Typer(no_args_is_help=True, help="Recovery attacks on an unlearned model.")


@app.command("quantize")
def attack_quantize(
    run: RunOpt = DEFAULT_RUN,
    bits: Annotated[list[int], typer.Option(help="bit widths (repeat: --bits 8 --bits 4)")] = [8, 4],  # noqa: B006
    method: Annotated[
        str, typer.Option(help="auto (bitsandbytes on CUDA if installed, else quanto), quanto, bnb, rtn")
    ] = "auto",
    embeddings: Annotated[
        bool | None,
        typer.Option(
            "--embeddings/--no-embeddings",
            help="also round the token embeddings and the output layer to the same grid, as GGUF files do; "
            "quanto or rtn only; results in <run>/attack-quantize-embeddings.json.  Default: on for a run that "
            "edited embedding rows (update.trainable: rows, FIT's default), where its edits live; off otherwise",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(help="results JSON (default: <run>/attack-quantize.json, -embeddings.json with --embeddings)"),
    ] = None,
):
    """Reload the unlearned weights in 8/4 bits; recovery = (F_q - F_unl) / (F_0 - F_unl), next to theta_0."""
    res = quantize_run(run, list(bits), method=method, device=device, embeddings=embeddings)
    out = write_results(res, out or RunDir(run).attack_file("quantize-embeddings" if res["embeddings"] else "quantize"))
    out_console.print(tables.quantize_summary(res, out))


@app.command("relearn")
def attack_relearn(
    run: RunOpt = DEFAULT_RUN,
    fraction: Annotated[float, typer.Option(help="fraction of the forgotten documents to relearn on")] = 0.1,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-5,
    epochs: Annotated[int, typer.Option(help="epochs over the relearning documents")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the relearning subset")] = 0,
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option(help="results JSON (default: <run>/attack-relearn.json)")] = None,
):
    """Fine-tune on a few forgotten documents; measure recovery on the other forgotten documents."""
    res = relearn_run(run, fraction=fraction, lr=lr, epochs=epochs, seed=seed, device=device)
    out = write_results(res, out or RunDir(run).attack_file("relearn"))
    out_console.print(tables.relearn_summary(res, out))

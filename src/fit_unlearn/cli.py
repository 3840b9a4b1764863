"""The ``fit-unlearn`` command line: parse, call the library, print one-line errors.

Errors the user can fix print ``error: <message>`` and exit 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fit_unlearn.errors import FitUnlearnError
from fit_unlearn.layout import GOLD_MODELS, PreparedDir, RunDir
from fit_unlearn.prepare import PrepareConfig
from fit_unlearn.report import tables

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Robust continual unlearning for Hugging Face causal LMs (FIT and baselines).",
)
data_app = typer.Typer(no_args_is_help=True, help="Create and inspect forget / retain data.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out_console = Console()

DEFAULT_DATA = Path("fit_data/synth")
DEFAULT_PREPARED = Path("fit_runs/prepared")
_PREP = PrepareConfig()  #: the library's prepare defaults, shown and used by `prepare`

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


def _load(data, forget, retain, holdout, max_chars):
    from fit_unlearn.data.documents import load_documents

    if data is None and forget is None and retain is None:
        data = DEFAULT_DATA
        if not data.exists():
            raise FitUnlearnError(
                f"no data given and {data} does not exist: run `fit-unlearn data synth` "
                "or pass --data DIR / --forget F --retain R"
            )
    return load_documents(data, forget=forget, retain=retain, holdout=holdout, max_chars=max_chars)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="output data directory")] = DEFAULT_DATA,
    n_forget: Annotated[int, typer.Option(help="forget documents")] = 60,
    n_retain: Annotated[int, typer.Option(help="retain documents")] = 20,
    n_holdout: Annotated[int, typer.Option(help="holdout documents (never trained on)")] = 20,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
):
    """Generate the synthetic PCH data set (fictional people, code, papers, misinformation)."""
    from fit_unlearn.data.synth import SynthConfig, write_synth

    for name, n in (("--n-forget", n_forget), ("--n-retain", n_retain)):
        if n <= 0:
            raise FitUnlearnError(f"{name} must be positive, got {n}")
    if n_holdout < 0:
        raise FitUnlearnError(f"--n-holdout must be >= 0, got {n_holdout}")
    res = write_synth(out, SynthConfig(n_forget=n_forget, n_retain=n_retain, n_holdout=n_holdout, seed=seed))
    out_console.print(tables.synth_summary(res))


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="a JSONL file, a PCH .json file or a data directory")],
    max_doc_chars: MaxCharsOpt = 200_000,
):
    """Documents per domain and QA pairs, per split for a data directory."""
    from fit_unlearn.data.stats import data_stats

    out_console.print(tables.stats_table(data_stats(path, max_chars=max_doc_chars)))


@data_app.command("malicious")
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
    from fit_unlearn.data.documents import write_jsonl
    from fit_unlearn.data.malicious import malicious_requests
    from fit_unlearn.prepare import prepared_data

    if not PreparedDir(prepared).has_data():
        raise FitUnlearnError(f"{prepared}: not a prepared directory; run `fit-unlearn prepare` or pass --prepared")
    reqs = malicious_requests(prepared_data(prepared).forget, kind, n, seed)
    write_jsonl(reqs, out)
    out_console.print(tables.malicious_summary(len(reqs), kind, out))


@app.command("receipt")
def receipt_cmd(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    run: Annotated[Path, typer.Option(help="run directory")] = Path("fit_runs/run"),
):
    """Print what was done for one request: chunks dropped, layers, importance, objective, losses, time."""
    from fit_unlearn.engine.journal import request_events

    out_console.print(tables.receipt(request_events(run, request_id)))


@app.command("prepare")
def prepare_cmd(
    data: DataOpt = None,
    forget: ForgetOpt = None,
    retain: RetainOpt = None,
    holdout: HoldoutOpt = None,
    model: Annotated[
        str, typer.Option(help="base model: a local HF directory or 'default' (SmolLM2-135M-Instruct)")
    ] = _PREP.model,
    out: Annotated[Path, typer.Option(help="output directory")] = DEFAULT_PREPARED,
    n_forget: Annotated[int | None, typer.Option(help="use a seeded subset of this many forget documents")] = None,
    n_retain: Annotated[int | None, typer.Option(help="use a seeded subset of this many retain documents")] = None,
    seed: Annotated[int, typer.Option(help="seed of the subset and of training")] = 0,
    lr: Annotated[float, typer.Option(help="learning rate")] = _PREP.recipe.lr,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = _PREP.recipe.epochs,
    batch_size: Annotated[int, typer.Option(help="batch size")] = _PREP.recipe.batch_size,
    stop_at_acc: Annotated[
        float, typer.Option(help="stop when an epoch's training token accuracy reaches this (1 = never)")
    ] = _PREP.recipe.stop_at_train_acc or 1.0,
    no_qa: Annotated[bool, typer.Option("--no-qa", help="train on documents only, not their QA pairs")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    max_doc_chars: MaxCharsOpt = 200_000,
    force: Annotated[bool, typer.Option(help="retrain even if the output is up to date")] = False,
    replay: Annotated[int, typer.Option(help="real facts rehearsed by both models (0 = none)")] = _PREP.replay_n,
    freeze_embeddings: Annotated[
        bool, typer.Option(help="keep input embeddings / LM head frozen")
    ] = _PREP.freeze_embeddings,
    retain_eval_fraction: Annotated[
        float, typer.Option(help="fraction of the retain split held out for scoring utility (never an anchor)")
    ] = _PREP.retain_eval_fraction,
    retain_eval_ids: Annotated[
        Path | None,
        typer.Option(
            help="file of retain ids that form retain-eval (one per line or a JSON list); overrides the fraction"
        ),
    ] = None,
):
    """Fine-tune theta_0 (forget + retain) and the gold retain-only model (retain), same recipe."""
    from fit_unlearn.data.splits import read_ids
    from fit_unlearn.prepare import PrepareConfig, prepare
    from fit_unlearn.training import FinetuneConfig

    splits = _load(data, forget, retain, holdout, max_doc_chars).subset(n_forget, n_retain, seed)
    replay_n = max(0, replay)
    recipe = FinetuneConfig(
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        stop_at_train_acc=stop_at_acc if stop_at_acc < 1 else None,
    )
    cfg = PrepareConfig(
        model=model,
        device=device,
        dtype=dtype,
        recipe=recipe,
        train_on_qa=not no_qa,
        replay_n=replay_n,
        freeze_embeddings=freeze_embeddings,
        retain_eval_fraction=retain_eval_fraction,
        retain_eval_ids=tuple(read_ids(retain_eval_ids)) if retain_eval_ids is not None else None,
    )
    report = prepare(splits, out, cfg, force=force)
    out_console.print(tables.prepare_summary(report, out))


@app.command("eval")
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
    from fit_unlearn.evaluation import evaluate_prepared

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
    out = out or PreparedDir(prepared).eval_file(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    out_console.print(tables.eval_summary(res, out))


@app.command("run")
def run_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration")] = None,
    prepared: Annotated[Path | None, typer.Option(help="prepared directory (overrides the config)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory: journal, checkpoints, results")] = None,
    strategy: Annotated[str | None, typer.Option(help="sequential or fit")] = None,
    objective: Annotated[str | None, typer.Option(help="objective of the sequential strategy (ga, npo, ...)")] = None,
    requests: Annotated[Path | None, typer.Option(help="JSONL file of requests instead of the forget split")] = None,
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
):
    """Apply a stream of deletion requests: journaled, checkpointed, resumable, evaluated as it goes."""
    from fit_unlearn.engine import Engine, load_config

    if requests is not None and watch is not None:
        raise FitUnlearnError("give --requests or --watch, not both")
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
            "seed": seed,
            "device": device,
            "dtype": dtype,
        },
    )
    acc = None
    if distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        acc = Accelerator(cpu=cfg.device == "cpu")
    engine = Engine(cfg, resume=resume, accelerator=acc)
    try:
        results = engine.run()
    finally:
        engine.close()
    if acc is None or acc.is_main_process:
        out_console.print(tables.run_summary(results, cfg.out))


@app.command("demo")
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


attack_app = typer.Typer(no_args_is_help=True, help="Recovery attacks on an unlearned model.")
app.add_typer(attack_app, name="attack")
RunOpt = Annotated[Path, typer.Option(help="run directory of `fit-unlearn run` (its final model and forgotten docs)")]


@attack_app.command("quantize")
def attack_quantize(
    run: RunOpt = Path("fit_runs/run"),
    bits: Annotated[list[int], typer.Option(help="bit widths (repeat: --bits 8 --bits 4)")] = [8, 4],  # noqa: B006
    method: Annotated[str, typer.Option(help="auto (bitsandbytes on CUDA, quanto on CPU), quanto, bnb, rtn")] = "auto",
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option(help="results JSON (default: <run>/attack-quantize.json)")] = None,
):
    """Reload the unlearned weights in 8/4 bits; recovery = (F_q - F_unl) / (F_0 - F_unl), next to theta_0."""
    from fit_unlearn.attacks.quantize import quantize_run

    res = quantize_run(run, list(bits), method=method, device=device)
    out = out or RunDir(run).attack_file("quantize")
    out.write_text(json.dumps(res, indent=1))
    out_console.print(tables.quantize_summary(res, out))


@attack_app.command("relearn")
def attack_relearn(
    run: RunOpt = Path("fit_runs/run"),
    fraction: Annotated[float, typer.Option(help="fraction of the forgotten documents to relearn on")] = 0.1,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-5,
    epochs: Annotated[int, typer.Option(help="epochs over the relearning documents")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the relearning subset")] = 0,
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option(help="results JSON (default: <run>/attack-relearn.json)")] = None,
):
    """Fine-tune on a few forgotten documents; measure recovery on the other forgotten documents."""
    from fit_unlearn.attacks.relearn import relearn_run

    res = relearn_run(run, fraction=fraction, lr=lr, epochs=epochs, seed=seed, device=device)
    out = out or RunDir(run).attack_file("relearn")
    out.write_text(json.dumps(res, indent=1))
    out_console.print(tables.relearn_summary(res, out))


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    import click

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fit_unlearn").setLevel(logging.DEBUG if debug else logging.INFO)
    _quiet_libraries()
    cmd = typer.main.get_command(app)
    try:
        cmd.main(args=args, prog_name="fit-unlearn", standalone_mode=False)
    except FitUnlearnError as e:
        if debug:
            raise
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.print("aborted")
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        console.print(
            f"[red]internal error:[/red] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo: fit-unlearn's main job end to end, on the embedded default model (``fit-unlearn demo``).

    synthetic PCH data           <workdir>/fit_data/synth         written once (data.synth)
    -> theta_0, retain-only      <workdir>/fit_runs/prepared      prepare: nothing is trained again when cached
    -> FIT and a baseline        <workdir>/fit_runs/demo/runs/    bench.run_bench: one stream each, same seed
       (same requests, same order), evaluated every ``eval_every`` requests, then an int4 quantization attack
       on both final models
    -> the report                <workdir>/fit_runs/demo/report/  report.render_report (HTML + markdown + PNGs)

Each stage is the library call the commands make (``data synth``, ``prepare``, ``bench``, ``report``); each is
resumable, so a second ``fit-unlearn demo`` re-renders the report and trains nothing.  FIT is the bench's
``fit`` method (the library's FIT defaults with calibrated importance thresholds), so the demo follows FIT's
defaults wherever they go.  The sizes (6 requests, evaluated every 3) keep it within minutes on 2 CPU cores
(measured: docs/report.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from fit_unlearn.bench import BenchConfig, method_spec, run_bench
from fit_unlearn.data.synth import SynthConfig
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import BenchDir, ReportDir
from fit_unlearn.prepare import PrepareConfig
from fit_unlearn.schema import Section, format_validation_error

DEMO_DATA = Path("fit_data/synth")
DEMO_PREPARED = Path("fit_runs/prepared")
DEMO_BENCH = Path("fit_runs/demo")


class DemoConfig(Section):
    """The demo's sizes: small enough for 2 CPU cores, large enough to show a stream."""

    workdir: Path = Path(".")
    """Where the data (``fit_data/synth``), the prepared models and the demo's runs are written."""
    requests: int = Field(default=6, ge=1)
    """Deletion requests unlearned by each method."""
    eval_every: int = Field(default=3, ge=1)
    """Evaluate every N requests (and after the last)."""
    baseline: str = "graddiff"
    """The method FIT is compared with (a bench method: ``graddiff``, ``npo``, ``ga``, ...)."""
    seed: int = 0
    """Orders the stream and seeds every update (both methods see the same requests)."""
    attack_bits: int | None = 4
    """Quantization attack on both final models at this bit width (4 or 8; ``null``: none)."""
    device: str = "cpu"
    """Torch device of preparation and runs."""
    out: Path | None = None
    """The demo's bench directory (runs and report); default ``<workdir>/fit_runs/demo``."""

    @field_validator("baseline")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            method_spec(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if v == "fit":
            raise ValueError("the baseline must be another method than fit")
        return v

    @field_validator("attack_bits")
    @classmethod
    def _bits(cls, v: int | None) -> int | None:
        if v not in (None, 4, 8):
            raise ValueError(f"must be 4, 8 or null, got {v}")
        return v

    @property
    def methods(self) -> tuple[str, str]:
        return ("fit", self.baseline)

    def bench(self, prepared: Path, overrides: dict | None = None) -> BenchConfig:
        """The bench the demo runs: FIT and the baseline on one seed (``overrides``: run configuration merged
        into both methods')."""
        return BenchConfig(
            prepared=prepared,
            methods=self.methods,
            seeds=(self.seed,),
            requests=self.requests,
            eval_every=self.eval_every,
            attacks=(f"quantize{self.attack_bits}",) if self.attack_bits else (),
            device=self.device,
            overrides=overrides or {},
        )


def demo_config(**fields) -> DemoConfig:
    """:class:`DemoConfig` from keyword arguments, a bad value raised as a one-line ``ConfigError``."""
    try:
        return DemoConfig(**fields)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "demo")) from None


def _refuse_foreign_prepared(prepared: Path, splits, prep_cfg: PrepareConfig) -> None:
    """The demo shares ``fit_runs/prepared`` with ``fit-unlearn prepare``'s default, so that the step-by-step
    pipeline reuses its models; models prepared there from other data or another base model are the user's
    work, and preparing the demo's set would train over them: refuse, and say how to keep both."""
    from fit_unlearn.prepare import prepared_from_other

    other = prepared_from_other(splits, prepared, prep_cfg)
    if other:
        raise ConfigError(
            f"{prepared} holds models prepared from {' and '.join(other)} than the demo's; the demo would train "
            "over them: run it in a new folder with --workdir DIR"
        )


def run_demo(
    cfg: DemoConfig = DemoConfig(),
    *,
    prepare_cfg: PrepareConfig | None = None,
    synth: SynthConfig | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    say: Callable[[object], None] | None = None,
) -> dict:
    """Run the demo (module docstring); returns ``{"report": report.html, "summary": the report's data,
    "bench": the bench directory}``.  ``prepare_cfg`` / ``synth`` replace the default model and data, and
    ``overrides`` is merged into both runs' configuration (tests use a tiny model and a short recipe); ``say``
    receives what to show between the stages (rich renderables)."""
    from fit_unlearn.data.sources import load_documents
    from fit_unlearn.data.synth import write_synth
    from fit_unlearn.prepare import prepare
    from fit_unlearn.report import render_report, tables

    say = say or (lambda _: None)
    # absolute: the runs record the prepared directory's path, and a resume must find the same one from any cwd
    workdir = cfg.workdir.resolve()
    data, prepared = workdir / DEMO_DATA, workdir / DEMO_PREPARED
    bench = BenchDir((cfg.out or workdir / DEMO_BENCH).resolve())
    if not (data / "forget.jsonl").exists():
        say(tables.line("[bold]1/4 data[/bold]: synthetic PCH documents"))
        say(tables.synth_summary(write_synth(data, synth or SynthConfig())))
    say(tables.line(f"[bold]2/4 prepare[/bold]: theta_0 and the retain-only model in {prepared} (cached once trained)"))
    splits, prep_cfg = load_documents(data), prepare_cfg or PrepareConfig(device=cfg.device)
    _refuse_foreign_prepared(prepared, splits, prep_cfg)
    report = prepare(splits, prepared, prep_cfg, progress=progress)
    say(tables.prepare_summary(report, prepared))
    say(
        tables.line(
            f"[bold]3/4 unlearn[/bold]: {cfg.requests} deletion requests with {' and '.join(cfg.methods)} (seed "
            f"{cfg.seed}), evaluated every {cfg.eval_every}"
            + (f", then an int{cfg.attack_bits} quantization attack" if cfg.attack_bits else "")
        )
    )
    command = (
        f"fit-unlearn demo --requests {cfg.requests} --eval-every {cfg.eval_every} --baseline {cfg.baseline} "
        f"--seed {cfg.seed}"
    )
    run_bench(
        cfg.bench(prepared, overrides),
        bench,
        command=command,
        progress=progress,
        on_run=lambda i: say(tables.bench_run_line(i)),
    )
    say(tables.line(f"[bold]4/4 report[/bold]: {bench.report}"))
    out = render_report([bench.root], bench.report)
    summary = json.loads(ReportDir(bench.report).data.read_text())
    return {"report": out, "summary": summary, "bench": bench.root}


__all__ = ["DemoConfig", "demo_config", "run_demo"]

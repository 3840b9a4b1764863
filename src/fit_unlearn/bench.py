"""Benchmarks as a library: methods x seeds on one prepared data set, one resumable run directory each, all
in one bench directory (``layout.BenchDir``) that :func:`fit_unlearn.report.render_report` renders.

    for method in methods:
        for seed in seeds:
            run = <bench>/runs/<method>-s<seed>
            results.json there (finished)  -> skipped
            journal there (stopped, killed) -> Engine(config, resume=True).run()   (exactly once, bit-identical)
            nothing there                   -> Engine(config).run()

A method is a name of :data:`METHODS`: a few overrides of the library's run defaults (so FIT is whatever
FIT's defaults are), with optional suffixes (:data:`SUFFIXES`, any order): ``fit-noF`` is FIT without its
filter, ``graddiff-doc`` sends document-only requests, ``npo-loop`` turns the closed loop on.  For a given
seed every method sees the same requests in the same order (``stream.order_seed = seed``), and the seed
also seeds every update.  ``bench.json`` records the settings, the runs, the command, the machine and the
wall time each run took; running the bench again with the same settings continues it, and new methods or
seeds are added to it.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import BenchDir, PreparedDir, RunDir
from fit_unlearn.prepare import PrepareConfig
from fit_unlearn.provenance import provenance
from fit_unlearn.schema import Section, format_validation_error

#: method name -> overrides of the run configuration's defaults (``engine.config.RunConfig``)
METHODS: dict[str, dict] = {
    "ga": {"strategy": {"name": "sequential", "objective": "ga"}},
    "graddiff": {"strategy": {"name": "sequential", "objective": "graddiff"}},
    "npo": {"strategy": {"name": "sequential", "objective": "npo"}},
    # FIT with its defaults (token-keyed edits under the closed loop, docs/fit.md) and its importance thresholds
    # calibrated on the first 10 requests (the fixed thresholds 12 / 6 of the reference code are for its 7B models)
    "fit": {"strategy": {"name": "fit", "fit": {"importance": {"calibrate": True, "calibration_size": 10}}}},
    # the paper's recipe: every weight of T's layers, 3 epochs at 3e-5 per request, no loop, the whole text
    # (`fit` before session 21; `fit-paper-loop`: the same units under the closed loop, its plain mean loss uncapped)
    "fit-paper": {
        "strategy": {
            "name": "fit",
            "fit": {
                "importance": {"calibrate": True, "calibration_size": 10},
                "rows_objective": None,
                "filter": {"unit": "chars"},
            },
        },
        "update": {"trainable": "full", "template_max_df": None},
        "loop": {"enabled": False, "check_every": 1, "cap_quantile": None, "check_ahead": None, "stall_steps": None},
    },
    # ablations of FIT's default: I's choice for row edits too, and T over rows (layers.rows_mass 0.9)
    "fit-rowsI": {
        "strategy": {
            "name": "fit",
            "fit": {"importance": {"calibrate": True, "calibration_size": 10}, "rows_objective": None},
        }
    },
    "fit-rowsT": {
        "strategy": {
            "name": "fit",
            "fit": {"importance": {"calibrate": True, "calibration_size": 10}, "layers": {"rows_mass": 0.9}},
        }
    },
    # extension: layers ranked relative to their retain profile (see docs/fit.md)
    "fit-relative": {
        "strategy": {
            "name": "fit",
            "fit": {"importance": {"calibrate": True, "calibration_size": 10}, "layers": {"relative": True}},
        }
    },
    # closed-loop candidates (benchmarks/README.md, "Closed loop"): GradDiff on the last 8 of the default
    # model's 30 layers, the template left out (tokens in > 20% of the non-forget documents); use with -loop
    "graddiff-late-facts": {
        "strategy": {"name": "sequential", "objective": "graddiff", "trainable": list(range(22, 30))},
        "update": {"template_max_df": 0.2},
    },
    "graddiff-late-facts-noguard": {
        "strategy": {"name": "sequential", "objective": "graddiff", "trainable": list(range(22, 30))},
        "update": {"template_max_df": 0.2},
        "loop": {"guard": {"enabled": False}},
    },
    # the same with NPO: no retain anchor, so the guard's repair pool is damaged like the documents it guards
    "npo-late-facts": {
        "strategy": {"name": "sequential", "objective": "npo", "trainable": list(range(22, 30))},
        "update": {"template_max_df": 0.2},
    },
    # variant: every importance bucket keeps a retain CE anchor (NPO-RT / RL + CE(retain)) instead of KL
    "fit-rt": {
        "strategy": {
            "name": "fit",
            "fit": {
                "importance": {
                    "calibrate": True,
                    "calibration_size": 10,
                    "objectives": ["npo_rt", "npo_rt", "rl"],
                    "objective_params": {"rl": {"retain_weight": 1.0}},
                }
            },
        }
    },
}


#: the learning rate of the ``-lora`` methods: 10x the reference recipe's 3e-5 for full updates
LORA_LR = 3e-4


def deep_merge(a: dict, b: dict) -> dict:
    """``a`` with ``b`` merged in, section by section (``b`` wins)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fit_part_off(part: str) -> Callable[[dict], dict]:
    def change(spec: dict) -> dict:
        if spec["strategy"].get("name") != "fit":
            raise ConfigError(f"-no{part[0].upper()} switches off a part of FIT; the method is not FIT")
        fit = {**spec["strategy"].get("fit", {}), part: False}
        return {**spec, "strategy": {**spec["strategy"], "fit": fit}}

    return change


#: suffixes that modify a method: document-only requests, closed loop forced on / off (engine/loop.py), and
#: the ablations: FIT without its filter (F), importance (I), layer attribution (T), the loop without its
#: stop at the non-member level (the open-loop recipe, guard kept) or without its guard
SUFFIXES: dict[str, Callable[[dict], dict]] = {
    "-noF": _fit_part_off("filter"),
    "-noI": _fit_part_off("importance"),
    "-noT": _fit_part_off("layers"),
    "-nostop": lambda spec: deep_merge(spec, {"loop": {"enabled": True, "stop": False}}),
    "-noguard": lambda spec: deep_merge(spec, {"loop": {"guard": {"enabled": False}}}),
    "-doc": lambda spec: {**spec, "strategy": {**spec["strategy"], "include_qa": False}},
    "-loop": lambda spec: {**spec, "loop": {**spec.get("loop", {}), "enabled": True}},
    "-open": lambda spec: {**spec, "loop": {**spec.get("loop", {}), "enabled": False}},
    # LoRA trainables (engine/adapters.py): rank 8 on every linear layer of the planned blocks, at ten times the
    # full-update learning rate (the usual LoRA ratio), merged after each request, or kept one per request
    "-lora": lambda spec: deep_merge(spec, {"update": {"trainable": "lora", "lr": LORA_LR}}),
    "-stack": lambda spec: _stacked(spec),
    # token-keyed edits (update.trainable: rows): the input-embedding rows of the request's own tokens, trained
    # and measured on its facts (the template left out, as the closed-loop candidates above); under the closed
    # loop the request's loss is checked every second step (benchmarks/README.md, "Session 10")
    "-rows": lambda spec: deep_merge(
        spec, {"update": {"trainable": "rows", "template_max_df": 0.2}, "loop": {"check_every": 2}}
    ),
}


def _stacked(spec: dict) -> dict:
    if spec.get("update", {}).get("trainable") != "lora":
        raise ConfigError("-stack keeps one LoRA adapter per request: put it after -lora (e.g. fit-lora-stack)")
    return deep_merge(spec, {"update": {"lora": {"mode": "stack"}}})


def method_spec(name: str) -> dict:
    """The configuration overrides of a method name; suffixes (any order) modify it: ``-doc`` sends the
    document alone, ``-loop`` / ``-open`` force the closed loop on / off, ``-noF`` / ``-noI`` / ``-noT`` switch
    off a part of FIT, ``-nostop`` / ``-noguard`` a part of the closed loop, ``-lora`` trains a LoRA adapter per
    request (merged after it; ``-lora-stack``: kept, one per request)."""
    for suffix, change in SUFFIXES.items():
        if name.endswith(suffix) and name != suffix:
            return change(method_spec(name.removesuffix(suffix)))
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown method {name!r}; {hint}known: {', '.join(METHODS)} (each also with the suffixes "
            f"{', '.join(SUFFIXES)})"
        )
    return METHODS[name]


class BenchConfig(Section):
    """A bench: which methods, which seeds, how many requests, how often evaluated."""

    prepared: Path = Path("fit_runs/prepared")
    """The prepared directory every run unlearns from (``fit-unlearn prepare``)."""
    methods: tuple[str, ...] = ("fit", "graddiff", "npo")
    """Method names (``fit_unlearn.bench.METHODS``, with optional suffixes such as ``-doc``)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: each one orders the stream and seeds the updates; every method sees the same requests per seed."""
    requests: int | None = Field(default=20, ge=1)
    """Requests per run (``stream.limit``; ``null``: the whole prepared forget split)."""
    eval_every: int | None = Field(default=10, ge=1)
    """Evaluate every N requests (and at the end)."""
    checkpoint_every: int | None = Field(default=None, ge=1)
    """Checkpoint every N requests (``null``: at every evaluation); a killed run resumes from the last one."""
    attacks: tuple[Literal["quantize8", "quantize4", "relearn"], ...] = ()
    """Recovery attacks on each run's final model."""
    model: str = "theta0"
    """The model unlearned: ``theta0`` of the prepared directory, or a model directory."""
    device: str = "cpu"
    """Torch device of every run."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Weights' dtype of every run."""
    overrides: dict = Field(default_factory=dict)
    """Run configuration merged into every method's (e.g. ``{"update": {"lr": 1e-5}}``)."""
    retrain_reference: bool = False
    """Before the runs, retrain theta_0's recipe without the documents each seed's stream has forgotten at each
    evaluation before the end (``fit_unlearn.retrain``, a fine-tuning run each), so that every evaluation also
    reports F.D. against exact unlearning (``forget_degree_retrain``).  Not a setting the runs share: adding it
    to a bench only adds the reference to the evaluations still to come."""

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one method")
        if len(set(v)) != len(v):
            raise ValueError(f"a method is listed twice: {', '.join(v)}")
        for name in v:
            try:
                method_spec(name)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"a seed is listed twice: {', '.join(map(str, v))}")
        return v

    def run_config(self, method: str, seed: int, out: str | Path):
        """The validated run configuration of one method and seed, its run directory ``out``."""
        from fit_unlearn.engine.config import build_config  # the engine imports torch: only when running

        every = self.checkpoint_every or self.eval_every or self.requests or 10
        base = {
            "prepared": str(self.prepared),
            "model": self.model,
            "out": str(out),
            "seed": seed,
            "device": self.device,
            "dtype": self.dtype,
            "stream": {"order_seed": seed, "limit": self.requests},
            "eval": {"every": self.eval_every, "attacks": list(self.attacks)},
            # one checkpoint on disk per run (the last; the attacks and a resume need no other)
            "checkpoint": {"every": every, "keep": 1},
        }
        owned = [k for k in ("prepared", "model", "out", "seed", "device", "dtype") if k in self.overrides]
        owned += [f"stream.{k}" for k in ("order_seed", "limit") if k in self.overrides.get("stream", {})]
        if owned:  # the bench sets these per run: overriding them would make seeds identical or runs collide
            raise ConfigError(
                f"--set: {', '.join(owned)} belong to the bench (use --seeds, --requests, --device, --dtype, "
                "--prepared or --out)"
            )
        return build_config(deep_merge(deep_merge(base, method_spec(method)), self.overrides), f"method {method}")

    def settings(self) -> dict:
        """What every run of the bench shares (a bench directory keeps them; methods and seeds may grow)."""
        return self.model_dump(mode="json", exclude={"methods", "seeds", "retrain_reference"})


def bench_config(**fields) -> BenchConfig:
    """:class:`BenchConfig` from keyword arguments, a bad value raised as one-line ``ConfigError``."""
    try:
        return BenchConfig(**fields)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "bench")) from None


def prepare_bench_data(
    data: str | Path,
    out: str | Path | BenchDir,
    cfg: PrepareConfig = PrepareConfig(),
    *,
    n_forget: int | None = None,
    n_retain: int | None = None,
    progress: bool = True,
    qa=None,
) -> dict:
    """Prepare a data directory (synthetic JSONL, PCH layout or a Hugging Face QA data set read with ``qa``, a
    :class:`~fit_unlearn.data.hf.QADatasetConfig`; a seeded subset of ``n_forget`` / ``n_retain`` documents) into
    ``<bench>/prepared``; nothing is trained again when it is up to date.  Returns the prepare report."""
    from fit_unlearn.data.sources import load_documents
    from fit_unlearn.prepare import prepare, prepared_from_other

    bench = BenchDir.of(out)
    splits = load_documents(data, qa=qa).subset(n_forget, n_retain, cfg.recipe.seed)
    other = prepared_from_other(splits, bench.prepared, cfg)
    if other and bench.manifest.exists():  # the bench's runs rest on the models prepared there
        raise ConfigError(
            f"{bench.root}: its runs were made on models prepared from {' and '.join(other)} (--data, --n-forget, "
            "--n-retain, the split options or --base-model changed); preparing again would pull them from under "
            "the runs: give a new --out"
        )
    return prepare(splits, bench.prepared, cfg, progress=progress)


def read_manifest(bench: str | Path | BenchDir) -> dict:
    """``bench.json`` of a bench directory."""
    path = BenchDir.of(bench).manifest
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: not a bench directory (no bench.json); run `fit-unlearn bench`") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); the bench directory is damaged") from None


def _write_manifest(bench: BenchDir, manifest: dict) -> None:
    bench.root.mkdir(parents=True, exist_ok=True)
    tmp = bench.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, bench.manifest)


def _open_manifest(bench: BenchDir, cfg: BenchConfig, command: str | None) -> dict:
    """The bench's manifest with this invocation's methods and seeds added; refused if the shared settings
    differ from those the bench was started with."""
    settings = cfg.settings()
    if bench.is_bench():
        manifest = read_manifest(bench)
        old = manifest["settings"]
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            said = ", ".join(f"{k} {old.get(k)!r} (now {settings.get(k)!r})" for k in diff)
            raise ConfigError(
                f"{bench.root} is a bench started with other settings: {said}; rerun with the same settings "
                "to continue it, or choose another --out"
            )
    else:
        if bench.root.exists() and any(bench.root.iterdir()) and not bench.prepared.exists():
            raise ConfigError(f"{bench.root} exists and is not a bench directory; choose another --out")
        manifest = {"settings": settings, "runs": [], "created": provenance()["created"], "sessions": []}
    known = {(r["method"], r["seed"]) for r in manifest["runs"]}
    for method in cfg.methods:
        for seed in cfg.seeds:
            if (method, seed) not in known:
                run = bench.run(method, seed)
                manifest["runs"].append(
                    {"method": method, "seed": seed, "dir": str(run.root.relative_to(bench.root)), "wall_seconds": 0.0}
                )
    manifest["sessions"].append({"command": command, **provenance(prepared=str(cfg.prepared))})
    return manifest


def _same_settings(run, run_cfg) -> None:
    """A finished run is kept only if it was made with the configuration the bench would give it now (the
    method table or a default may have changed since): otherwise its numbers would be averaged with runs made
    another way."""
    from fit_unlearn.engine.journal import Journal

    start = next((e for e in Journal(run.journal, writer=False).events if e["event"] == "start"), None)
    diff = run_cfg.diff(start["config"]) if start is not None else ["(no start record)"]
    if diff:
        raise ConfigError(
            f"{run.root}: finished with other settings than this bench gives it now ({', '.join(diff[:6])}); "
            "give a new --out (or move that run away to run it again)"
        )


def _build_retrain_references(prepared: Path, configs: list, device: str, progress: bool) -> None:
    """The exact-unlearning reference of every evaluation still to come before the end of the streams of ``configs``
    (run configurations, validated): their stream order, length and evaluation schedule, each set built once."""
    from fit_unlearn.data.prepared import prepared_data
    from fit_unlearn.engine.journal import Journal
    from fit_unlearn.retrain import build_retrain_reference, stream_prefixes

    n_forget = len(prepared_data(prepared).forget)
    sets: dict[frozenset, list[str]] = {}
    for c in configs:
        if c.stream.source != "forget":
            raise ConfigError(
                f"--retrain-reference needs the prepared forget split as the stream, not {c.stream.source!r} (its "
                "documents are what is retrained without): drop stream.source from --set, or the reference"
            )
        n = min(c.stream.limit or n_forget, n_forget)
        journal = RunDir(c.out).journal  # a resumed run keeps its evaluations up to its last checkpoint
        kept = Journal(journal, writer=False).kept_evaluations() if journal.exists() else set()
        due = [t for t in c.eval.checkpoints(n) if t not in kept]
        for forgotten in stream_prefixes(prepared, c.stream.order_seed, due):
            sets.setdefault(frozenset(forgotten), forgotten)
    for forgotten in sets.values():
        build_retrain_reference(prepared, forgotten, device=device, progress=progress)


def run_bench(
    cfg: BenchConfig,
    out: str | Path | BenchDir,
    *,
    command: str | None = None,
    progress: bool = True,
    on_run: Callable[[dict], None] | None = None,
) -> dict:
    """Run (or continue) every method x seed of ``cfg`` into the bench directory ``out``; returns its
    manifest.  ``on_run`` is told about each run before it starts: ``{method, seed, dir, status, index, of}``
    with status ``finished`` (skipped), ``resumed`` or ``started``."""
    from fit_unlearn.engine import Engine  # imports torch

    bench = BenchDir.of(out)
    if not PreparedDir(cfg.prepared).is_prepared():
        raise ConfigError(
            f"prepared: {cfg.prepared} is not a prepared directory (run `fit-unlearn prepare`, or give the "
            "bench --data DIR to prepare one)"
        )
    manifest = _open_manifest(bench, cfg, command)
    todo = [r for r in manifest["runs"] if r["method"] in cfg.methods and r["seed"] in cfg.seeds]
    # every run's configuration is built (validated) before the manifest is written: a bad --set must not
    # leave a bench that refuses the corrected command as "other settings"
    configs = [cfg.run_config(r["method"], r["seed"], bench.run(r["method"], r["seed"]).root) for r in todo]
    _write_manifest(bench, manifest)
    if cfg.retrain_reference:
        unfinished = [c for c in configs if not RunDir(c.out).results.exists()]
        _build_retrain_references(cfg.prepared, unfinished, cfg.device, progress)
    for i, (entry, run_cfg) in enumerate(zip(todo, configs, strict=True)):
        run = bench.run(entry["method"], entry["seed"])
        status = "finished" if run.results.exists() else "resumed" if run.is_run() else "started"
        if status == "finished":
            _same_settings(run, run_cfg)
        if on_run is not None:
            on_run({**entry, "status": status, "index": i, "of": len(todo)})
        if status == "finished":
            continue
        t0 = time.perf_counter()
        engine = Engine(run_cfg, resume=status == "resumed", progress=progress)
        try:
            engine.run()
        finally:
            engine.close()
            entry["wall_seconds"] = entry.get("wall_seconds", 0.0) + time.perf_counter() - t0
            _write_manifest(bench, manifest)
    manifest["finished"] = provenance()["created"]
    _write_manifest(bench, manifest)
    return manifest


__all__ = [
    "METHODS",
    "SUFFIXES",
    "BenchConfig",
    "bench_config",
    "deep_merge",
    "method_spec",
    "prepare_bench_data",
    "read_manifest",
    "run_bench",
]

"""The directory layouts fit-unlearn writes.  Nothing else in the library spells their file names.

A **prepared directory** (``fit-unlearn prepare --out``)::

    data/{forget,retain,holdout}.jsonl   the exact documents used (with their QA pairs and paraphrases)
    split.json                           retain-train / retain-eval division of the retain split
    theta0/  retain_only/                the two gold models
    recipe.json  stages.json  prepare.json  reference.json
    retrain/<key>/{model files, retrain.json}  exact-unlearning references (``fit_unlearn.retrain``): theta_0's
                                         recipe without the documents forgotten by step t of a stream

A **run directory** (``fit-unlearn run --out``)::

    journal.jsonl                        append-only, fsync'd event log
    checkpoints/ckpt-NNNNNN/{model/,strategy/,state.json,rng.pt}
    evals/eval-tNNNNN.json               per-item values of each evaluation
    results.json  attack-<kind>.json

A **bench directory** (``fit-unlearn bench --out``)::

    bench.json                           settings, the runs (method, seed, directory), command, machine
    prepared/                            the prepared data, when the bench prepared it (``--data``)
    runs/<method>-s<seed>/               one run directory per method and seed
    report/                              the report ``fit-unlearn bench`` renders at its end

A **report directory** (``fit-unlearn report --out``)::

    report.md  report.html               the report (the PNG plots beside it)
    report.json                          the data it was rendered from
    <plot>.png
"""

from __future__ import annotations

from pathlib import Path

#: the gold models of a prepared directory, by name
GOLD_MODELS = ("theta0", "retain_only")


class PreparedDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PreparedDir({str(self.root)!r})"

    @classmethod
    def of(cls, where: str | Path | PreparedDir) -> PreparedDir:
        return where if isinstance(where, PreparedDir) else cls(where)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def data_file(self, split: str) -> Path:
        return self.data / f"{split}.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def reference(self) -> Path:
        return self.root / "reference.json"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.json"

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    @property
    def report(self) -> Path:
        return self.root / "prepare.json"

    @property
    def retrain(self) -> Path:
        return self.root / "retrain"

    def retrain_entry(self, key: str) -> Path:
        """One exact-unlearning reference: its model files and ``retrain.json``."""
        return self.retrain / key

    def model(self, name: str) -> Path:
        if name not in GOLD_MODELS:
            raise ValueError(f"{name!r} is not a gold model of a prepared directory ({', '.join(GOLD_MODELS)})")
        return self.root / name

    def resolve_model(self, name_or_path: str | Path) -> Path:
        """``theta0`` / ``retain_only`` of this directory, or any other model directory as given."""
        return self.model(str(name_or_path)) if str(name_or_path) in GOLD_MODELS else Path(name_or_path)

    def eval_file(self, model: str | Path) -> Path:
        return self.root / f"eval-{Path(model).name}.json"

    def has_data(self) -> bool:
        return self.data.is_dir()

    def is_prepared(self) -> bool:
        return self.has_data() and self.reference.exists()


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @classmethod
    def of(cls, where: str | Path | RunDir) -> RunDir:
        return where if isinstance(where, RunDir) else cls(where)

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, position: int) -> CheckpointDir:
        return CheckpointDir(self.checkpoints / f"ckpt-{position:06d}")

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    def eval_file(self, t: int) -> Path:
        return self.evals / f"eval-t{t:05d}.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def attack_file(self, kind: str) -> Path:
        return self.root / f"attack-{kind}.json"

    def is_run(self) -> bool:
        return self.journal.is_file()


class CheckpointDir:
    """One checkpoint: ``model/`` (weights + tokenizer), ``strategy/``, ``state.json``, ``rng.pt``, and with
    ``update.lora.mode: stack`` ``adapters/`` (one PEFT folder per request, ``model/`` holds them merged)."""

    GLOB = "ckpt-*"
    TEMP_GLOB = ".ckpt-*"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of_model(cls, model_dir: str | Path) -> CheckpointDir:
        """The checkpoint that holds ``model_dir`` (a run's ``final_model``)."""
        return cls(Path(model_dir).parent)

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def strategy(self) -> Path:
        return self.root / "strategy"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def rng(self) -> Path:
        return self.root / "rng.pt"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"


class BenchDir:
    """Methods x seeds, one run directory each (``fit_unlearn.bench``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BenchDir({str(self.root)!r})"

    @classmethod
    def of(cls, where: str | Path | BenchDir) -> BenchDir:
        return where if isinstance(where, BenchDir) else cls(where)

    @property
    def manifest(self) -> Path:
        return self.root / "bench.json"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, method: str, seed: int) -> RunDir:
        return RunDir(self.runs / f"{method}-s{seed}")

    @property
    def report(self) -> Path:
        return self.root / "report"

    def is_bench(self) -> bool:
        return self.manifest.is_file()


class ReportDir:
    """What ``fit_unlearn.report.render_report`` writes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ReportDir({str(self.root)!r})"

    @property
    def markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def data(self) -> Path:
        return self.root / "report.json"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"

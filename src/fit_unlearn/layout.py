"""The directory layouts fit-unlearn writes.  Nothing else in the library spells their file names.

A **prepared directory** (``fit-unlearn prepare --out``)::

    data/{forget,retain,holdout}.jsonl   the exact documents used (with their QA pairs and paraphrases)
    split.json                           retain-train / retain-eval division of the retain split
    theta0/  retain_only/                the two gold models
    recipe.json  stages.json  prepare.json  reference.json

A **run directory** (``fit-unlearn run --out``)::

    journal.jsonl                        append-only, fsync'd event log
    checkpoints/ckpt-NNNNNN/{model/,strategy/,state.json,rng.pt}
    evals/eval-tNNNNN.json               per-item values of each evaluation
    results.json  attack-<kind>.json
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


class CheckpointDir:
    """One checkpoint: ``model/`` (weights + tokenizer), ``strategy/``, ``state.json``, ``rng.pt``."""

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

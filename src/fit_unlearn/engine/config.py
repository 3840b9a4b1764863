"""Typed run configuration: one YAML file (or CLI flags), validated before any work starts."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from fit_unlearn.data.hf import QADatasetConfig
from fit_unlearn.engine.adapters import LoraSection
from fit_unlearn.engine.loop import LoopConfig
from fit_unlearn.engine.rows import RowsSection
from fit_unlearn.engine.update import UpdateConfig
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import OBJECTIVES, Objective, resolve_objective
from fit_unlearn.prepare import PrepareConfig
from fit_unlearn.schema import Section, format_validation_error, markdown_table
from fit_unlearn.strategies import STRATEGIES, Strategy, get_strategy
from fit_unlearn.strategies.fit.config import FitOptions


class StreamConfig(Section):
    """Where deletion requests come from."""

    source: str = "forget"
    """``forget``: the prepared forget split; a JSONL file of requests; a Hugging Face QA data set (its
    ``dataset.forget`` split, or one split's parquet / JSON file or ``save_to_disk`` directory; grouped as
    ``dataset`` says); or ``watch:DIR`` (a folder of JSONL files, read as they appear)."""
    order_seed: int | None = 0
    """Seed of the permutation of the forget split (``null``: file order)."""
    limit: int | None = Field(default=None, ge=1)
    """Stop after this many stream items."""
    max_request_chars: int = Field(default=20_000, ge=1)
    """Longer requests are refused (or skipped, see ``on_bad_request``)."""
    on_bad_request: Literal["stop", "skip"] = "stop"
    """What a malformed request does: stop the run with an error, or skip it (journaled)."""
    watch_idle_exit: float | None = Field(default=5.0, ge=0)
    """Watch mode: exit after this many idle seconds (``null``: watch for ever)."""
    dataset: QADatasetConfig = QADatasetConfig()
    """When ``source`` is a Hugging Face QA data set: which split is streamed (``forget``; ``retain`` and
    ``holdout`` are not read by a stream) and how its rows are grouped into requests.  Give the grouping
    ``prepare`` used: the requests are then the prepared documents (same ids), evaluated with their paraphrases."""


class StrategyConfig(Section):
    """Which strategy plans each request, with which objective, on which parameters."""

    name: str = "sequential"
    """A registered strategy: ``sequential`` (one fixed objective) or ``fit``."""
    objective: str = "npo"
    """A registered objective (docs/config.md lists them with their parameters); FIT's fixed objective when
    its importance part is off."""
    objective_params: dict = Field(default_factory=dict)
    """Parameters of ``objective`` (see its config class), validated at load."""
    trainable: Literal["all"] | list[int] = "all"
    """Decoder layers trained (``all``, or a list of indices); FIT's layer attribution overrides it."""
    include_qa: bool = True
    """Unlearn the request's QA pairs together with its text (false: document text only)."""
    fit: FitOptions = FitOptions()
    """FIT's options (only with ``name: fit``)."""

    _objective: Objective = PrivateAttr()

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        try:
            get_strategy(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _resolve(self):
        try:
            self._objective = resolve_objective(self.objective, self.objective_params)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        section = get_strategy(self.name).options_section
        for other in _OPTION_SECTIONS - {section}:
            if getattr(self, other) != type(self).model_fields[other].default:
                raise ValueError(f"the {other!r} options are for strategy {other!r}; strategy {self.name!r} takes none")
        return self

    @property
    def resolved_objective(self) -> Objective:
        """``objective`` with its typed parameters, resolved once at load."""
        return self._objective

    def build(self, device: str = "cpu") -> Strategy:
        """The configured strategy, built with the resolved objective and its typed options."""
        cls = get_strategy(self.name)
        options = {"options": getattr(self, cls.options_section)} if cls.options_section else {}
        return cls(self._objective, trainable=self.trainable, include_qa=self.include_qa, device=device, **options)


#: sections of StrategyConfig that hold one strategy's options
_OPTION_SECTIONS = {"fit"}


class EvalSection(Section):
    """When and how the stream is evaluated (docs/metrics.md), and the recovery attacks at its end."""

    every: int | None = Field(default=20, ge=1)
    """Evaluate after every N applied requests (``null``: only at the end)."""
    at_end: bool = True
    """Evaluate once more after the last request."""

    def due(self, t: int) -> bool:
        """Whether the stream is evaluated after its t-th applied request (besides the end, ``at_end``)."""
        return bool(self.every and t and t % self.every == 0)

    def checkpoints(self, n: int) -> list[int]:
        """Every t a stream that applies ``n`` requests is evaluated at."""
        return [t for t in range(1, n + 1) if self.due(t) or (self.at_end and t == n)]

    batch_size: int = Field(default=16, ge=1)
    """Sequences per scoring batch."""
    T: int | None = Field(default=None, ge=1)
    """T of the references: the forget set's size (default: the prepared forget split; never ``stream.limit``)."""
    downstream: list[str] = Field(default_factory=list)
    """lm-eval tasks run at every evaluation."""
    downstream_limit: int | None = Field(default=None, ge=1)
    """Items per downstream task (``null``: all)."""
    tasks_dir: Path | None = None
    """A folder of extra lm-eval YAML tasks."""
    attacks: list[Literal["quantize8", "quantize4", "relearn"]] = Field(default_factory=list)
    """Recovery attacks run once at the end of the stream."""
    quantize_method: Literal["auto", "quanto", "bnb", "rtn"] = "auto"
    """Quantization backend of the quantize attacks (``auto``: the best one available on the device)."""
    quantize_embeddings: bool | None = None
    """The quantize attacks also round the token embeddings and the output layer (``fit-unlearn attack quantize
    --embeddings``; quanto or rtn).  ``null``: when the run edits embedding rows (``update.trainable: rows``), whose
    edits live only there; otherwise not, as transformers and quanto load a model."""
    relearn_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Fraction of the forgotten documents the relearning attack fine-tunes on."""
    relearn_lr: float = Field(default=1e-5, gt=0)
    """Learning rate of the relearning attack."""
    relearn_epochs: int = Field(default=3, ge=1)
    """Epochs of the relearning attack."""


class CheckpointSection(Section):
    """How often the model and the strategy's state are saved (resume starts from the last one)."""

    every: int = Field(default=10, ge=1)
    """Checkpoint after every N stream items."""
    keep: int = Field(default=2, ge=1)
    """Checkpoints kept on disk (older ones are deleted once a newer one is journaled)."""


class RunConfig(Section):
    """A continual unlearning run: ``fit-unlearn run --config FILE`` (YAML) or flags; ``examples/*.yaml``."""

    prepared: Path = Path("fit_runs/prepared")
    """The prepared directory (``fit-unlearn prepare``): data, split, theta_0, the gold references."""
    model: str = "theta0"
    """The model unlearned: ``theta0`` of the prepared directory, or a model directory."""
    out: Path = Path("fit_runs/run")
    """The run directory: journal, checkpoints, evaluations, results.json."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``...)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Weights' dtype during the run."""
    seed: int = 0
    """Seed of every request's update (derived per stream position)."""
    stream: StreamConfig = StreamConfig()
    """Where deletion requests come from."""
    strategy: StrategyConfig = StrategyConfig()
    """Which strategy plans each request, and with which objective."""
    update: UpdateConfig = UpdateConfig()
    """Per-request optimisation."""
    eval: EvalSection = EvalSection()
    """Evaluation and recovery attacks."""
    checkpoint: CheckpointSection = CheckpointSection()
    """Checkpoint frequency and retention."""
    loop: LoopConfig = LoopConfig()
    """Closed-loop unlearning: stop each request at the non-member level, guard utility (engine/loop.py)."""

    @model_validator(mode="before")
    @classmethod
    def _strategy_defaults(cls, data):
        """The strategy's own defaults (``Strategy.config_defaults``; FIT: token-keyed edits under the closed
        loop) for every setting the configuration leaves unset; a value given explicitly always wins."""
        if not isinstance(data, dict):
            return data
        strategy = data.get("strategy")
        if isinstance(strategy, StrategyConfig):
            name = strategy.name
        elif strategy is None or isinstance(strategy, dict):
            name = (strategy or {}).get("name", StrategyConfig.model_fields["name"].default)
        else:
            return data  # not a mapping: the field's own validation reports it
        try:
            defaults = get_strategy(name).config_defaults
        except (ConfigError, TypeError):  # an unknown strategy: StrategyConfig's validation reports it
            return data
        if not defaults:
            return data
        out = _defaults_under(data, defaults)
        given = data.get("loop")
        given = given.model_dump(exclude_unset=True) if isinstance(given, Section) else given
        loop = out.get("loop")
        base = isinstance(given, dict) and given.get("target") == "base" and "neighbours" not in given
        if base and isinstance(loop, dict) and "neighbours" in loop:
            # FIT's per-request holdout neighbours belong to its holdout target: a configuration that asks for the
            # base model's own loss instead does not inherit them (given explicitly, the conflict is an error)
            out["loop"] = {k: v for k, v in loop.items() if k != "neighbours"}
        return out

    @model_validator(mode="after")
    def _attacks_can_run(self):
        if (
            self.quantize_embeddings
            and self.eval.quantize_method == "bnb"
            and any(a.startswith("quantize") for a in self.eval.attacks)
        ):
            raise ValueError(
                "eval.quantize_method bnb keeps the token embeddings in 16 bits, where this run's row edits live; "
                "use quanto or rtn, or set eval.quantize_embeddings: false"
            )
        return self

    def canonical(self) -> dict:
        """Everything that changes results, as plain data: not ``out``, not pure speed knobs, and a field
        added later is left out while it has the value that reproduces the behaviour before it."""
        blob = self.model_dump(mode="json", exclude=_NOT_RESULTS)
        # the closed loop's effective state; its settings matter only when it is on
        blob["loop"] = {**blob["loop"], "enabled": True} if self.loop_enabled else {"enabled": False}
        if not self.loop.stop:  # the cap and the checks' spacing shape the stop only
            blob["loop"].pop("cap_quantile", None)
            for key in ("check_ahead", "stall_steps", "stall_rise"):
                blob["loop"].pop(key, None)
        blob["eval"]["quantize_embeddings"] = self.quantize_embeddings  # null resolved: what the attacks do
        if self.update.trainable != "rows":  # the objective of a row edit matters only where rows are edited
            blob["strategy"]["fit"]["rows_objective"] = None
        if self.loop.stall_steps is None:  # the rise matters only with a stall window
            blob["loop"].pop("stall_rise", None)
        for section, fields in _ADDED_LATER.items():
            _drop_unchanged(blob[section], fields)
        if not blob["loop"]:  # off: the configuration hashes as it did before the loop existed
            del blob["loop"]
        return blob

    @property
    def loop_enabled(self) -> bool:
        """``loop.enabled``, or the strategy's ``closed_loop`` when it is ``null`` (FIT's default sets ``true``)."""
        return self.loop.enabled if self.loop.enabled is not None else get_strategy(self.strategy.name).closed_loop

    @property
    def quantize_embeddings(self) -> bool:
        """``eval.quantize_embeddings``, or whether the run edits embedding rows when it is ``null``."""
        q = self.eval.quantize_embeddings
        return q if q is not None else self.update.trainable == "rows"

    def hash(self) -> str:
        """Hash of :meth:`canonical` (journaled with the run)."""
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_journal(cls, blob: dict) -> RunConfig:
        """The configuration a journal recorded, read with today's schema: a field the journal predates
        takes the value that reproduces the behaviour of the code that wrote it."""
        blob = _defaults_under(blob, _ADDED_LATER)  # its own values win, a section it switched off stays off
        return build_config(blob, "the journal's configuration")

    def diff(self, other: dict) -> list[str]:
        """Dotted names of the settings that change results and differ from a journaled configuration
        (``[]``: a run journaled with ``other`` may be resumed with this one, whichever code wrote it)."""
        try:
            theirs = _flatten(RunConfig.from_journal(other).canonical())
        except ConfigError:  # no longer valid: compare the raw settings
            theirs = _flatten({k: v for k, v in other.items() if k != "out"})
        mine = _flatten(self.canonical())
        return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


#: fields that change speed or memory but not results: a run may be resumed with other values
_NOT_RESULTS: dict = {
    "out": True,
    "update": {"reference_cache_mb": True, "gradient_checkpointing": True},
    # what a bad request does (stop or skip) decides whether the run goes on, not what it computes
    "stream": {"on_bad_request": True},
}
#: fields added after runs were journaled, with the value that reproduces the behaviour before them: a
#: journal without the field resumes with that value (and the configuration hash is unchanged by it)
_ADDED_LATER: dict = {
    "update": {
        "retain_match": False,
        "optimizer": "adamw",
        "template_max_df": None,
        "project_retain": False,
        "trainable": "full",
        "lora": LoraSection().model_dump(mode="json"),
        "reference_device": None,
        "rows": RowsSection().model_dump(mode="json"),
        # fp32 master copies change nothing for fp32 weights; bf16 runs journaled before them took steps a bf16
        # weight could not hold, and are resumed with them
        "master_weights": True,
    },
    "loop": {
        "enabled": False,
        "cap_quantile": None,
        "neighbours": None,
        "check_ahead": None,
        "stall_steps": None,
        "stall_rise": 0.03,
        "guard": {"scope": "all", "backtrack": 0},
    },
    "stream": {"dataset": QADatasetConfig().model_dump(mode="json")},
    "strategy": {"fit": {"layers": {"rows_mass": 1.0}, "rows_objective": None}},
    "eval": {"quantize_embeddings": False},
}


def _defaults_under(given: dict, defaults: dict) -> dict:
    """``given`` (a configuration mapping; a section built in Python counts the fields it was given) with each
    field of ``defaults`` it leaves unset, at any depth: a strategy's defaults under a configuration, or
    :data:`_ADDED_LATER` under a journaled one."""
    out = dict(given)
    for k, v in defaults.items():
        mine = out.get(k)
        if isinstance(mine, Section):
            mine = mine.model_dump(exclude_unset=True)
        elif mine is True and isinstance(v, dict):  # a section given as `true` takes its defaults: these too
            mine = {}
        if k not in out:  # a value given explicitly, null included (a FIT part switched off), wins
            out[k] = copy.deepcopy(v)  # never the strategy's own dict: a later change to it stays there
        elif isinstance(v, dict) and isinstance(mine, dict):
            out[k] = _defaults_under(mine, v)
    return out


def _drop_unchanged(node: dict, fields: dict) -> None:
    """Remove from ``node`` the fields that still have the value of :data:`_ADDED_LATER`; a nested section
    field by field (only a changed field of it is then part of the hash), and dropped once empty."""
    for k, old in fields.items():
        if isinstance(old, dict) and isinstance(node.get(k), dict):
            _drop_unchanged(node[k], old)
            if not node[k]:
                del node[k]
        elif k in node and node[k] == old:
            del node[k]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def build_config(data: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read a YAML config (optional) and apply dotted overrides such as ``{"strategy.objective": "ga"}``."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not valid UTF-8") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build_config(data, str(path) if path else "command line")


def config_reference() -> str:
    """docs/config.md: every setting of a run, of ``prepare`` and of each objective, from their one typed
    definition (a test keeps the file equal to this)."""
    objectives = ["| objective | what it minimises | parameter | default | meaning |", "|---|---|---|---|---|"]
    for name in sorted(OBJECTIVES):
        spec = OBJECTIVES[name]
        params = resolve_objective(name).params()
        doc = spec.doc.replace("|", chr(92) + "|")
        fields = dataclasses.fields(spec.config_cls) or [None]
        for i, f in enumerate(fields):
            head = f"| `{name}` | {doc} " if i == 0 else "| | "
            if f is None:
                objectives.append(head + "| (none) | | |")
                continue
            meaning = f.metadata.get("help", "").replace("|", chr(92) + "|")
            objectives.append(head + f"| `{f.name}` | `{json.dumps(params[f.name])}` | {meaning} |")
    return "\n".join(
        [
            "# Configuration reference",
            "",
            "Generated from the typed definitions (`fit_unlearn.engine.config.config_reference()`; "
            "`fit-unlearn config` prints it); `tests/test_engine.py` keeps this file equal to them.",
            "",
            "## `fit-unlearn run` (`RunConfig`, YAML or flags)",
            "",
            "A section given as `true` takes its defaults; FIT's `filter`, `layers` and `importance` can be "
            "`false` (switched off). Unknown keys are refused, with the field's dotted name.",
            "",
            markdown_table(RunConfig),
            "",
            "### A strategy's own defaults",
            "",
            "A strategy may change the default of a setting the configuration leaves unset (a value given explicitly "
            "always wins; the journal records the values used):",
            "",
            "| strategy | setting | its default |",
            "|---|---|---|",
            *(
                f"| `{name}` | `{key}` | `{json.dumps(value)}` |"
                for name in sorted(STRATEGIES)
                for key, value in _flatten(STRATEGIES[name].config_defaults).items()
            ),
            "",
            "## Objectives (`strategy.objective`, `strategy.objective_params`, `fit.importance.objective_params`)",
            "",
            "\n".join(objectives),
            "",
            "## `fit-unlearn prepare` (`PrepareConfig`; the command's defaults come from here)",
            "",
            markdown_table(PrepareConfig),
            "",
        ]
    )

"""Typed run configuration: one YAML file (or CLI flags), validated before any work starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fit_unlearn.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamConfig(_Strict):
    #: "forget": the prepared forget split in stream order; or a JSONL file of requests; or "watch:DIR"
    source: str = "forget"
    order_seed: int | None = 0  #: permutation of the forget split (None = file order)
    limit: int | None = Field(default=None, ge=1)  #: stop after this many stream items
    max_request_chars: int = Field(default=20_000, ge=1)
    on_bad_request: Literal["stop", "skip"] = "stop"
    watch_idle_exit: float | None = Field(default=5.0, ge=0)  #: watch mode: exit after this many idle seconds


class StrategyConfig(_Strict):
    name: str = "sequential"
    objective: str = "npo"
    objective_params: dict = Field(default_factory=dict)
    trainable: Literal["all"] | list[int] = "all"
    include_qa: bool = True  #: unlearn the request's QA pairs together with its text
    fit: dict = Field(default_factory=dict)  #: FIT options (filter / layers / importance), see docs

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        from fit_unlearn.objectives import get_objective

        try:
            return get_objective(v).name
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _objective_params(self):
        from fit_unlearn.objectives import get_objective

        try:
            get_objective(self.objective).make_config(self.objective_params)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


class UpdateSection(_Strict):
    lr: float = Field(default=3e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    epochs: int = Field(default=3, ge=1)
    slice_chars: int = Field(default=1024, ge=1)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    retain_batch_size: int = Field(default=2, ge=0)
    max_len: int = Field(default=512, ge=8)
    max_grad_norm: float | None = Field(default=None, gt=0)
    #: MiB of theta_0 outputs kept between steps and requests (0: recompute every step)
    reference_cache_mb: int = Field(default=2048, ge=0)
    #: retain QA pairs anchor the steps that unlearn QA pairs (False: retain documents on every step)
    retain_match: bool = True


class EvalSection(_Strict):
    every: int | None = Field(default=20, ge=1)  #: evaluate after every N applied requests
    at_end: bool = True
    batch_size: int = Field(default=16, ge=1)
    #: T of the references: the forget set's size (default: the prepared forget split; never stream.limit)
    T: int | None = Field(default=None, ge=1)
    downstream: list[str] = Field(default_factory=list)  #: lm-eval tasks run at every evaluation
    downstream_limit: int | None = Field(default=None, ge=1)
    tasks_dir: Path | None = None  #: extra lm-eval YAML tasks
    #: recovery attacks run once at the end of the stream
    attacks: list[Literal["quantize8", "quantize4", "relearn"]] = Field(default_factory=list)
    quantize_method: Literal["auto", "quanto", "bnb", "rtn"] = "auto"
    relearn_fraction: float = Field(default=0.1, gt=0, lt=1)
    relearn_lr: float = Field(default=1e-5, gt=0)
    relearn_epochs: int = Field(default=3, ge=1)


class CheckpointSection(_Strict):
    every: int = Field(default=10, ge=1)  #: checkpoint after every N stream items
    keep: int = Field(default=2, ge=1)


class RunConfig(_Strict):
    prepared: Path = Path("fit_runs/prepared")
    model: str = "theta0"  #: "theta0" of the prepared directory, or a model directory
    out: Path = Path("fit_runs/run")
    device: str = "cpu"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    stream: StreamConfig = StreamConfig()
    strategy: StrategyConfig = StrategyConfig()
    update: UpdateSection = UpdateSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()

    def hash(self) -> str:
        """Hash of everything that changes results (not ``out``, not pure speed knobs)."""
        blob = self.model_dump(mode="json", exclude=_NOT_RESULTS)
        for section, fields in _ADDED_LATER.items():  # at its old behaviour, a newer field is left out
            for k, old in fields.items():
                if blob[section].get(k) == old:
                    del blob[section][k]
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    def diff(self, other: dict) -> list[str]:
        mine = _flatten(self.model_dump(mode="json", exclude=_NOT_RESULTS))
        theirs = _flatten(self._without_speed_knobs(other))
        return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))

    @staticmethod
    def _without_speed_knobs(blob: dict) -> dict:
        out = {k: v for k, v in blob.items() if k != "out"}
        if isinstance(out.get("update"), dict):
            out["update"] = {k: v for k, v in out["update"].items() if k not in _NOT_RESULTS["update"]}
        for section, fields in _ADDED_LATER.items():  # a journal older than a field ran its old behaviour
            if isinstance(out.get(section), dict):
                out[section] = {**fields, **out[section]}
        return out


#: fields that change speed or memory but not results: a run may be resumed with other values
_NOT_RESULTS: dict = {"out": True, "update": {"reference_cache_mb": True}}
#: fields added after runs were journaled, with the value that reproduces the behaviour before them: a
#: journal without the field resumes with that value (and the configuration hash is unchanged by it)
_ADDED_LATER: dict = {"update": {"retain_match": False}}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _format_error(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        parts.append(f"{loc}: {msg}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def build_config(data: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


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

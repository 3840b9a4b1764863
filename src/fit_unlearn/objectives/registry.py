"""One registry for objectives (name -> loss function + typed config), with did-you-mean errors.

A configuration names an objective and its parameters; :func:`resolve_objective` turns them, once, at
configuration load, into an :class:`Objective` (the registered spec and its validated, typed config).
Strategies plan with that object and the update executor calls ``objective.spec.fn(batch, objective.config)``:
nothing downstream looks the name up or validates the parameters again.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fit_unlearn.errors import ConfigError


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    fn: Callable
    config_cls: type
    needs_reference: bool = False  #: frozen theta_0 outputs on forget (NPO, DPO) or retain (KL, RMU)
    needs_retain: bool = False
    needs_hidden: bool = False  #: hidden states of a layer (RMU)
    needs_alternate: bool = False  #: an alternate forget target, e.g. a refusal (IdK)
    retain_reference: bool | None = None  #: theta_0 outputs on the retain batch (default: needs_reference)
    doc: str = ""

    def uses_retain(self, cfg) -> bool:
        """A retain batch is needed: always for needs_retain, or when an optional retain term is on."""
        return self.needs_retain or getattr(cfg, "retain_weight", 0) > 0

    @property
    def reference_on_retain(self) -> bool:
        return self.needs_reference if self.retain_reference is None else self.retain_reference

    def make_config(self, params: dict | None = None):
        params = dict(params or {})
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"objective {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known)) or '(none)'}"
            )
        try:  # types are checked and coerced ("0.5" -> 0.5, lists -> tuples), then __post_init__ runs
            return TypeAdapter(self.config_cls).validate_python(params)
        except ValidationError as e:
            msgs = "; ".join(_one_error(err) for err in e.errors())
            raise ConfigError(f"objective {self.name!r}: {msgs}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"objective {self.name!r}: {e}") from None


def _one_error(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    return f"{'.'.join(str(x) for x in err['loc'])}: {msg}" if err["loc"] else msg


@dataclass(frozen=True)
class Objective:
    """A resolved objective: the registered spec and its typed config (see the module docstring)."""

    spec: ObjectiveSpec
    config: Any

    @property
    def name(self) -> str:
        return self.spec.name

    def params(self) -> dict:
        """The config as plain data (what receipts record)."""
        return asdict(self.config)

    def __call__(self, batch):
        return self.spec.fn(batch, self.config)


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, config_cls: type, **flags):
    """Decorator: ``@register_objective("npo", NPOConfig, needs_reference=True)``."""

    def deco(fn):
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} registered twice")
        OBJECTIVES[name] = ObjectiveSpec(name, fn, config_cls, doc=(fn.__doc__ or "").strip().split("\n")[0], **flags)
        return fn

    return deco


def get_objective(name: str) -> ObjectiveSpec:
    key = name.strip().lower().replace("-", "_")
    if key in OBJECTIVES:
        return OBJECTIVES[key]
    close = difflib.get_close_matches(key, OBJECTIVES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown objective {name!r}{hint}; known objectives: {', '.join(sorted(OBJECTIVES))}")


def resolve_objective(name: str | Objective, params: dict | None = None) -> Objective:
    """``name`` + ``params`` -> :class:`Objective`; the one place where both are validated."""
    if isinstance(name, Objective):
        return name
    spec = get_objective(name)
    return Objective(spec, spec.make_config(params))

"""One registry for objectives (name -> loss function + typed config), with did-you-mean errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields

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
        try:
            return self.config_cls(**params)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"objective {self.name!r}: {e}") from None


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

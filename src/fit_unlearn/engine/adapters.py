"""LoRA trainables through PEFT (``update.trainable: lora``).

Each request trains a fresh low-rank adapter (rank ``r``) on the linear layers of the decoder blocks the
plan names (FIT's targeted layers; every block for strategies that train "all"); nothing else is trained.
Two modes:

* ``merge``: the adapter is merged into the weights once the request is applied, so between requests the
  model is a plain Hugging Face model (checkpoints load with ``from_pretrained``).
* ``stack``: every request keeps its own adapter on top of the untouched theta_0 weights, all of them
  active.  A request can then be inspected or reverted (``fit-unlearn adapters``); checkpoints hold the
  merged weights (a plain model, for evaluation, attacks and deployment) and the adapters, one folder per
  request in PEFT's format.  The base weights are never written, so the frozen reference is the same model
  with its adapters switched off (no second copy).  Each adapter costs ``r * (in + out)`` multiply-adds per
  token and linear layer in every later forward: benchmarks/README.md, "LoRA".

The PEFT model wraps the engine's model in place (its linear layers are replaced by LoRA layers), so the
engine and the objectives keep calling the model they hold.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import decoder_layers, unwrap
from fit_unlearn.schema import Section

#: the file, in a checkpoint's adapters folder, that lists the adapters in the order they were applied
INDEX = "adapters.json"


class LoraSection(Section):
    """The ``update.lora`` section: the adapter each request trains when ``update.trainable`` is ``lora``."""

    r: int = Field(default=8, ge=1)
    """Rank of each request's adapter."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator: the adapter's update is ``alpha / r * B A``."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""
    target_modules: list[str] | None = None
    """Names of the linear layers inside a decoder block that get an adapter, e.g. ``[q_proj, v_proj]``
    (``null``: every linear layer of the block, attention and MLP)."""
    mode: Literal["merge", "stack"] = "merge"
    """``merge``: merge each request's adapter into the weights once it is applied; ``stack``: keep one
    adapter per request (inspectable, revertable), the base weights untouched."""


def block_linear_names(model) -> list[str]:
    """The distinct short names of the linear layers inside the decoder blocks (q_proj, ..., down_proj)."""
    from transformers.pytorch_utils import Conv1D

    _, layers = decoder_layers(model)
    names = []
    for name, m in layers[0].named_modules():
        parts = name.split(".")
        if any(p == "base_layer" or p.startswith("lora_") for p in parts):  # inside a LoRA layer already
            continue
        if isinstance(m, torch.nn.Linear | Conv1D) and parts[-1] not in names:
            names.append(parts[-1])
    return names


def lora_config(model, cfg: LoraSection, layers, known: list[str] | None = None):
    """PEFT's LoraConfig for one request: ``layers`` is ``"all"`` or a list of decoder-layer indices;
    ``known``: the block's linear layers (:func:`block_linear_names` of the model before any adapter)."""
    from peft import LoraConfig

    path, blocks = decoder_layers(model)
    n = len(blocks)
    known = known if known is not None else block_linear_names(model)
    targets = list(cfg.target_modules) if cfg.target_modules else list(known)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise ConfigError(
            f"update.lora.target_modules: {unknown} are not linear layers of this model's decoder blocks; "
            f"choose among {sorted(known)}"
        )
    layer_ids = None
    if layers not in (None, "all"):
        layer_ids = sorted({int(i) % n for i in layers})
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=layer_ids,
        layers_pattern=path.split(".")[-1] if layer_ids is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


class Adapters:
    """The LoRA adapters of one model: attach one per request, then merge it or keep it (``mode``)."""

    def __init__(self, model, cfg: LoraSection):
        self.model = unwrap(model)
        self.cfg = cfg
        self.peft = None  #: the PeftModel wrapping ``model`` while it holds adapters
        self.names: list[str] = []  #: adapters kept (stack), in the order their requests were applied
        self.layers: dict[str, object] = {}  #: the decoder layers each adapter covers
        self.known = block_linear_names(self.model)  #: before any adapter replaces them

    @property
    def stacked(self) -> bool:
        return self.cfg.mode == "stack"

    def attach(self, name: str, layers) -> list[torch.nn.Parameter]:
        """Add adapter ``name`` (fresh: A random from the current torch seed, B zero) on ``layers``; every
        adapter stays active; returns the new adapter's parameters (the only ones to train)."""
        from peft import get_peft_model

        if name in self.names:
            raise ConfigError(f"adapter {name!r} exists already")
        config = lora_config(self.model, self.cfg, layers, self.known)
        if self.peft is None:
            self.peft = get_peft_model(self.model, config, adapter_name=name)
        else:
            self.peft.add_adapter(name, config)
        self.peft.base_model.set_adapter([*self.names, name])
        self.layers[name] = layers if layers in (None, "all") else sorted({int(i) for i in layers})
        return self.params(name)

    def params(self, name: str) -> list[torch.nn.Parameter]:
        marks = (f".lora_A.{name}.", f".lora_B.{name}.")
        return [p for n, p in self.model.named_parameters() if any(m in n for m in marks)]

    def finish(self, name: str) -> None:
        """The request ``name`` is applied: merge its adapter (merge mode) or keep it, frozen (stack)."""
        if self.stacked:
            self.names.append(name)
            for p in self.params(name):
                p.requires_grad_(False)
            return
        self.peft.merge_and_unload()  # in place: the LoRA layers are replaced by their merged base layers
        self.peft = None
        self.layers.pop(name, None)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config

    def discard(self, name: str) -> None:
        """Drop adapter ``name`` unmerged (a failed update)."""
        if self.peft is None:
            return
        if name in self.peft.peft_config:
            if len(self.peft.peft_config) == 1:
                self.peft.unload()
                self.peft = None
                if hasattr(self.model, "peft_config"):
                    del self.model.peft_config
            else:
                self.peft.base_model.delete_adapter(name)
                self.peft.base_model.set_adapter(self.names)
        self.layers.pop(name, None)

    @contextlib.contextmanager
    def disabled(self):
        """The model with every adapter switched off: theta_0 itself in stack mode."""
        if self.peft is None:
            yield
            return
        # PEFT marks the active adapters trainable when it switches them back on: keep their flags as they were
        flags = [(p, p.requires_grad) for n, p in self.model.named_parameters() if ".lora_" in n]
        try:
            with self.peft.disable_adapter():
                yield
        finally:
            for p, f in flags:
                p.requires_grad_(f)

    # ---- persistence (stack mode) ----------------------------------------------------------------
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights with every kept adapter merged, under the plain model's parameter names; computed
        aside, so that the live weights stay exactly as they are (no merge and unmerge round-off)."""
        from peft.tuners.lora import LoraLayer

        sd = {}
        for key, t in self.model.state_dict().items():
            if ".lora_" in key:
                continue
            sd[key.replace(".base_layer.", ".")] = t
        for mname, m in self.model.named_modules():
            if not isinstance(m, LoraLayer):
                continue
            w = m.get_base_layer().weight
            merged = w.detach().clone()
            for a in self.names:
                if a in m.lora_A:
                    merged += m.get_delta_weight(a).to(w.dtype)
            sd[f"{mname}.weight"] = merged
        return sd

    def save(self, directory: Path) -> None:
        """The kept adapters, one PEFT folder each, and an index of their order and layers."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.names:
            self.peft.save_pretrained(str(directory), selected_adapters=list(self.names))
        (directory / INDEX).write_text(
            json.dumps({"adapters": [{"name": n, "layers": self.layers.get(n)} for n in self.names]}, indent=2)
        )

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote onto this model (which must hold no adapter yet)."""
        from peft import PeftModel

        directory = Path(directory)
        for entry in read_index(directory):
            name, sub = entry["name"], directory / entry["name"]
            if not sub.exists():
                raise ConfigError(f"{sub}: adapter folder missing from the checkpoint")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(sub), adapter_name=name)
            else:
                self.peft.load_adapter(str(sub), adapter_name=name)
            self.names.append(name)
            self.layers[name] = entry["layers"]
        if self.names:
            self.peft.base_model.set_adapter(list(self.names))
            for n in self.names:
                for p in self.params(n):
                    p.requires_grad_(False)


class WithoutAdapters(torch.nn.Module):
    """The frozen reference in stack mode: the live model with every adapter switched off, which is theta_0
    exactly (stacked adapters never write the base weights), at no extra memory."""

    def __init__(self, model, adapters: Adapters):
        super().__init__()
        self.module = model  # ``unwrap`` finds the model under ``module``
        self._adapters = adapters

    def forward(self, *args, **kwargs):
        with self._adapters.disabled():
            return self.module(*args, **kwargs)


def read_index(directory: Path) -> list[dict]:
    """The adapters a checkpoint holds, in the order their requests were applied."""
    path = Path(directory) / INDEX
    if not path.exists():
        raise ConfigError(f"{directory}: no adapters here (the run did not use update.lora.mode: stack)")
    return json.loads(path.read_text())["adapters"]


__all__ = ["Adapters", "LoraSection", "WithoutAdapters", "block_linear_names", "lora_config", "read_index"]

"""Finding the decoder layers of a Hugging Face causal LM and choosing trainable parameters."""

from __future__ import annotations

import re

import torch

from fit_unlearn.errors import ModelError

#: attribute paths of the decoder-layer list, by architecture family
LAYER_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
    "model.language_model.layers",
)


def attr_path(obj, path: str):
    """``obj.a.b.c`` for path "a.b.c", or None where an attribute is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def unwrap(model):
    """The plain HF model under PEFT / DDP wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        else:
            return model


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """(attribute path, ModuleList) of the decoder layers; a clear error for unknown architectures."""
    m = unwrap(model)
    for path in LAYER_PATHS:
        layers = attr_path(m, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return path, layers
    raise ModelError(
        f"cannot find the decoder layers of {type(m).__name__}; supported layouts: {', '.join(LAYER_PATHS)}. "
        "Use trainable: all, or add the path to fit_unlearn.layers.LAYER_PATHS"
    )


def num_layers(model) -> int:
    return len(decoder_layers(model)[1])


_NORM = re.compile(r"(^|\.)(ln_\w+|\w*norm\w*)(\.|$)", re.IGNORECASE)


def layer_param_names(model, layer_ids, include_norms: bool = False) -> list[str]:
    """Names of the attention and MLP parameters of the given decoder layers (norms excluded)."""
    path, layers = decoder_layers(model)
    n = len(layers)
    bad = [i for i in layer_ids if not -n <= i < n]
    if bad:
        raise ModelError(f"layer indices {bad} out of range for a model with {n} decoder layers")
    names = []
    m = unwrap(model)
    prefix_of = {id(p): name for name, p in m.named_parameters()}
    for i in sorted({i % n for i in layer_ids}):
        for sub, p in layers[i].named_parameters():
            if include_norms or not _NORM.search(sub):
                names.append(prefix_of[id(p)])
    return names


def trainable_names(model, spec) -> list[str]:
    """Parameter names for a selection spec: "all", "layers" list of ints, or names list."""
    m = unwrap(model)
    if spec in (None, "all"):
        return [n for n, _ in m.named_parameters()]
    if isinstance(spec, list | tuple) and all(isinstance(x, int) for x in spec):
        return layer_param_names(model, spec)
    if isinstance(spec, list | tuple) and all(isinstance(x, str) for x in spec):
        return list(spec)
    raise ModelError(f"unknown trainable-parameter selection {spec!r}; use 'all' or a list of layer indices")


def trainable_params(model, spec) -> list[torch.nn.Parameter]:
    """The parameters of :func:`trainable_names`, in the model's order."""
    selected = set(trainable_names(model, spec))
    return [p for n, p in unwrap(model).named_parameters() if n in selected]

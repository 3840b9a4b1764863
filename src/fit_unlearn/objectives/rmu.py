"""RMU (Li et al., 2024, WMDP): steer forget activations at one layer to a fixed random direction,
keep retain activations equal to the frozen model's."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fit_unlearn.objectives.base import Outputs, UnlearnBatch
from fit_unlearn.objectives.registry import register_objective


@dataclass(frozen=True)
class RMUConfig:
    layer: int = field(
        default=-1, metadata={"help": "decoder layer whose output is steered; -1: one third of the depth"}
    )
    steering_coeff: float = field(
        default=20.0, metadata={"help": "c, the norm of the target activation (scale with the model's activations)"}
    )
    alpha: float = field(default=100.0, metadata={"help": "weight of the retain activation-matching term"})
    seed: int = field(default=0, metadata={"help": "seed of the fixed random direction u"})

    def __post_init__(self):
        if self.steering_coeff <= 0:
            raise ValueError(f"steering_coeff must be > 0, got {self.steering_coeff}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


def control_vector(hidden_size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=g)
    return u / u.norm()


def _masked_mse(h: torch.Tensor, target: torch.Tensor, out: Outputs) -> torch.Tensor:
    mask = (out.attention_mask if out.attention_mask is not None else torch.ones(h.shape[:2], device=h.device)).float()
    err = ((h.float() - target.float()) ** 2).mean(-1)
    return (err * mask).sum() / mask.sum().clamp_min(1)


@register_objective("rmu", RMUConfig, needs_reference=True, needs_retain=True, needs_hidden=True)
def rmu(batch: UnlearnBatch, cfg: RMUConfig) -> torch.Tensor:
    """MSE(h_forget, c u) + alpha * MSE(h_retain, h_retain of theta_0) at the configured layer."""
    f, r = batch.forget, batch.retain
    if f.hidden is None or r is None or r.hidden is None or r.ref_hidden is None:
        raise ValueError("rmu needs hidden states of the model (forget, retain) and of the reference (retain)")
    u = control_vector(f.hidden.size(-1), cfg.seed).to(f.hidden.device)
    return _masked_mse(f.hidden, cfg.steering_coeff * u, f) + cfg.alpha * _masked_mse(r.hidden, r.ref_hidden, r)

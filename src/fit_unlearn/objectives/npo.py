"""Negative preference optimisation: NPO, NPO+KL, SimNPO."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fit_unlearn.objectives.ascent import KLRetainConfig, _check_weight
from fit_unlearn.objectives.base import Outputs, UnlearnBatch, retain_term
from fit_unlearn.objectives.registry import register_objective


def npo_loss(out: Outputs, beta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(-beta (log p_theta(x) - log p_ref(x))), sequence log-probs."""
    ratio = out.seq_logp() - out.seq_logp(ref=True)
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()


@dataclass(frozen=True)
class NPOConfig:
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the preference term"})

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@register_objective("npo", NPOConfig, needs_reference=True)
def npo(batch: UnlearnBatch, cfg: NPOConfig) -> torch.Tensor:
    """NPO (Zhang et al., 2024) against the frozen theta_0."""
    return npo_loss(batch.forget, cfg.beta)


@dataclass(frozen=True)
class NPOKLConfig(KLRetainConfig):
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the preference term"})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@register_objective("npo_kl", NPOKLConfig, needs_reference=True, needs_retain=True)
def npo_kl(batch: UnlearnBatch, cfg: NPOKLConfig) -> torch.Tensor:
    """NPO + w * KL(p_ref || p_theta) on retain (or the reference code's CE variant)."""
    return npo_loss(batch.forget, cfg.beta) + cfg.retain_weight * retain_term(batch.retain, cfg.retain_loss)


@dataclass(frozen=True)
class NPORTConfig(NPOConfig):
    retain_weight: float = field(default=1.0, metadata={"help": "weight of CE(retain)"})

    def __post_init__(self):
        super().__post_init__()
        _check_weight(self.retain_weight)


@register_objective("npo_rt", NPORTConfig, needs_reference=True, needs_retain=True, retain_reference=False)
def npo_rt(batch: UnlearnBatch, cfg: NPORTConfig) -> torch.Tensor:
    """NPO + w * CE(retain) ("NPO-RT", Zhang et al., 2024): the retain anchor of GradDiff on NPO."""
    return npo_loss(batch.forget, cfg.beta) + cfg.retain_weight * retain_term(batch.retain, "ce")


@dataclass(frozen=True)
class SimNPOConfig:
    beta: float = field(default=2.5, metadata={"help": "inverse temperature (length-normalised)"})
    gamma: float = field(default=0.0, metadata={"help": "reward margin"})
    retain_weight: float = field(default=0.0, metadata={"help": "weight of an optional CE(retain) term (0: none)"})

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        _check_weight(self.retain_weight)


@register_objective("simnpo", SimNPOConfig)
def simnpo(batch: UnlearnBatch, cfg: SimNPOConfig) -> torch.Tensor:
    """SimNPO (Fan et al., 2024): reference-free, length-normalised NPO."""
    out = batch.forget
    avg = out.seq_logp() / out.n_tokens()
    loss = -(2.0 / cfg.beta) * F.logsigmoid(-cfg.beta * avg - cfg.gamma).mean()
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, "ce")
    return loss

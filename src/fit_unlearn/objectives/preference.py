"""IdkDPO: DPO that prefers a refusal over the forget text (Maini et al., 2024; Rafailov et al., 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fit_unlearn.objectives.ascent import IdkConfig
from fit_unlearn.objectives.base import UnlearnBatch, retain_term
from fit_unlearn.objectives.registry import register_objective


@dataclass(frozen=True)
class IdkDPOConfig(IdkConfig):
    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the DPO term"})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@register_objective("idk_dpo", IdkDPOConfig, needs_reference=True, needs_retain=True, needs_alternate=True)
def idk_dpo(batch: UnlearnBatch, cfg: IdkDPOConfig) -> torch.Tensor:
    """-log sigmoid(beta [(log pi - log ref)(refusal) - (log pi - log ref)(forget)]) + w * CE(retain)."""
    if batch.alternate is None:
        raise ValueError("idk_dpo needs the alternate (refusal) batch")
    chosen = batch.alternate.seq_logp() - batch.alternate.seq_logp(ref=True)
    rejected = batch.forget.seq_logp() - batch.forget.seq_logp(ref=True)
    loss = -F.logsigmoid(cfg.beta * (chosen - rejected)).mean()
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, "ce")
    return loss

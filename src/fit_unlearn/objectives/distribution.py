"""Bounded objectives that move the forget tokens' distribution *to* a target instead of pushing the
label's probability down without end (gradient ascent):

* ``me``: maximum entropy (Yuan et al., 2025, "A Closer Look at Machine Unlearning for Large Language
  Models"): KL(p_theta || uniform) on the forget tokens, plus CE(retain) (their ME+GD).
* ``next_best``: distil theta_0's own *next-best* guesses: the target at each forget token is theta_0's
  distribution with the true token removed and the rest renormalised, KL(q || p_theta).  On a memorised
  fact the target is what the model would say if it did not know that fact; elsewhere it is theta_0 itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fit_unlearn.objectives.ascent import KLRetainConfig, _check_weight
from fit_unlearn.objectives.base import Outputs, UnlearnBatch, retain_term
from fit_unlearn.objectives.registry import register_objective


def _masked_mean(x: torch.Tensor, out: Outputs) -> torch.Tensor:
    m = out.mask
    return (x * m).sum() / m.sum().clamp_min(1)


def entropy_gap(out: Outputs) -> torch.Tensor:
    """KL(p_theta || uniform) = log V - H(p_theta), averaged over scored positions (>= 0)."""
    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    neg_h = (lp.exp() * lp).sum(-1)
    return _masked_mean(neg_h + math.log(lp.size(-1)), out)


def next_best_kl(out: Outputs) -> torch.Tensor:
    """KL(q || p_theta) with q = p_ref with the label token removed and renormalised."""
    lr = torch.log_softmax(out.ref_logits[:, :-1].float(), -1)
    tgt = out.labels[:, 1:].clamp_min(0).unsqueeze(-1)
    lr = lr.scatter(-1, tgt, float("-inf"))
    lq = torch.log_softmax(lr, -1)  # renormalise without the label
    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    q = lq.exp()
    kl = (q * (lq.clamp_min(-1e4) - lp)).sum(-1)
    return _masked_mean(kl, out)


@dataclass(frozen=True)
class MEConfig:
    retain_weight: float = field(default=1.0, metadata={"help": "weight of CE(retain) (ME+GD); 0: ME alone"})

    def __post_init__(self):
        _check_weight(self.retain_weight)


@register_objective("me", MEConfig, needs_retain=True)
def me(batch: UnlearnBatch, cfg: MEConfig) -> torch.Tensor:
    """Maximum entropy on forget tokens + w * CE(retain)."""
    loss = entropy_gap(batch.forget)
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, "ce")
    return loss


@dataclass(frozen=True)
class NextBestConfig(KLRetainConfig):
    """retain term: KL(theta_0 || model) on retain-train by default."""


@register_objective("next_best", NextBestConfig, needs_reference=True, needs_retain=True)
def next_best(batch: UnlearnBatch, cfg: NextBestConfig) -> torch.Tensor:
    """Distil theta_0 without the true token on forget tokens + w * KL(theta_0 || model) on retain."""
    loss = next_best_kl(batch.forget)
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, cfg.retain_loss)
    return loss

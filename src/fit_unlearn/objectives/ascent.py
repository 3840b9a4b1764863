"""Gradient-ascent family: GA, GradDiff, GA+KL, random labels (RL), IdK (fine-tune to a refusal)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fit_unlearn.objectives.base import IGNORE, Outputs, UnlearnBatch, cross_entropy, retain_term
from fit_unlearn.objectives.registry import register_objective

RETAIN_KINDS = ("ce", "kl", "ce_ref")


def _check_weight(w: float, name: str = "retain_weight") -> None:
    if w < 0:
        raise ValueError(f"{name} must be >= 0, got {w}")


@dataclass(frozen=True)
class GAConfig:
    ceiling: float | None = field(
        default=None,
        metadata={
            "help": "per-token cap in nats: a token whose loss is already this high gets no more push (null: "
            "plain GA, unbounded)"
        },
    )

    def __post_init__(self):
        if self.ceiling is not None and self.ceiling <= 0:
            raise ValueError(f"ceiling must be > 0 nats (or null), got {self.ceiling}")


@register_objective("ga", GAConfig)
def ga(batch: UnlearnBatch, cfg: GAConfig) -> torch.Tensor:
    """Gradient ascent: minimise -CE(forget), each token's loss capped at ``ceiling`` when it is set.

    With the cap, -mean(min(CE_token, ceiling)): the loss spreads over the tokens still recalled instead of piling
    onto the few already forgotten."""
    if cfg.ceiling is None:
        return -cross_entropy(batch.forget)
    out = batch.forget
    ce = -out.token_logp()
    m = out.mask
    return -(ce.clamp(max=cfg.ceiling) * m).sum() / m.sum().clamp_min(1)


@dataclass(frozen=True)
class GradDiffConfig:
    retain_weight: float = field(default=1.0, metadata={"help": "weight of CE(retain)"})

    def __post_init__(self):
        _check_weight(self.retain_weight)


@register_objective("graddiff", GradDiffConfig, needs_retain=True)
def graddiff(batch: UnlearnBatch, cfg: GradDiffConfig) -> torch.Tensor:
    """Gradient difference: -CE(forget) + w * CE(retain)."""
    return -cross_entropy(batch.forget) + cfg.retain_weight * retain_term(batch.retain, "ce")


@dataclass(frozen=True)
class KLRetainConfig:
    retain_weight: float = field(default=1.0, metadata={"help": "weight of the retain term"})
    retain_loss: str = field(
        default="kl",
        metadata={"help": "'kl': true KL(p_ref || p_theta); 'ce_ref': the reference code's H(p_theta, p_ref)"},
    )

    def __post_init__(self):
        _check_weight(self.retain_weight)
        if self.retain_loss not in ("kl", "ce_ref"):
            raise ValueError(f"retain_loss must be 'kl' or 'ce_ref', got {self.retain_loss!r}")


@register_objective("ga_kl", KLRetainConfig, needs_retain=True, needs_reference=True)
def ga_kl(batch: UnlearnBatch, cfg: KLRetainConfig) -> torch.Tensor:
    """GA + KL: -CE(forget) + w * KL(p_ref || p_theta) on retain."""
    return -cross_entropy(batch.forget) + cfg.retain_weight * retain_term(batch.retain, cfg.retain_loss)


@dataclass(frozen=True)
class RandomLabelConfig:
    retain_weight: float = field(default=0.0, metadata={"help": "weight of an optional CE(retain) term (0: none)"})

    def __post_init__(self):
        _check_weight(self.retain_weight)


def random_labels(out: Outputs, generator: torch.Generator | None) -> torch.Tensor:
    """Labels with every scored position replaced by a uniformly random token id."""
    vocab = out.logits.size(-1)
    rnd = torch.randint(0, vocab, out.labels.shape, generator=generator, device="cpu").to(out.labels.device)
    return torch.where(out.labels == IGNORE, out.labels, rnd)


@register_objective("rl", RandomLabelConfig)
def rl(batch: UnlearnBatch, cfg: RandomLabelConfig) -> torch.Tensor:
    """Random-label fine-tuning: CE of the forget inputs against uniformly random targets."""
    out = batch.forget
    logits = out.logits[:, :-1].float()
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), random_labels(out, batch.generator)[:, 1:].reshape(-1), ignore_index=IGNORE
    )
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, "ce")
    return loss


@dataclass(frozen=True)
class IdkConfig:
    retain_weight: float = field(default=1.0, metadata={"help": "weight of CE(retain)"})
    refusals: tuple[str, ...] = field(
        default=("I don't know.", "I'm not able to help with that.", "I have no information on that."),
        metadata={"help": "refusal targets; one is picked per forget sequence (seeded)"},
    )

    def __post_init__(self):
        _check_weight(self.retain_weight)
        if not self.refusals:
            raise ValueError("refusals must not be empty")


@register_objective("idk", IdkConfig, needs_retain=True, needs_alternate=True)
def idk(batch: UnlearnBatch, cfg: IdkConfig) -> torch.Tensor:
    """IdK: fine-tune forget prompts to a refusal (CE on the alternate batch) + w * CE(retain)."""
    if batch.alternate is None:
        raise ValueError("idk needs the alternate (refusal) batch")
    loss = cross_entropy(batch.alternate)
    if cfg.retain_weight:
        loss = loss + cfg.retain_weight * retain_term(batch.retain, "ce")
    return loss

"""What every objective receives: the outputs of the model (and of the frozen reference) on the
forget and retain sequences, computed once by the engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class Outputs:
    """Model outputs on one batch of sequences.  ``labels`` use -100 for positions not scored."""

    logits: torch.Tensor  # [B, T, V]
    labels: torch.Tensor  # [B, T]
    ref_logits: torch.Tensor | None = None  # frozen reference model, same inputs
    hidden: torch.Tensor | None = None  # [B, T, H] at the configured layer
    ref_hidden: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """[B, T-1] mask of scored next-token positions."""
        return self.labels[:, 1:] != IGNORE

    def token_logp(self, ref: bool = False) -> torch.Tensor:
        logits = self.ref_logits if ref else self.logits
        if logits is None:
            raise ValueError("reference logits were not computed for this batch")
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        tgt = self.labels[:, 1:].clamp_min(0)
        return lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) * self.mask

    def seq_logp(self, ref: bool = False) -> torch.Tensor:
        """Sum of token log-probs per sequence, [B]."""
        return self.token_logp(ref).sum(-1)

    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(-1).clamp_min(1)


@dataclass
class UnlearnBatch:
    forget: Outputs
    retain: Outputs | None = None
    alternate: Outputs | None = None  # e.g. forget prompts with a refusal target (IdK)
    generator: torch.Generator | None = None  # seeded randomness (random labels, RMU direction)


def cross_entropy(out: Outputs) -> torch.Tensor:
    """Mean next-token cross-entropy over scored positions."""
    logits = out.logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), out.labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def kl_to_reference(out: Outputs) -> torch.Tensor:
    """True KL(p_ref || p_theta) per position, averaged over scored positions."""
    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    lr = torch.log_softmax(out.ref_logits[:, :-1].float(), -1)
    kl = (lr.exp() * (lr - lp)).sum(-1)
    m = out.mask
    return (kl * m).sum() / m.sum().clamp_min(1)


def ce_to_reference(out: Outputs) -> torch.Tensor:
    """The reference code's retain "KL": the cross-entropy H(p_theta, p_ref) = -sum p_theta log p_ref."""
    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    lr = torch.log_softmax(out.ref_logits[:, :-1].float(), -1)
    h = -(lp.exp() * lr).sum(-1)
    m = out.mask
    return (h * m).sum() / m.sum().clamp_min(1)


def retain_term(out: Outputs | None, kind: str) -> torch.Tensor:
    """The retain regulariser of GradDiff ("ce"), +KL methods ("kl", or the reference code's "ce_ref")."""
    if out is None:
        raise ValueError("this objective needs a retain batch")
    if kind == "ce":
        return cross_entropy(out)
    if kind == "kl":
        return kl_to_reference(out)
    if kind == "ce_ref":
        return ce_to_reference(out)
    raise ValueError(f"unknown retain term {kind!r}; use 'ce', 'kl' or 'ce_ref'")

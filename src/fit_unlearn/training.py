"""Plain causal-LM fine-tuning (cross-entropy), used by ``prepare`` and by the relearning attack.

AdamW, linear warm-up then cosine decay, length-bucketed batches (little padding), seeded order,
optional early stop once the epoch's teacher-forced training token accuracy reaches a target.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from pydantic import Field
from tqdm.auto import tqdm

from fit_unlearn.schema import Section
from fit_unlearn.text import IGNORE, Example, collate


class FinetuneConfig(Section):
    """A plain fine-tuning recipe (AdamW, warm-up + cosine): how ``prepare`` builds theta_0 and the gold
    retain-only model, and how the relearning attack relearns."""

    lr: float = Field(default=3e-4, gt=0)
    """Peak learning rate."""
    epochs: int = Field(default=8, ge=1)
    """Maximum epochs."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences per step."""
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    """Fraction of the steps spent warming the learning rate up."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """The cosine schedule ends at this fraction of ``lr``."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    seed: int = 0
    """Seed of the example order and of the initialisation of any random state."""
    stop_at_train_acc: float | None = Field(default=None, gt=0, le=1)
    """Stop after an epoch whose training token accuracy (measured during the epoch) reaches this."""

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def adamw_memory_kwargs(params) -> dict:
    """``fused=True`` for plain CUDA tensors: torch's CUDA default (``foreach``) allocates, at each step, one more
    fp32 tensor the size of every trained weight (about 30 GiB for a full update of an 8B model; measured on
    CPU in benchmarks/results/memory-cpu.md); fused has no such temporary.  CPU and sharded (DTensor)
    parameters keep torch's default, so CPU results are unchanged."""
    params = list(params)
    plain_cuda = bool(params) and all(p.is_cuda and type(p.data) is torch.Tensor for p in params)
    return {"fused": True} if plain_cuda else {}


def make_scheduler(opt, total: int, warmup_ratio: float, min_lr_ratio: float):
    warm = int(round(warmup_ratio * total))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm, min_lr_ratio))


def length_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (sorted in shuffled chunks), batch order shuffled."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    chunk = batch_size * 8
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: len(examples[i].ids))
        batches += [part[b : b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class FinetuneResult:
    epochs_run: int
    steps: int
    seconds: float
    tokens: int
    history: list[dict] = field(default_factory=list)


def finetune(
    model, tok, examples: Sequence[Example], cfg: FinetuneConfig, desc: str = "fine-tune", progress: bool = True
) -> FinetuneResult:
    if not examples:
        raise ValueError("nothing to fine-tune on")
    device = next(model.parameters()).device
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **adamw_memory_kwargs(params)
    )
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = make_scheduler(opt, total, cfg.warmup_ratio, cfg.min_lr_ratio)
    model.train()
    t0, step, tokens, history = time.perf_counter(), 0, 0, []
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step")
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        loss_sum = correct = counted = 0.0
        for batch_idx in length_batches(examples, cfg.batch_size, rng):
            batch = collate([examples[i] for i in batch_idx], tok.pad_token_id, device)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            out.loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                tgt = batch["labels"][:, 1:]
                m = tgt != IGNORE
                correct += ((out.logits[:, :-1].argmax(-1) == tgt) & m).sum().item()
                counted += m.sum().item()
            loss_sum += out.loss.item()
            tokens += int(batch["attention_mask"].sum())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{out.loss.item():.3f}", acc=f"{correct / max(counted, 1):.3f}")
        history.append(
            {"epoch": epoch, "loss": loss_sum / steps_per_epoch, "train_token_acc": correct / max(counted, 1)}
        )
        if cfg.stop_at_train_acc is not None and history[-1]["train_token_acc"] >= cfg.stop_at_train_acc:
            break
    bar.close()
    model.eval()
    return FinetuneResult(epoch, step, time.perf_counter() - t0, tokens, history)

"""Apply one UpdatePlan: a fresh AdamW per request, warm-up + cosine, N epochs over fixed-size slices.

The engine computes, once per step, everything the objective needs (model outputs on the forget slice,
frozen-reference outputs, retain batch, hidden states) and hands it to the pure objective function.
Retain batches come from the retain split only, never from forget documents not yet requested.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator

from fit_unlearn.data.documents import QA, Document
from fit_unlearn.engine.adapters import Adapters, LoraSection
from fit_unlearn.engine.distributed import all_ranks_true, rank_of, reduces_gradients, retain_stream
from fit_unlearn.engine.rows import EditedOutputRows, EditedRows, RowsSection, untie_embeddings
from fit_unlearn.layers import num_layers, trainable_params, unwrap
from fit_unlearn.metrics.scores import mean_ce
from fit_unlearn.objectives import Outputs, UnlearnBatch
from fit_unlearn.schema import Section
from fit_unlearn.strategies.base import UpdatePlan
from fit_unlearn.text import (
    IGNORE,
    Example,
    collate,
    doc_example,
    encode_text,
    qa_example,
    qa_prompt,
    token_logprobs,
)
from fit_unlearn.training import adamw_memory_kwargs, make_scheduler


class UpdateConfig(Section):
    """Per-request optimisation: the ``update`` section of a run configuration (defaults: the FIT
    reference code's recipe)."""

    lr: float = Field(default=3e-5, gt=0)
    """Peak learning rate of the per-request AdamW."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    weight_decay: float = Field(default=0.1, ge=0)
    """AdamW weight decay."""
    epochs: int = Field(default=3, ge=1)
    """Passes over the request's slices (and QA pairs)."""
    slice_chars: int = Field(default=1024, ge=1)
    """A request is cut into slices of this many characters, one slice per step."""
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    """Fraction of the request's steps spent warming the learning rate up."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """The cosine schedule ends at this fraction of ``lr``."""
    retain_batch_size: int = Field(default=2, ge=0)
    """Retain-train items per step for objectives with a retain term."""
    max_len: int = Field(default=512, ge=8)
    """Tokens per training sequence."""
    max_grad_norm: float | None = Field(default=None, gt=0)
    """Gradient clipping norm (``null``: no clipping)."""
    reference_cache_mb: int = Field(default=2048, ge=0)
    """MiB of frozen theta_0 outputs kept between steps and requests (0: recompute every step); speed only."""
    retain_match: bool = True
    """Retain QA pairs anchor the steps that unlearn QA pairs (false: retain documents on every step)."""
    template_max_df: float | None = Field(default=None, gt=0, le=1)
    """Text tokens whose id occurs in more than this fraction of the non-forget documents (retain-train and
    holdout: the template every document shares) are neither trained on nor measured, only the facts of the
    request are (``null``: every token).  See benchmarks/README.md, "Closed loop"."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """``adamw`` (the reference recipe) or plain ``sgd`` (steps along the gradient itself, no per-parameter
    normalisation; ``betas``/``eps`` unused)."""
    saliency: float | None = Field(default=None, gt=0, le=1)
    """Weight saliency (SalUn, Fan et al. 2024): only this fraction of the trainable weights, those with the
    largest gradient of the request's cross-entropy, measured once before its first step, may change
    (``null``: all of them).  Weight decay then applies to those weights only.  Costs a gradient pass and,
    while the mask is chosen, one float copy of the trainable weights' gradients (a bool per weight after)."""
    project_retain: bool = False
    """Gradient projection (A-GEM, Chaudhry et al. 2019): each step's gradient is also compared with the gradient
    of the cross-entropy on a retain-train batch (``retain_batch_size`` documents); when the step would raise
    that loss (negative inner product) the conflicting component is removed, so that to first order the step
    leaves the retain batch's loss unchanged.  Costs one more forward and backward pass per step."""
    trainable: Literal["full", "lora", "rows"] = "full"
    """``full``: the weights the strategy selects are trained (all of them, or FIT's targeted layers);
    ``lora``: a LoRA adapter (``update.lora``) on the linear layers of those decoder blocks, nothing else;
    ``rows``: only the input-embedding rows of the request's own tokens (``update.rows``), the output layer
    untied from them first: a sequence without those tokens is computed exactly as before (docs/rows.md)."""
    rows: RowsSection = RowsSection()
    """Token-keyed edits when ``trainable`` is ``rows``."""
    lora: LoraSection = LoraSection()
    """The per-request adapter when ``trainable`` is ``lora`` (engine/adapters.py)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (less memory, about a third more
    compute); inputs are made to require grad so that frozen embeddings do not stop the adapter's gradient."""
    reference_device: str | None = None
    """Where the frozen reference model (theta_0, for objectives with a reference term) lives, e.g. ``cpu``
    while the model trains on ``cuda``, or a second GPU (``null``: the model's device).  Its inputs and outputs
    are moved across; with ``reference_cache_mb`` most of its outputs are computed once.  Stacked LoRA adapters
    need no reference copy at all (theta_0 is the model with its adapters off)."""
    master_weights: bool = True
    """When trainable weights are 16-bit (``dtype: bf16``), the optimiser steps fp32 copies of them and writes
    them back rounded: a bf16 weight cannot hold a 3e-5 step (its precision is 2^-8 of its size).  Costs 4
    bytes per trainable weight; no effect on fp32 weights or on LoRA adapters (PEFT keeps those in fp32)."""

    @model_validator(mode="after")
    def _rows_alone(self):
        if self.trainable == "rows" and (self.saliency is not None or self.project_retain):
            raise ValueError(
                "update.trainable: rows edits whole embedding rows; drop update.saliency / update.project_retain"
            )
        return self


class ReferenceCache:
    """Outputs of the frozen reference model, kept per sequence up to a byte budget.

    theta_0 never changes, so its logits on a forget slice are the same at every epoch and its logits on a
    retain document are the same for every request: recomputing them is pure waste (one reference forward
    per step and per retain batch).  Each sequence is run alone and cached unpadded; a batch is assembled by
    right-padding with zeros at positions the objectives mask out.  Exact up to batching round-off.
    """

    def __init__(self, max_mb: int):
        self.max_bytes = max_mb * 2**20
        self.used = 0
        self._store: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.hits = self.misses = 0

    @classmethod
    def for_config(cls, cfg: UpdateConfig) -> ReferenceCache | None:
        """The cache ``cfg.reference_cache_mb`` asks for (None when it is 0)."""
        return cls(cfg.reference_cache_mb) if cfg.reference_cache_mb else None

    def __len__(self) -> int:
        return len(self._store)

    def drop(self, kind: str) -> None:
        for key in [k for k in self._store if k[0] == kind]:
            logits, hidden = self._store.pop(key)
            self.used -= _nbytes(logits, hidden)

    def outputs(
        self, ref_model, examples: list[Example], keys: list[tuple], pad_id: int, device, hidden_layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        got = []
        for ex, key in zip(examples, keys, strict=True):
            key = (*key, hidden_layer)
            hit = self._store.get(key)
            if hit is None:
                self.misses += 1
                logits, hidden = _forward(ref_model, collate([ex], pad_id, device), hidden_layer, grad=False)
                hit = (logits[0], None if hidden is None else hidden[0])
                size = _nbytes(*hit)
                if self.used + size <= self.max_bytes:
                    self._store[key] = hit
                    self.used += size
            else:
                self.hits += 1
            got.append(hit)
        n = max(len(e.ids) for e in examples)
        return _pad([g[0] for g in got], n), (None if got[0][1] is None else _pad([g[1] for g in got], n))


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _pad(rows: list[torch.Tensor], n: int) -> torch.Tensor:
    out = rows[0].new_zeros((len(rows), n, *rows[0].shape[1:]))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def slices(text: str, size: int) -> list[str]:
    text = text.strip()
    return [s for s in (text[i : i + size] for i in range(0, len(text), size)) if s.strip()]


def forget_examples(
    tok, text: str | None, qa, cfg: UpdateConfig, common: frozenset[int] | None = None
) -> tuple[list[str], list[Example]]:
    """The sequences one request is unlearned on: its text cut into slices, then its QA pairs (answers
    scored, questions masked).  Returns (slices, examples).  Token ids in ``common`` (the template every
    document shares, :func:`common_tokens`) are not scored in the text slices."""
    texts = slices(text or "", cfg.slice_chars)
    docs = [doc_example(tok, s, cfg.max_len) for s in texts]
    if common:
        docs = [Example(e.ids, [IGNORE if t in common else t for t in e.labels]) for e in docs]
    return texts, docs + [qa_example(tok, q, cfg.max_len) for q in qa]


def saliency_masks(model, tok, params: list[torch.Tensor], examples: list[Example], fraction: float, batch_size=8):
    """Boolean masks, one per parameter, of the ``fraction`` of the weights with the largest |d CE / d w| on
    ``examples`` (one pass, accumulated over batches of ``batch_size``)."""
    device = params[0].device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(examples), batch_size):
            b = collate(examples[i : i + batch_size], tok.pad_token_id, device)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE
            ).backward()
    finally:
        model.train(was_training)
    grads = [p.grad.abs() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    total = sum(g.numel() for g in grads)
    k = max(1, int(fraction * total))
    # the k-th largest |grad| over all trainable weights, from a sample when there are too many to sort
    flat = torch.cat([g.reshape(-1) for g in grads])
    if flat.numel() > 2**24:
        flat = flat[torch.randint(0, flat.numel(), (2**24,), generator=torch.Generator().manual_seed(0))]
        k = max(1, int(fraction * flat.numel()))
    threshold = torch.topk(flat, k, sorted=False).values.min()
    return [g >= threshold for g in grads]


def common_tokens(tok, docs: list[Document], max_df: float) -> frozenset[int]:
    """Token ids that occur in more than ``max_df`` of ``docs`` (documents that are not forget requests):
    the template and function words every document shares, as opposed to the facts of one document."""
    df: dict[int, int] = {}
    for d in docs:
        for t in set(encode_text(tok, d.text, max_len=None, eos=True)):
            df[t] = df.get(t, 0) + 1
    return frozenset(t for t, n in df.items() if n > max_df * len(docs))


def examples_loss(model, tok, examples: list[Example], batch_size: int = 8, cap: float | None = None) -> float:
    """Mean token cross-entropy over all the scored tokens of ``examples`` (the closed loop's measure of how
    well the model knows a request: the very sequences its update trains on).  ``cap``: each token's loss counts
    at most this much (a winsorised mean: a few tokens made very unlikely cannot carry the rest)."""
    total, n = _loss_sums(model, tok, examples, batch_size, cap)
    return total / max(n, 1)


def _capped(lp: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Token log-probs with each loss capped at ``cap`` (unscored positions hold 0 and keep it)."""
    return lp if cap is None else lp.clamp_min(-cap)


def _scored_batches(model, tok, examples: list[Example], batch_size: int):
    """(token log-probs, scored mask) of ``examples`` in padded batches of ``batch_size``, in eval mode, no grad."""
    device = next(unwrap(model).parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(examples), batch_size):
            with torch.no_grad():  # closed before the yield: the caller's code keeps its own grad mode
                b = collate(examples[i : i + batch_size], tok.pad_token_id, device)
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                scored = token_logprobs(logits, b["labels"])
            yield scored
    finally:
        model.train(was_training)


def token_losses(model, tok, examples: list[Example], batch_size: int = 8) -> list[float]:
    """Every scored token's cross-entropy over ``examples`` (the distribution a stop's cap is read from)."""
    return [x for lp, mask in _scored_batches(model, tok, examples, batch_size) for x in (-lp[mask]).tolist()]


def _loss_sums(model, tok, examples: list[Example], batch_size: int = 8, cap: float | None = None) -> tuple[float, int]:
    """(summed token cross-entropy, each token's capped at ``cap``; scored tokens) over ``examples``, in padded
    batches of ``batch_size``."""
    total, n = 0.0, 0
    for lp, mask in _scored_batches(model, tok, examples, batch_size):
        total -= float(_capped(lp, cap).sum())
        n += int(mask.sum())
    return total, n


def examples_loss_reusing(model, tok, examples: list[Example], i: int, out: Outputs, cap: float | None = None) -> float:
    """:func:`examples_loss` of ``examples`` at the current weights, with example ``i``'s part read off ``out``, the
    training forward of that example alone at these weights (see :func:`deterministic_in_training`); the others
    run as :func:`examples_loss` runs them.  Equal to :func:`examples_loss` up to float rounding (example ``i`` in
    a batch of its own, its sum added apart)."""
    with torch.no_grad():
        lp, mask = token_logprobs(out.logits.detach(), out.labels)
    total, n = _loss_sums(model, tok, [e for j, e in enumerate(examples) if j != i], cap=cap)
    return (total - float(_capped(lp, cap).sum())) / max(n + int(mask.sum()), 1)


#: parts of configuration keys through which Hugging Face models draw at random in training only, without a module
#: (``attention_dropout`` of Llama and Qwen2, ``layerdrop``, the routers' ``router_jitter_noise``, MPT's ``emb_pdrop``)
_RANDOM_IN_TRAINING = ("dropout", "pdrop", "layerdrop", "jitter")


def _draws_at_random(config: dict) -> bool:
    """Whether a key of ``config`` (nested dicts included) names a training-time draw with a rate above 0."""
    return any(
        _draws_at_random(value)
        if isinstance(value, dict)
        else isinstance(key, str)
        and any(part in key for part in _RANDOM_IN_TRAINING)
        and isinstance(value, int | float)
        and value > 0
        for key, value in config.items()
    )


def deterministic_in_training(model) -> bool:
    """Whether ``model``'s forward in training mode computes what it does in eval mode: no dropout module with a
    rate above 0 (``_DropoutNd``: every torch dropout, PEFT's ``lora_dropout``) and no configuration key of a
    training-time draw with a rate above 0, sub-configurations included (SmolLM2, Llama and Qwen2 as published
    have none).  It errs on the safe side: a key it does not know to be random costs only the faster check."""
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return False
    config = getattr(model, "config", None)
    return config is None or not _draws_at_random(config.to_dict())


@torch.no_grad()
def example_loss_sums(model, tok, examples: list[Example]) -> list[tuple[float, int]]:
    """Per example, run alone: (summed token cross-entropy, scored tokens).  An example's value depends on nothing
    but the weights it reads, so a value kept from an earlier call stays exact while those weights do not move."""
    device = next(unwrap(model).parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for e in examples:
            b = collate([e], tok.pad_token_id, device)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lp, mask = token_logprobs(logits, b["labels"])
            out.append((-float(lp.sum()), int(mask.sum())))
    finally:
        model.train(was_training)
    return out


def next_check(stop: StopRule, steps: int, loss: float, prev_steps: int | None, prev_loss: float | None) -> int:
    """After a check at ``steps`` taken that measured ``loss`` (the one before: ``prev_steps``, ``prev_loss``; None
    when this was the first), the number of steps taken at which the next check falls.  With ``stop.check_ahead``
    it is that fraction of the steps a straight line through the two measures needs to the target, so that a check
    lands short of where the line crosses it, never sooner than ``check_every`` steps on and at most twice the last
    interval (a loss that has barely moved yet may take off: a memorised token's loss rises slowly until the model
    stops preferring it, then fast)."""
    step = steps + stop.check_every
    if stop.check_ahead is None or prev_steps is None or prev_loss is None or steps <= prev_steps:
        return step
    rate = (loss - prev_loss) / (steps - prev_steps)
    if rate <= 0:  # no progress to extrapolate: measure again as soon as a check is due
        return step
    ahead = min(int(stop.check_ahead * (stop.target - loss) / rate), 2 * (steps - prev_steps))
    return max(step, steps + ahead)


@dataclass(frozen=True)
class StopRule:
    """Closed loop: train until :func:`examples_loss` of the request reaches ``target`` (the non-member
    level), checked every ``check_every`` steps, within ``max_steps`` (a check read partly off the next step's
    forward where it can be: :func:`examples_loss_reusing`)."""

    target: float
    max_steps: int
    check_every: int = 1
    #: ``loop.check_ahead``: the next check after this fraction of the steps the last two measures extrapolate to
    #: the target (at least ``check_every``); None: every ``check_every`` steps
    check_ahead: float | None = None
    #: ``loop.stall_steps`` / ``loop.stall_rise``: stop once the loss rose less than ``stall_rise`` over at least
    #: ``stall_steps`` steps (None: never)
    stall_steps: int | None = None
    stall_rise: float = 0.03
    lr: float | None = None  #: the closed loop's learning rate (None: the update's)
    #: ``loop.target: base``: a model whose own loss on the request's sequences is that request's target
    #: (``target`` is then unused)
    target_model: object | None = None
    #: ``loop.target: both``: the request's target is the higher of ``target`` and ``target_model``'s loss
    at_least_level: bool = False
    #: ``loop.cap_quantile``: each token's loss counts at most this much in the request's loss, the target's alike
    cap: float | None = None


def _forward(model, batch: dict, hidden_layer: int | None, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (and one layer's hidden states) of ``model`` on ``batch``; a model on another device than the
    batch (``update.reference_device``) gets the batch moved to it and its outputs moved back."""
    here = batch["input_ids"].device
    there = next(model.parameters()).device
    if there != here:
        batch = {k: v.to(there) for k, v in batch.items()}
    with torch.set_grad_enabled(grad):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=hidden_layer is not None,
        )
    hidden = out.hidden_states[hidden_layer + 1] if hidden_layer is not None else None
    if there != here:
        return out.logits.to(here), None if hidden is None else hidden.to(here)
    return out.logits, hidden


def _outputs(
    model,
    ref_model,
    examples: list[Example],
    tok,
    device,
    with_ref: bool,
    hidden_layer: int | None,
    ref_hidden: bool,
    cache: ReferenceCache | None = None,
    keys: list[tuple] | None = None,
) -> Outputs:
    b = collate(examples, tok.pad_token_id, device)
    logits, hidden = _forward(model, b, hidden_layer, grad=True)
    out = Outputs(logits=logits, labels=b["labels"], hidden=hidden, attention_mask=b["attention_mask"])
    if not with_ref:
        return out
    return _with_reference(out, ref_model, examples, tok, device, hidden_layer if ref_hidden else None, cache, keys)


def _with_reference(
    out: Outputs,
    ref_model,
    examples: list[Example],
    tok,
    device,
    ref_layer: int | None,
    cache: ReferenceCache | None,
    keys: list[tuple] | None,
) -> Outputs:
    """``out`` with the frozen reference's outputs on the same ``examples`` (from ``cache`` where it holds them)."""
    if cache is not None:
        ref_logits, ref_h = cache.outputs(ref_model, examples, keys, tok.pad_token_id, device, ref_layer)
    else:
        ref_logits, ref_h = _forward(ref_model, collate(examples, tok.pad_token_id, device), ref_layer, grad=False)
    return replace(out, ref_logits=ref_logits, ref_hidden=ref_h)


def refusal_examples(
    tok, texts: list[str], qa: tuple[QA, ...], refusals: tuple[str, ...], rng: random.Random, max_len: int
) -> list[Example]:
    """Alternate targets for IdK-style objectives: (forget prompt -> refusal), one per forget example and in
    the forget examples' order (the slices ``texts``, then the QA pairs ``qa``), so that the alternate of step
    i answers the prompt of forget example i (IdkDPO's preferred and rejected sequences share their prompt).
    A slice's prompt is its first 32 tokens, a QA pair's its question prompt (masked out of the labels)."""
    out = []
    for t in texts:
        prompt = encode_text(tok, t, max_len=32, eos=False)
        target = encode_text(tok, " " + rng.choice(refusals), max_len=max_len - len(prompt))
        out.append(Example(prompt + target, [IGNORE] * len(prompt) + target))
    for q in qa:
        out.append(qa_example(tok, QA(q.question, rng.choice(refusals)), max_len))
    return out


def resolve_hidden_layer(model, layer: int) -> int:
    n = num_layers(model)
    return n // 3 if layer == -1 else layer % n


def edits_rows(cfg: UpdateConfig, rows: list[int] | None) -> bool:
    """Whether a request with own tokens ``rows`` gets a row edit (``cfg.trainable == "rows"``), rather than its
    plan's weights (``rows.fallback: full`` below ``rows.min_rows`` own tokens, or no row at all)."""
    # rarest: the rows were already widened as far as the request's tokens allow; any of them will do
    least = 1 if cfg.rows.fallback == "rarest" else cfg.rows.min_rows
    return cfg.trainable == "rows" and rows is not None and len(rows) >= least


def apply_update(
    model,
    ref_model,
    tok,
    plan: UpdatePlan,
    retain: list[Document],
    cfg: UpdateConfig,
    seed: int,
    accelerator=None,
    ref_cache: ReferenceCache | None = None,
    stop: StopRule | None = None,
    common: frozenset[int] | None = None,
    adapters: Adapters | None = None,
    adapter_name: str = "request",
    rows: list[int] | None = None,
) -> dict:
    """Run the plan's update on ``model`` in place; returns the per-request record.

    Open loop (``stop=None``): ``cfg.epochs`` passes over the request's examples.  Closed loop: steps cycle
    over the examples, the schedule spans ``stop.max_steps``, and the update stops as soon as the request's
    loss reaches ``stop.target``; the record says the loss before and after, the steps and why it stopped.

    ``ref_cache`` (made from ``cfg.reference_cache_mb`` when not given) keeps theta_0's outputs; pass the
    same cache to every request of a stream so that retain documents are run through theta_0 once.

    ``cfg.trainable == "lora"``: adapter ``adapter_name`` is attached to ``adapters`` (a merge-mode set made
    here when none is given), trained, then merged or kept as ``adapters`` says.

    ``cfg.trainable == "rows"``: only the input-embedding rows ``rows`` (the request's own tokens,
    :func:`own_tokens`, already widened to its rarest ones when ``cfg.rows.fallback`` is ``rarest``) move, at
    ``cfg.rows.lr``, the output layer untied first; fewer than ``cfg.rows.min_rows`` of them: the plan's
    weights are trained instead (``full``).
    """
    if ref_cache is None:
        ref_cache = ReferenceCache.for_config(cfg)
    spec, obj_cfg = plan.objective.spec, plan.objective.config
    base = unwrap(model)
    device = next(base.parameters()).device
    t0 = time.perf_counter()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    texts, forget_ex = forget_examples(tok, plan.text, plan.qa, cfg, common)
    is_qa = [False] * len(texts) + [True] * len(plan.qa)
    retain_qa = [(d.id, j, q) for d in retain for j, q in enumerate(d.qa)] if cfg.retain_match else []
    if not forget_ex:
        return {"skipped": True, "steps": 0, "seconds": 0.0}
    alt_ex = refusal_examples(tok, texts, plan.qa, obj_cfg.refusals, rng, cfg.max_len) if spec.needs_alternate else []
    # data parallel: each rank draws its own retain batches (rank 0 from ``rng``, as a single process does)
    retain_rng, drawn = retain_stream(rng, seed, rank_of(accelerator)), hashlib.sha256()
    hidden_layer = resolve_hidden_layer(base, obj_cfg.layer) if spec.needs_hidden else None

    row_edit = edits_rows(cfg, rows)
    world = accelerator.num_processes if accelerator is not None else 1
    edited = None  #: row edits on one process: the request's rows trained as a tensor of their own
    edited_out = None  #: and their output-layer rows (rows.side: both)
    both_sides = row_edit and cfg.rows.side == "both"
    if both_sides:  # before anything changes
        EditedOutputRows.require(base.get_output_embeddings())
    if row_edit:
        untie_embeddings(base)
        if both_sides:
            edited_out = EditedOutputRows(base.get_output_embeddings(), rows)
        if world == 1 and EditedRows.supports(base.get_input_embeddings(), rows):
            edited = EditedRows(base.get_input_embeddings(), rows)
    saved_flags = [(p, p.requires_grad) for p in base.parameters()]  # by identity: PEFT renames wrapped weights
    lora = None
    if edited is not None:
        names = set()  # none of the model's own tensors trains
    elif row_edit:
        names = {id(base.get_input_embeddings().weight)}
    elif cfg.trainable == "lora":
        lora = adapters if adapters is not None else Adapters(base, cfg.lora)
        names = {id(p) for p in lora.attach(adapter_name, plan.trainable)}
    else:
        names = {id(p) for p in trainable_params(base, plan.trainable)}
    params = []
    for p in base.parameters():
        p.requires_grad_(id(p) in names)
        if id(p) in names:
            params.append(p)
    lr = stop.lr if stop is not None and stop.lr is not None else cfg.lr
    masks = saliency_masks(model, tok, params, forget_ex, cfg.saliency) if cfg.saliency else None
    if edited is not None:
        lr, params = cfg.rows.lr, [edited.param]
        masks = [torch.ones(1, 1, dtype=torch.bool, device=edited.param.device)]  # every row of it moves
    elif row_edit:
        lr = cfg.rows.lr
        masks = [torch.zeros(params[0].shape[0], 1, dtype=torch.bool, device=params[0].device)]
        masks[0][rows] = True  # broadcast over the row: whole rows move
    if edited_out is not None:  # the output rows' scales: every one of them trains
        params.append(edited_out.param)
        masks.append(torch.ones(1, 1, dtype=torch.bool, device=edited_out.param.device))
    decay = 0.0 if masks is not None else cfg.weight_decay  # masked: decayed by hand, salient weights only
    # 16-bit weights: the optimiser steps fp32 master copies (a bf16 weight cannot hold a small step)
    masters = (
        [torch.nn.Parameter(p.detach().float().clone()) for p in params]
        if cfg.master_weights and any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
        else None
    )
    opt_params = masters if masters is not None else params
    normalized = row_edit and cfg.rows.step == "normalized"
    if cfg.optimizer == "sgd" or normalized:
        opt = torch.optim.SGD(opt_params, lr=lr, weight_decay=decay)
    else:
        opt = torch.optim.AdamW(
            opt_params, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=decay, **adamw_memory_kwargs(opt_params)
        )
    total = cfg.epochs * len(forget_ex) if stop is None else stop.max_steps
    order = [i % len(forget_ex) for i in range(total)]  # open loop: epoch after epoch over the examples
    loop: dict | None = None
    if stop is not None:
        cap = stop.cap
        target = stop.target if stop.target_model is None else examples_loss(stop.target_model, tok, forget_ex, cap=cap)
        loop = {"target": target, "loss_before": examples_loss(model, tok, forget_ex, cap=cap), "stopped": "budget"}
        if cap is not None:
            loop["cap"] = cap
        if stop.target_model is not None:
            loop["target_from"] = "base"
            if stop.at_least_level:
                loop["target_base"], loop["target_level"], loop["target_from"] = target, stop.target, "both"
                loop["target"] = target = max(target, stop.target)
        if loop["loss_before"] >= target:
            order, loop["stopped"] = [], "target"  # already at the non-member level: nothing to do
        #: the request's loss as measured, [steps taken, loss], from before the first step to the last check
        loop["measured"] = [[0, loop["loss_before"]]]
    due = stop.check_every if stop is not None else 0  #: the steps taken at which the next check falls
    sched = make_scheduler(opt, total, cfg.warmup_ratio, cfg.min_lr_ratio)
    losses, first_loss = [], None
    proj_stats: list[float] = []  #: per step: cosine of the step's gradient with the retain gradient (projection)
    _reset_peak_memory(device)
    request_text = plan.text or ""
    ce_before = mean_ce(model, tok, [request_text], cfg.max_len)[0] if request_text.strip() else None
    if cfg.gradient_checkpointing:
        _checkpointing(base, True)
    model.train()
    ok = False
    # the check after a step is read off the next step's forward where that forward computes what the check's would
    # (one process, no dropout): of the request's sequences only the others are run again
    fused_check = loop is not None and world == 1 and deterministic_in_training(base)
    check_due = False  #: a check is to be read off this step's forward, before the step trains
    checked = -1  #: steps taken when the request's loss was last measured
    forget_ref = spec.needs_reference and not spec.needs_hidden
    if edited is not None:
        edited.attach()
    if edited_out is not None:
        edited_out.attach()
    try:
        for step, i in enumerate(order):
            ex = forget_ex[i]
            forget = _outputs(
                model,
                ref_model,
                [ex],
                tok,
                device,
                forget_ref and not check_due,
                hidden_layer,
                ref_hidden=False,
                cache=ref_cache,
                keys=[("forget", i)],
            )
            if check_due:  # the weights of the last check point: stop before this step trains
                check_due = False
                loop["loss_after"], checked = examples_loss_reusing(model, tok, forget_ex, i, forget, cap), len(losses)
                due = _measured(loop, stop, checked)
                if loop["stopped"] != "budget":
                    break
                if forget_ref:  # asked for only once the step goes on, as a separate check would
                    forget = _with_reference(forget, ref_model, [ex], tok, device, None, ref_cache, [("forget", i)])
            retain_out = alternate = None
            if spec.uses_retain(obj_cfg) and retain and cfg.retain_batch_size:
                if is_qa[i] and retain_qa:  # unlearning an answer: anchor answers to retain questions
                    qa_picked = retain_rng.sample(retain_qa, min(cfg.retain_batch_size, len(retain_qa)))
                    r_ex = [qa_example(tok, q, cfg.max_len) for _, _, q in qa_picked]
                    r_keys = [("retain-qa", did, j) for did, j, _ in qa_picked]
                else:
                    picked = retain_rng.sample(retain, min(cfg.retain_batch_size, len(retain)))
                    r_ex = [doc_example(tok, d.text, cfg.max_len) for d in picked]
                    r_keys = [("retain", d.id) for d in picked]
                drawn.update(repr(r_keys).encode())
                retain_out = _outputs(
                    model,
                    ref_model,
                    r_ex,
                    tok,
                    device,
                    spec.reference_on_retain,
                    hidden_layer,
                    ref_hidden=spec.needs_hidden,
                    cache=ref_cache,
                    keys=r_keys,
                )
            if alt_ex:  # the refusal on forget example i's own prompt
                alternate = _outputs(
                    model,
                    ref_model,
                    [alt_ex[i]],
                    tok,
                    device,
                    spec.needs_reference,
                    None,
                    ref_hidden=False,
                    cache=ref_cache,
                    keys=[("alternate", i)],
                )
            loss = spec.fn(UnlearnBatch(forget=forget, retain=retain_out, alternate=alternate, generator=gen), obj_cfg)
            finite = bool(torch.isfinite(loss))
            if world > 1:  # every rank skips the step, or none does (the gradient reduction is collective)
                finite = all_ranks_true(finite, accelerator, device)
            if not finite:
                losses.append(float("nan"))
                opt.zero_grad(set_to_none=True)
                continue
            (accelerator.backward(loss) if accelerator is not None else loss.backward())
            if cfg.project_retain and retain and cfg.retain_batch_size:
                proj = _project_on_retain(model, tok, params, retain, retain_rng, cfg, device)
                proj_stats.append(proj)
            if world > 1 and not reduces_gradients(model):  # FSDP reduces the gradients itself
                _all_reduce_grads(params, world)
            if masks is not None:
                for p, m in zip(params, masks, strict=True):
                    if p.grad is not None:
                        p.grad.mul_(m)
            if masters is not None:  # the fp32 copies take the gradient
                for m, p in zip(masters, params, strict=True):
                    m.grad = None if p.grad is None else p.grad.float()
                    p.grad = None
            if normalized:  # rows.step: normalized: a step of length lr along the rows' gradient
                grads = [p.grad for p in opt_params if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads).clamp_min(1e-12)
                for g in grads:
                    g.div_(norm)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(opt_params, cfg.max_grad_norm)
            if masks is not None and cfg.weight_decay:  # decoupled decay of the salient weights only
                with torch.no_grad():
                    step_lr = opt.param_groups[0]["lr"]
                    for p, m in zip(opt_params, masks, strict=True):
                        p.mul_(1 - step_lr * cfg.weight_decay * m)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if masters is not None:
                with torch.no_grad():
                    for m, p in zip(masters, params, strict=True):
                        p.copy_(m)
            if edited_out is not None:  # the output rows' scales stay in [0, 1] (the last of the parameters)
                edited_out.project()
                if masters is not None:
                    masters[-1].data.clamp_(0.0, 1.0)
            losses.append(float(loss.detach()))
            if first_loss is None:
                first_loss = losses[-1]
            if loop is not None and step + 1 == due:
                if fused_check and step + 1 < len(order):
                    check_due = True
                    continue
                loop["loss_after"], checked = examples_loss(model, tok, forget_ex, cap=stop.cap), len(losses)
                due = _measured(loop, stop, checked)
                if loop["stopped"] != "budget":
                    break
        ok = True
    finally:
        model.eval()
        if cfg.gradient_checkpointing:
            _checkpointing(base, False)
        if lora is not None:  # merged (merge mode) or kept frozen (stack); a failed update's adapter is dropped
            lora.finish(adapter_name) if ok else lora.discard(adapter_name)
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        if ref_cache is not None:  # forget slices and refusals are this request's; retain documents stay
            ref_cache.drop("forget")
            ref_cache.drop("alternate")
        if edited is not None:  # the trained rows into the matrix, the hook off
            edited.close()
        if edited_out is not None:
            edited_out.close()
    ce_after = mean_ce(model, tok, [request_text], cfg.max_len)[0] if request_text.strip() else None
    record = {
        "request_ce_before": ce_before,
        "request_ce_after": ce_after,
        "objective": plan.objective.name,
        "objective_params": plan.objective.params(),
        "steps": len(losses),
        "slices": len(texts),
        "qa_items": len(plan.qa),
        "loss_first": first_loss,
        "loss_last": losses[-1] if losses else None,
        "losses": losses,
        "params_touched": len(rows) * (params[0].shape[-1] + (edited_out is not None))
        if row_edit
        else sum(p.numel() for p in params),
        "tensors_touched": len(params),
        **({"adapter": adapter_name, "lora_mode": lora.cfg.mode} if lora is not None else {}),
        "retain_drawn": drawn.hexdigest()[:16],  #: digest of the retain items this rank drew, in order
        **({"weights_salient": int(sum(int(m.sum()) for m in masks))} if masks is not None and not row_edit else {}),
        **(
            {
                "rows": {
                    "edited": row_edit,
                    "tokens": list(rows),
                    "decoded": [tok.decode([t]) for t in rows],
                    **(
                        {
                            "side": "both",
                            "output_scale": [round(float(v), 4) for v in edited_out.param.detach().flatten()],
                        }
                        if edited_out is not None
                        else {}
                    ),
                }
            }
            if cfg.trainable == "rows" and rows is not None
            else {}
        ),
        **(
            {"projected_steps": sum(c < 0 for c in proj_stats), "retain_cosine": proj_stats[:64]}
            if cfg.project_retain
            else {}
        ),
        "seconds": time.perf_counter() - t0,
        "peak_memory_bytes": _peak_memory(device),
    }
    if loop is not None:
        if checked != len(losses):  # no check measured the final weights (a budget the checks did not end on)
            loop["loss_after"] = examples_loss(model, tok, forget_ex, cap=stop.cap) if losses else loop["loss_before"]
            if losses:
                loop["measured"].append([len(losses), loop["loss_after"]])
        loop["steps"] = len(losses)
        record["loop"] = loop
    if ref_cache is not None:
        record["reference_cache"] = {"hits": ref_cache.hits, "misses": ref_cache.misses, "bytes": ref_cache.used}
    return record


def stalled(stop: StopRule, measured: list[list]) -> bool:
    """Whether the last of ``measured`` ([steps taken, loss], in order) rose less than ``stop.stall_rise`` over the
    last measure at least ``stop.stall_steps`` steps before it (False without a stall window or such a measure)."""
    if stop.stall_steps is None:
        return False
    steps, loss = measured[-1]
    before = [lo for s, lo in measured[:-1] if s <= steps - stop.stall_steps]
    return bool(before) and loss - before[-1] < stop.stall_rise


def _measured(loop: dict, stop: StopRule, steps: int) -> int:
    """Note the check just made (``loop["loss_after"]`` after ``steps`` steps), set ``loop["stopped"]`` to
    ``target`` or ``stalled`` where the request stops here, and return when the next check is due."""
    prev_steps, prev_loss = loop["measured"][-1]
    loop["measured"].append([steps, loop["loss_after"]])
    if loop["loss_after"] >= loop["target"]:
        loop["stopped"] = "target"
    elif stalled(stop, loop["measured"]):
        loop["stopped"] = "stalled"
    return next_check(stop, steps, loop["loss_after"], prev_steps, prev_loss)


def _project_on_retain(model, tok, params, retain: list[Document], rng: random.Random, cfg: UpdateConfig, device):
    """A-GEM: replace the gradients ``g`` in ``params`` by ``g - min(0, g.r) / |r|^2 r`` with ``r`` the gradient
    of the cross-entropy on a retain batch drawn with ``rng``; returns the cosine of ``g`` and ``r`` before."""
    g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    picked = rng.sample(retain, min(cfg.retain_batch_size, len(retain)))
    b = collate([doc_example(tok, d.text, cfg.max_len) for d in picked], tok.pad_token_id, device)
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
    F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE).backward()
    r = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
    dot = sum(float((a * c).sum()) for a, c in zip(g, r, strict=True))
    rr = sum(float((c * c).sum()) for c in r)
    gg = sum(float((a * a).sum()) for a in g)
    if dot < 0 and rr > 0:
        for a, c in zip(g, r, strict=True):
            a.sub_(c, alpha=dot / rr)
    for p, a in zip(params, g, strict=True):
        p.grad = a
    return dot / max((gg * rr) ** 0.5, 1e-30)


def _checkpointing(model, on: bool) -> None:
    """Activation checkpointing on or off (transformers makes the inputs require grad when it is on)."""
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.enable_input_require_grads()  # older transformers: frozen embeddings would cut the gradient
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
        model.disable_input_require_grads()


def _all_reduce_grads(params, world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _reset_peak_memory(device: torch.device) -> None:
    """Start counting this request's peak: CUDA's allocator statistics, or on Linux the process's resident
    high-water mark (VmHWM := VmRSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_memory(device: torch.device) -> int:
    """The request's peak: CUDA max allocated; on CPU the resident high-water mark since
    :func:`_reset_peak_memory` (Linux), else the process's lifetime peak (``ru_maxrss``)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return 0


__all__ = ["ReferenceCache", "UpdateConfig", "apply_update", "qa_prompt", "slices"]

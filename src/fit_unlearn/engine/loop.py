"""Closed-loop unlearning: forget each request to the non-member level and no further; guard utility.

**Stop at the non-member level.**  What a model scores on a document it never saw is measured once, before
the stream, on the prepared *holdout* split (documents theta_0 was never trained on): for each holdout
document, the mean token cross-entropy of theta_0 over the sequences an update would train on (its text
slices and its QA answers, :func:`~fit_unlearn.engine.update.forget_examples`).  The target is a quantile
of that distribution (``loop.quantile``, the median by default).  Each request is then unlearned in small
steps and stops as soon as its own loss reaches the target (``StopRule``), or when ``loop.max_steps`` are
spent (``loop.cap_quantile``: each token's loss capped, in the target and the request's loss alike); the
receipt records the target, the loss before and after, the steps and why it stopped.  No retain-only model is
needed: a user computes the target from data the model never saw.

**Guard utility.**  A fixed probe of retain-*train* documents (never retain-eval, which measures utility,
and never an anchor of the updates: the probe must see what an update does to documents it does not train
on) is scored after every request; when its loss has risen more than ``guard.budget`` (relative) above
theta_0's, repair steps on the other retain-train documents (KL to theta_0 by default, or CE) bring it
back below half the budget, within ``guard.max_steps``.  Both are deterministic (seeded by the request's
position), journaled with the request and part of the configuration hash, so exactly-once and
bit-identical resume hold.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fit_unlearn.data.documents import Document
from fit_unlearn.engine.update import (
    ReferenceCache,
    StopRule,
    UpdateConfig,
    _outputs,
    example_loss_sums,
    examples_loss,
    forget_examples,
    token_losses,
)
from fit_unlearn.errors import ConfigError, ModelError
from fit_unlearn.layers import unwrap
from fit_unlearn.models import model_hash, resolve_model_path
from fit_unlearn.objectives.base import cross_entropy, kl_to_reference
from fit_unlearn.schema import Section
from fit_unlearn.text import doc_example


class GuardConfig(Section):
    """The utility guard of the closed loop."""

    enabled: bool = True
    """Score the probe after every request and repair when it drifts."""
    probe_size: int = Field(default=4, ge=1)
    """Retain-train documents in the probe (the first ones in id order; the others are the repair pool)."""
    budget: float = Field(default=0.05, gt=0)
    """Relative rise of the probe's loss over theta_0's that triggers a repair."""
    max_steps: int = Field(default=10, ge=0)
    """Repair steps at most per request."""
    loss: Literal["kl", "ce"] = "kl"
    """Repair objective on retain-train documents: KL(theta_0 || model) or plain cross-entropy."""
    batch_size: int = Field(default=2, ge=1)
    """Retain-train documents per repair step."""
    scope: Literal["all", "update"] = "all"
    """Which weights a repair trains: ``all`` of the model's, or only those the request's ``update`` trained (FIT's
    attributed layers, a baseline's ``strategy.trainable``: whole tensors, also under ``update.saliency``), where
    its damage was done.  Not with merged LoRA updates (stacked ones repair the request's adapter either way)."""
    lr: float | None = Field(default=1e-5, gt=0)
    """Learning rate of the repair (``null``: ``loop.lr``).  A repair step that does not lower the probe's
    loss is undone and ends the repair (or halves the learning rate, ``backtrack``), so the guard never leaves
    the probe worse than it found it."""
    backtrack: int = Field(default=0, ge=0)
    """How many times an undone repair step halves the learning rate and tries again before the repair ends
    (every try counts against ``max_steps``).  The retry draws the next repair batch; the optimiser's moments
    keep the undone step's gradient, and the halved rate holds for the rest of the repair."""


class LoopConfig(Section):
    """Closed-loop unlearning (the ``loop`` section of a run configuration); see the module docstring."""

    enabled: bool | None = None
    """On or off.  Unset: the strategy's own default (FIT: on, with token-keyed edits; the baselines: off, as
    published).  ``null``: the strategy's ``closed_loop`` flag (off for every built-in strategy; journals written
    before session 21 recorded ``null`` for off)."""
    stop: bool = True
    """Stop each request at the non-member level (``false``: the open-loop recipe of ``update``, with the
    guard alone; an ablation)."""
    target: Literal["holdout", "base", "both"] = "holdout"
    """Where the stop target comes from.  ``holdout``: quantile ``loop.quantile`` of theta_0's losses on the
    holdout split, one value for every request.  ``base``: the base model's own loss on each request (what the
    model knew before it was fine-tuned on the document; needs the base model, ``loop.base_model``).  ``both``: the
    higher of the two, per request (the document must look unseen by both measures)."""
    base_model: str | None = None
    """The base model of ``target: base`` and ``both``: a local model directory; ``null``: the base model the prepared
    directory's recipe records (the one theta_0 was fine-tuned from)."""
    quantile: float = Field(default=0.5, gt=0, lt=1)
    """Quantile of theta_0's holdout (non-member) losses that is the stop target (``target: holdout``)."""
    neighbours: int | None = Field(default=None, ge=1)
    """Each request's own target (``target: holdout`` or ``both``): quantile ``loop.quantile`` of theta_0's losses on
    the ``neighbours`` holdout documents most like the request (cosine of TF-IDF word vectors, fitted on the holdout
    texts), instead of one quantile over the whole holdout.  Documents of different kinds are unseen at different
    losses (theta_0's median on synthetic holdout code 1.84, personal records 3.82; the one target 2.69 left code
    over-forgotten and personal records under-forgotten, benchmarks/README.md, "Session 27").  The receipt names the
    neighbours.  ``null``: one target for every request.  FIT's default is 3 (session 32): over three stream orders
    of real PCH 60 it meets strict F.D. >= 0.90 with R.U. >= 0.95 at 6 of 9 checkpoints (one target: 2), on synthetic
    60 at 5 of 9 (one target: 5), on synthetic 120 at 1 of 6 (one target: 2; utility lower at every checkpoint)
    (benchmarks/README.md, "Session 32").  Dropped from FIT's defaults when a
    configuration sets ``target: base``."""
    cap_quantile: float | None = Field(default=None, gt=0, le=1)
    """Cap each token's loss, in the stop's measure, at this quantile of theta_0's per-token losses on the holdout
    (a winsorised mean; the target is measured the same way).  ``null``: the plain mean, which a few tokens driven to
    very low probability can carry to the target while the rest of the document is still recalled; with a cap,
    a request stops only once enough of its tokens are as surprising as a non-member's (docs/engine.md, "A capped
    measure"; FIT's default 0.7)."""
    lr: float | None = Field(default=1e-4, gt=0)
    """Learning rate of closed-loop updates (``null``: ``update.lr``).  1e-4 reaches the target of the
    default model (SmolLM2-135M, fp32) in 3-16 steps with NPO; 3e-5 (the open-loop recipe) does not within
    40 (benchmarks/README.md, closed loop)."""
    max_steps: int = Field(default=40, ge=1)
    """Step budget per request (the learning-rate schedule spans it)."""
    check_every: int = Field(default=1, ge=1)
    """Steps between two measurements of the request's loss (each read partly off the next step's forward where
    that forward computes the same: docs/engine.md, "Stop")."""
    check_ahead: float | None = Field(default=None, gt=0, le=1)
    """Space the checks by the loss's own progress: after a check, the next comes once this fraction of the steps
    that a straight line through the last two measures needs to reach the target has been taken (at least
    ``check_every``, at most twice the last interval; the first check after ``check_every``).  Far from the target
    a request is measured rarely, near it every ``check_every`` steps.  ``null``: every ``check_every`` steps
    (docs/engine.md, "Stop")."""
    stall_steps: int | None = Field(default=None, ge=1)
    """Stop a request whose loss has stalled short of the target: at a check, when it rose less than
    ``stall_rise`` since the last measure at least this many steps before (``stopped: stalled``).  Row edits cannot
    reach the tokens before a document's first own token, so some requests level off below the target and would
    spend the rest of the budget for a few hundredths of a nat.  ``null``: only the target or the budget stops."""
    stall_rise: float = Field(default=0.03, gt=0)
    """The rise in nats, over ``stall_steps`` steps, below which a request counts as stalled."""
    guard: GuardConfig = GuardConfig()
    """The utility guard."""

    @model_validator(mode="after")
    def _neighbours_need_the_holdout_level(self):
        if self.neighbours is not None and self.target == "base":
            raise ValueError(
                "loop.neighbours picks holdout documents for the target, but loop.target is 'base' (the base model's "
                "own loss); use loop.target: holdout or both, or drop loop.neighbours"
            )
        return self


def nonmember_level(
    model,
    tok,
    holdout: list[Document],
    include_qa: bool,
    cfg: UpdateConfig,
    q: float,
    common: frozenset[int] | None = None,
    cap_quantile: float | None = None,
) -> dict:
    """The stop target: quantile ``q`` of the model's loss on each holdout document (never trained on),
    measured as requests are (``common``: the template tokens left unscored; ``cap_quantile``: each token's loss
    capped at that quantile of all the holdout's token losses, the cap returned with the target)."""
    if not holdout:
        raise ConfigError(
            "loop: the closed loop needs the prepared holdout split (documents the model never saw) to set its "
            "target; prepare with a holdout file, or set loop.enabled: false"
        )
    examples = [forget_examples(tok, d.text, d.qa if include_qa else (), cfg, common)[1] for d in holdout]
    capped = {}
    if cap_quantile is None:
        losses = [examples_loss(model, tok, ex) for ex in examples]
    else:  # one pass: every token's loss, then each document's capped mean
        per_doc = [np.asarray(token_losses(model, tok, ex), dtype=np.float64) for ex in examples]
        cap = float(np.quantile(np.concatenate(per_doc), cap_quantile))
        losses = [float(np.minimum(x, cap).sum() / max(len(x), 1)) for x in per_doc]
        capped = {"cap": cap, "cap_quantile": cap_quantile}
    return {"target": float(np.quantile(losses, q)), "quantile": q, "n": len(losses), "losses": losses, **capped}


class NeighbourTargets:
    """``loop.neighbours``: a request's stop target from the holdout documents most like it.  ``losses``: theta_0's
    loss on each of ``holdout`` (as :func:`nonmember_level` measured them, in that order)."""

    def __init__(self, holdout: list[Document], losses: list[float], k: int, q: float):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(losses) != len(holdout):
            raise ConfigError(
                f"loop.neighbours: the journaled non-member level holds {len(losses)} holdout losses but the "
                f"holdout split has {len(holdout)} documents; resume with the prepared directory the run began with"
            )
        self.k, self.q = min(k, len(holdout)), q
        self.ids, self.losses = [d.id for d in holdout], np.asarray(losses, dtype=np.float64)
        self.vectorizer = TfidfVectorizer(sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform([d.text for d in holdout])

    def target(self, text: str) -> tuple[float, list[str]]:
        """(the target, the neighbours' ids, nearest first) of a request whose document is ``text``."""
        sim = (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
        near = np.argsort(-sim, kind="stable")[: self.k]  # ties: the holdout's own order
        return float(np.quantile(self.losses[near], self.q)), [self.ids[i] for i in near]


def _mean_loss(sums: list[tuple[float, int]]) -> float:
    """Mean token loss over sequences given as (loss sum, scored tokens), as :func:`example_loss_sums` returns."""
    return sum(s for s, _ in sums) / max(sum(n for _, n in sums), 1)


class Guard:
    """Probe + repair (see the module docstring)."""

    def __init__(
        self,
        cfg: GuardConfig,
        retain_train: list[Document],
        tok,
        update: UpdateConfig,
        lr: float | None = None,
        per_sequence: bool = False,
    ):
        """``per_sequence`` (row edits): each probe sequence is scored alone, and :meth:`drift` keeps the scores of
        the sequences a row edit cannot have changed."""
        docs = sorted(retain_train, key=lambda d: d.id)
        if len(docs) < 2:
            raise ConfigError("loop.guard needs at least 2 retain-train documents (a probe and a repair pool)")
        n = min(cfg.probe_size, len(docs) - 1)
        self.cfg, self.update, self.lr = cfg, update, cfg.lr if cfg.lr is not None else lr
        self.probe = [doc_example(tok, d.text, update.max_len) for d in docs[:n]]
        self.probe_ids = frozenset(d.id for d in docs[:n])
        self.pool = [doc_example(tok, d.text, update.max_len) for d in docs[n:]]
        self.pool_ids = [d.id for d in docs[n:]]
        self.baseline: float | None = None
        self.per_sequence = per_sequence
        self._probe_tokens = [frozenset(e.ids) for e in self.probe]
        #: per_sequence: per probe sequence, (loss sum, tokens) of the model as last measured (None: measure all)
        self._sums: list[tuple[float, int]] | None = None

    def calibrate(self, model, tok) -> dict:
        if self.per_sequence:
            self.baseline = _mean_loss(example_loss_sums(model, tok, self.probe))
        else:
            self.baseline = examples_loss(model, tok, self.probe)
        return {"probe_loss": self.baseline, "probe": len(self.probe), "pool": len(self.pool)}

    def drift(self, model, tok, rows=None) -> float:
        """The probe's loss over theta_0's, minus 1.  ``rows`` (with ``per_sequence``): the only weights changed
        since the last measurement are these input-embedding rows of an untied model (a row edit), so a probe
        sequence without those tokens computes exactly as before and only the others run again; each sequence
        runs alone, so that a kept value and a fresh one are the same number, on a resumed run too.  ``None``:
        any weight may have changed, every sequence runs."""
        if not self.per_sequence:
            return examples_loss(model, tok, self.probe) / self.baseline - 1
        rows = frozenset(rows) if rows is not None else None
        redo = [i for i, ids in enumerate(self._probe_tokens) if self._sums is None or rows is None or ids & rows]
        sums = list(self._sums) if self._sums is not None else [(0.0, 0)] * len(self.probe)
        for i, v in zip(redo, example_loss_sums(model, tok, [self.probe[i] for i in redo]), strict=True):
            sums[i] = v
        self._sums = sums
        return _mean_loss(sums) / self.baseline - 1

    def check(
        self,
        model,
        ref_model,
        tok,
        seed: int,
        cache: ReferenceCache | None,
        params=None,
        repair: bool = True,
        rows=None,
    ) -> dict:
        """Score the probe; repair if it drifted past the budget.  Returns what the receipt records.
        ``params``: the weights a repair may train (None: all of the model's); ``repair=False``: measure only
        (row edits: a repair of every weight would move what the edit left untouched); ``rows``: the request
        changed these input-embedding rows and nothing else (:meth:`drift`)."""
        t0 = time.perf_counter()
        before = self.drift(model, tok, rows)
        rec = {"drift_before": before, "repair_steps": 0}
        if before > self.cfg.budget and self.cfg.max_steps and not repair:
            rec["repair_skipped"] = "row edits are not repaired"
        elif before > self.cfg.budget and self.cfg.max_steps:
            rec["repair_steps"], after, rec["repair_undone"] = self._repair(
                model, ref_model, tok, seed, cache, before, params
            )
            rec["drift_after"] = after
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _repair(
        self, model, ref_model, tok, seed: int, cache: ReferenceCache | None, drift: float, params=None
    ) -> tuple[int, float, int]:
        """Repair steps until the drift is below half the budget; returns (steps kept, drift, steps undone)."""
        base = unwrap(model)
        device = next(base.parameters()).device
        rng = random.Random(seed ^ 0x5EED)
        params = list(base.parameters()) if params is None else list(params)
        saved = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        u = self.update
        opt = torch.optim.AdamW(params, lr=self.lr or u.lr, betas=u.betas, eps=u.eps, weight_decay=0.0)
        steps = undone = 0
        model.train()
        try:
            while steps + undone < self.cfg.max_steps and drift > self.cfg.budget / 2:
                saved_w = [p.detach().clone() for p in params]
                idx = rng.sample(range(len(self.pool)), min(self.cfg.batch_size, len(self.pool)))
                out = _outputs(
                    model,
                    ref_model,
                    [self.pool[i] for i in idx],
                    tok,
                    device,
                    with_ref=self.cfg.loss == "kl",
                    hidden_layer=None,
                    ref_hidden=False,
                    cache=cache,
                    keys=[("retain", self.pool_ids[i]) for i in idx],
                )
                loss = kl_to_reference(out) if self.cfg.loss == "kl" else cross_entropy(out)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                new = self.drift(model, tok)
                if new >= drift:  # no better: undo the step; stop, or try again at half the learning rate
                    with torch.no_grad():
                        for p, w in zip(params, saved_w, strict=True):
                            p.copy_(w)
                    undone += 1
                    if undone > self.cfg.backtrack:
                        break
                    for group in opt.param_groups:
                        group["lr"] /= 2
                    continue
                steps += 1
                drift = new
        finally:
            model.eval()
            for p, f in zip(params, saved, strict=True):
                p.requires_grad_(f)
        return steps, drift, undone


def base_model_path(cfg: LoopConfig, recipe: Path) -> tuple[Path, str | None]:
    """The base model of ``loop.target: base`` (or ``both``) and the hash its weights must have:
    ``loop.base_model`` (no hash to check), else the model and hash ``recipe`` (a prepared directory's recipe.json)
    records.  Checked before any work: a directory that is missing, or that no longer holds the weights the recipe
    recorded, is a clear error."""
    if cfg.base_model is not None:
        where, path, want = "loop.base_model", cfg.base_model, None
    else:
        try:
            rec = json.loads(recipe.read_text())
            where, path, want = f"the base model {recipe} records", rec["base_model"], rec.get("base_model_hash")
        except (OSError, ValueError, KeyError):
            raise ConfigError(
                f"loop.target: {cfg.target} needs the base model theta_0 was fine-tuned from, and {recipe} does not "
                "record one; set loop.base_model to its directory"
            ) from None
    try:
        resolved = resolve_model_path(path)
    except ModelError as e:
        raise ConfigError(
            f"loop.target: {cfg.target}: {where}: {e}; set loop.base_model to the base model's directory"
        ) from None
    if want is not None and model_hash(resolved) != want:
        raise ConfigError(
            f"loop.target: {cfg.target}: {resolved} no longer holds the weights theta_0 was fine-tuned from (hash "
            f"{model_hash(resolved)}, recipe {want}); set loop.base_model to the base model's directory"
        )
    return resolved, want


def stop_rule(level: dict, cfg: LoopConfig) -> StopRule:
    return StopRule(
        target=level["target"],
        max_steps=cfg.max_steps,
        check_every=cfg.check_every,
        check_ahead=cfg.check_ahead,
        stall_steps=cfg.stall_steps,
        stall_rise=cfg.stall_rise,
        lr=cfg.lr,
        at_least_level=cfg.target == "both",
        cap=level.get("cap"),  # a level journaled before caps existed has none
    )

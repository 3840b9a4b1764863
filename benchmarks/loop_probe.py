"""Closed-loop probe: where does the damage of "forget to the non-member level" come from?

A few forget documents of a prepared directory are unlearned one after another with the closed loop's stop
rule (engine/loop.py: stop once the request's loss reaches the median loss of theta_0 on holdout documents),
for several variants (objective, learning rate, trainable layers).  After the requests, the mean loss
(the closed loop's measure: text slices and QA answers) of (a) documents of the forget set not requested
and (b) retain-eval documents is compared with theta_0's: the collateral damage that the full stream would
accumulate.  Cheap (no generation, no full evaluation): a minute or two per variant on 2 CPU cores.

    python benchmarks/loop_probe.py --prepared fit_runs/prepared --requests 3 --name synth
Writes benchmarks/results/loop_probe-<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import fit_unlearn.engine.update as upd  # noqa: E402
from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.loop import nonmember_level  # noqa: E402
from fit_unlearn.engine.rows import untie_embeddings  # noqa: E402
from fit_unlearn.engine.update import (  # noqa: E402
    StopRule,
    UpdateConfig,
    apply_update,
    common_tokens,
    examples_loss,
    forget_examples,
)
from fit_unlearn.layers import num_layers, trainable_names  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402
from fit_unlearn.objectives import resolve_objective  # noqa: E402
from fit_unlearn.strategies.base import UpdatePlan  # noqa: E402

#: name -> (objective, lr, trainable: "all", or that fraction of the decoder layers, the last ones[, "facts"])
#: "facts": the text's template tokens (ids in more than 20% of the retain-train + holdout documents) are not
#: trained on nor measured; the target is measured the same way on the holdout; then the optimizer ("adamw" or
#: "sgd") and a dict of further UpdateConfig settings
VARIANTS = {
    "npo sgd clip 1 lr1e-1 last 25% of layers facts only": ("npo", 1e-1, 0.25, "facts", "sgd", {"max_grad_norm": 1.0}),
    "graddiff lr1e-4 facts only saliency 1%": ("graddiff", 1e-4, "all", "facts", "adamw", {"saliency": 0.01}),
    "graddiff lr1e-4 last 25% of layers facts only saliency 1%": (
        "graddiff",
        1e-4,
        0.25,
        "facts",
        "adamw",
        {"saliency": 0.01},
    ),
    "graddiff lr1e-4 last 25% of layers facts only wd 0": (
        "graddiff",
        1e-4,
        0.25,
        "facts",
        "adamw",
        {"weight_decay": 0.0},
    ),
    "npo lr1e-4 facts only saliency 1%": ("npo", 1e-4, "all", "facts", "adamw", {"saliency": 0.01}),
    "graddiff lr1e-4 facts only saliency 0.1%": ("graddiff", 1e-4, "all", "facts", "adamw", {"saliency": 0.001}),
    "me lr1e-4 last 25% of layers facts only": ("me", 1e-4, 0.25, "facts"),
    "next_best lr1e-4 last 25% of layers facts only": ("next_best", 1e-4, 0.25, "facts"),
    "next_best lr1e-4 facts only": ("next_best", 1e-4, "all", "facts"),
    "npo sgd clip 1 lr1e-2 last 25% of layers facts only": ("npo", 1e-2, 0.25, "facts", "sgd", {"max_grad_norm": 1.0}),
    "graddiff sgd clip 1 lr1e-2 last 25% of layers facts only": (
        "graddiff",
        1e-2,
        0.25,
        "facts",
        "sgd",
        {"max_grad_norm": 1.0},
    ),
    "npo lr1e-4 facts only": ("npo", 1e-4, "all", "facts"),
    # only the embedding rows of the request's rare tokens (in no retain-train / holdout document)
    "graddiff rows lr1e-3 facts only": ("graddiff", 1e-3, "rows", "facts", "adamw", {"rows": 0.0}),
    "graddiff rows lr1e-2 facts only": ("graddiff", 1e-2, "rows", "facts", "adamw", {"rows": 0.0}),
    "npo rows lr1e-2 facts only": ("npo", 1e-2, "rows", "facts", "adamw", {"rows": 0.0}),
    "ga rows lr1e-2 facts only": ("ga", 1e-2, "rows", "facts", "adamw", {"rows": 0.0}),
    "npo rows-in lr1e-2 facts only": ("npo", 1e-2, "rows", "facts", "adamw", {"rows": 0.0, "input_only": True}),
    "graddiff rows-in lr1e-2 facts only": (
        "graddiff",
        1e-2,
        "rows",
        "facts",
        "adamw",
        {"rows": 0.0, "input_only": True},
    ),
    "graddiff rows-untied lr1e-2 facts only": (
        "graddiff",
        1e-2,
        "rows",
        "facts",
        "adamw",
        {"rows": 0.0, "untie": True},
    ),
    "npo rows-untied lr1e-2 facts only": ("npo", 1e-2, "rows", "facts", "adamw", {"rows": 0.0, "untie": True}),
    "graddiff owm1e-2 lr1e-4 facts only": ("graddiff", 1e-4, "all", "facts", "adamw", {"owm": 1e-2}),
    "graddiff owm1e-3 lr1e-4 facts only": ("graddiff", 1e-4, "all", "facts", "adamw", {"owm": 1e-3}),
    "graddiff owm1e-2 lr1e-4 last 25% of layers facts only": (
        "graddiff",
        1e-4,
        0.25,
        "facts",
        "adamw",
        {"owm": 1e-2},
    ),
    "graddiff rows lr1e-2": ("graddiff", 1e-2, "rows", "", "adamw", {"rows": 0.0}),
    "graddiff lr1e-4 last 25% of layers facts only projected": (
        "graddiff",
        1e-4,
        0.25,
        "facts",
        "adamw",
        {"project_retain": True},
    ),
    "npo lr1e-4 last 25% of layers facts only projected": (
        "npo",
        1e-4,
        0.25,
        "facts",
        "adamw",
        {"project_retain": True},
    ),
    "npo_kl lr1e-4 last 25% of layers facts only": ("npo_kl", 1e-4, 0.25, "facts"),
    "graddiff lr1e-4 last 25% of layers facts only": ("graddiff", 1e-4, 0.25, "facts"),
    "npo_kl lr3e-4 last 25% of layers facts only": ("npo_kl", 3e-4, 0.25, "facts"),
    "npo sgd lr1e-2": ("npo", 1e-2, "all", "", "sgd"),
    "npo sgd lr1e-1": ("npo", 1e-1, "all", "", "sgd"),
    "npo sgd lr1e-1 facts only": ("npo", 1e-1, "all", "facts", "sgd"),
    "npo_kl lr1e-4 facts only": ("npo_kl", 1e-4, "all", "facts"),
    "npo lr1e-4": ("npo", 1e-4, "all"),
    "npo lr3e-5": ("npo", 3e-5, "all"),
    "ga lr1e-4": ("ga", 1e-4, "all"),
    "graddiff lr1e-4": ("graddiff", 1e-4, "all"),
    "npo_kl lr1e-4": ("npo_kl", 1e-4, "all"),
    "npo lr1e-4 last 25% of layers": ("npo", 1e-4, 0.25),
    "npo lr3e-4 last 25% of layers": ("npo", 3e-4, 0.25),
    # per-request LoRA adapters (update.trainable: lora, rank 8 on every block linear, merged after each request)
    "graddiff lora r8 lr1e-3 facts only": ("graddiff", 1e-3, "all", "facts", "adamw", {"trainable": "lora"}),
    "graddiff lora r8 lr1e-3 last 25% of layers facts only": (
        "graddiff",
        1e-3,
        0.25,
        "facts",
        "adamw",
        {"trainable": "lora"},
    ),
    "npo lora r8 lr1e-3 facts only": ("npo", 1e-3, "all", "facts", "adamw", {"trainable": "lora"}),
    "graddiff lora r1 lr1e-3 facts only": (
        "graddiff",
        1e-3,
        "all",
        "facts",
        "adamw",
        {"trainable": "lora", "lora": {"r": 1, "alpha": 2}},
    ),
    # Fisher-ratio masks (SSD-like, Foster et al. 2024): only the weights whose squared gradient on the request is
    # largest relative to the diagonal Fisher of the other documents move (decoder layers; see fisher_masks)
    "graddiff lr1e-4 facts only fisher 1%": ("graddiff", 1e-4, 1.0, "facts", "adamw", {"fisher": 0.01}),
    "graddiff lr1e-3 facts only fisher 1%": ("graddiff", 1e-3, 1.0, "facts", "adamw", {"fisher": 0.01}),
    "graddiff lr1e-3 facts only fisher 0.1%": ("graddiff", 1e-3, 1.0, "facts", "adamw", {"fisher": 0.001}),
    "graddiff lr1e-4 facts only fisher 1% corpus": (
        "graddiff",
        1e-4,
        1.0,
        "facts",
        "adamw",
        {"fisher": 0.01, "fisher_ref": "corpus"},
    ),
    "graddiff lr1e-3 facts only fisher 0.1% corpus": (
        "graddiff",
        1e-3,
        1.0,
        "facts",
        "adamw",
        {"fisher": 0.001, "fisher_ref": "corpus"},
    ),
    "graddiff lr1e-4 facts only": ("graddiff", 1e-4, 1.0, "facts"),
}


def diag_fisher(model, tok, docs, cfg) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of ``docs``: the sum over documents of the squared gradient of each document's
    mean loss (its text slices and QA answers), per parameter name (decoder weights only)."""
    from fit_unlearn.text import collate

    names = {n for n, _ in model.named_parameters() if ".layers." in n}
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    model.eval()
    for d in docs:
        ex = forget_examples(tok, d.text, d.qa, cfg)[1]
        b = collate(ex, tok.pad_token_id)
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        for n, p in model.named_parameters():
            if n in names and p.grad is not None:
                acc[n].add_(p.grad.detach() ** 2)
            p.grad = None
    return acc


def fisher_masks_factory(fisher: dict[str, torch.Tensor], model, damp: float):
    """A stand-in for update.saliency_masks: the ``fraction`` of the trainable weights with the largest
    g^2 / (F + damp * mean F), g the request's gradient, F the other documents' diagonal Fisher."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    orig = upd.saliency_masks

    def masks(model_, tok, params, examples, fraction, batch_size=8):
        from fit_unlearn.text import collate

        model_.eval()
        for i in range(0, len(examples), batch_size):
            b = collate(examples[i : i + batch_size], tok.pad_token_id)
            logits = model_(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), b["labels"][:, 1:].reshape(-1), ignore_index=-100
            ).backward()
        model_.train()
        mean = float(sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values()))
        scores = []
        for p in params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            scores.append(g.detach() ** 2 / (fisher[name_of[id(p)]] + damp * mean))
            p.grad = None
        flat = torch.cat([s.reshape(-1) for s in scores])
        k = max(1, int(fraction * flat.numel()))
        threshold = torch.topk(flat, k, sorted=False).values.min()
        return [s >= threshold for s in scores]

    return masks, orig


def rare_ids(tok, doc, others, max_df: float) -> list[int]:
    """Token ids of ``doc`` (text and QA) found in at most ``max_df`` of ``others``.  The probe's own rule, kept
    so that its recorded results reproduce: it encodes a QA pair as question and answer joined by a space, where
    the engine's :func:`fit_unlearn.engine.rows.own_tokens` (written after it) encodes it as it is trained."""
    from fit_unlearn.text import encode_text

    mine = set(encode_text(tok, doc.text, max_len=None, eos=False))
    for q in doc.qa:
        mine |= set(encode_text(tok, q.question + " " + q.answer, max_len=None, eos=False))
    df = {t: 0 for t in mine}
    for o in others:
        theirs = set(encode_text(tok, o.text, max_len=None, eos=False))
        for q in o.qa:
            theirs |= set(encode_text(tok, q.question + " " + q.answer, max_len=None, eos=False))
        for t in mine & theirs:
            df[t] += 1
    return sorted(t for t, n in df.items() if n <= max_df * len(others))


class OWM:
    """Orthogonal weight modification (Zeng et al. 2019) against the corpus: each optimiser step's change of a
    linear weight W (out x in) is right-multiplied by P = a (C + a I)^-1, C the second moment of W's inputs over
    the other documents' sequences and a = lam * tr(C) / in: directions the other documents use are damped."""

    def __init__(self, model, names: set[str], lam: float):
        self.model, self.lam = model, lam
        self.mods = {
            n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and f"{n}.weight" in names
        }
        self.P: dict[int, torch.Tensor] = {}
        self.old: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def fit(self, tok, docs, cfg):
        from fit_unlearn.text import collate

        acc = {n: torch.zeros(m.in_features, m.in_features) for n, m in self.mods.items()}
        cnt = {n: 0 for n in self.mods}

        def hook(n):
            def f(mod, args):
                x = args[0].reshape(-1, args[0].shape[-1]).float()
                keep = self._mask.reshape(-1)
                x = x[keep]
                acc[n].add_(x.T @ x)
                cnt[n] += x.shape[0]

            return f

        hs = [m.register_forward_pre_hook(hook(n)) for n, m in self.mods.items()]
        ex = [e for d in docs for e in forget_examples(tok, d.text, d.qa, cfg)[1]]
        self.model.eval()
        try:
            for i in range(0, len(ex), 8):
                b = collate(ex[i : i + 8], tok.pad_token_id)
                self._mask = b["attention_mask"].bool()
                self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        finally:
            for h in hs:
                h.remove()
        self.P = {}
        for n, m in self.mods.items():
            c = acc[n] / max(cnt[n], 1)
            a = self.lam * float(c.diagonal().sum()) / c.shape[0]
            self.P[id(m.weight)] = a * torch.linalg.inv(c + a * torch.eye(c.shape[0]))

    def pre(self, opt, args, kwargs):
        self.old = {id(p): p.detach().clone() for g in opt.param_groups for p in g["params"] if id(p) in self.P}

    @torch.no_grad()
    def post(self, opt, args, kwargs):
        for g in opt.param_groups:
            for p in g["params"]:
                if id(p) in self.P:
                    old = self.old[id(p)]
                    p.copy_(old + (p - old) @ self.P[id(p)])


def row_mask(weight, ids: list[int]):
    m = torch.zeros_like(weight, dtype=torch.bool)
    m[ids] = True
    return m


def facts_target(model, tok, holdout, cfg, common) -> float:
    """The non-member level on fact tokens: the median over holdout documents of ``model``'s loss on them with
    the template tokens ``common`` left out."""
    losses = [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg, common)[1]) for d in holdout]
    return float(torch.tensor(losses).quantile(0.5))


def mean_loss(model, tok, docs, cfg) -> float:
    return sum(examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg)[1]) for d in docs) / len(docs)


def repair_norms(model, tok, docs, steps: int, lr: float, which: str) -> list[float]:
    """After the requests: train only the normalisation weights (``final``: the last norm, 576 numbers on the
    default model; ``all``: every RMSNorm, 35k) on plain cross-entropy of the retain-train documents.  If the
    collateral is a global shift (the whole distribution flattened) rather than lost facts, a repair this small
    can undo it without the capacity to re-learn a forgotten document.  Returns the loss per step."""
    from fit_unlearn.text import collate, doc_example

    names = [n for n, _ in model.named_parameters() if "norm" in n and (which == "all" or n == "model.norm.weight")]
    params = [p for n, p in model.named_parameters() if n in names]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = collate([doc_example(tok, d.text, 512) for d in docs], tok.pad_token_id)
    out = []
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(round(float(loss.detach()), 4))
    model.eval()
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--name", default="synth")
    ap.add_argument("--rows-ref", choices=["reference", "corpus"], default="reference")
    ap.add_argument("--repair", choices=["final", "all"], help="after the requests, repair the norms (repair_norms)")
    ap.add_argument("--repair-steps", type=int, default=20)
    ap.add_argument("--repair-lr", type=float, default=1e-3)
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    theta0, tok = load_model(prep.resolve_model("theta0"))
    ref = copy.deepcopy(theta0).eval()
    cfg = UpdateConfig()
    level = nonmember_level(ref, tok, data.holdout, True, cfg, 0.5)
    common = common_tokens(tok, data.retain_train + data.holdout, 0.2)
    target_facts = facts_target(ref, tok, data.holdout, cfg, common)
    requests = data.forget[: args.requests]
    pending = data.forget[args.requests : args.requests + 8]
    retain_eval = data.retain_eval[:8]
    base = {"pending": mean_loss(theta0, tok, pending, cfg), "retain_eval": mean_loss(theta0, tok, retain_eval, cfg)}
    base_docs = [examples_loss(theta0, tok, forget_examples(tok, o.text, o.qa, cfg)[1]) for o in pending + retain_eval]
    rows = []
    fisher_cache: dict = {}
    saliency_orig = upd.saliency_masks
    for name in args.variants.split(","):
        upd.saliency_masks = saliency_orig
        objective, lr, trainable, *extra = VARIANTS[name]
        facts = bool(extra) and extra[0] == "facts"
        optimizer = extra[1] if len(extra) > 1 else "adamw"
        more = extra[2] if len(extra) > 2 else {}
        mask = common if facts else None
        target = target_facts if facts else level["target"]
        model = copy.deepcopy(theta0)
        more = dict(more)
        rows_df = more.pop("rows", None)
        input_only = more.pop("input_only", False)
        owm_lam = more.pop("owm", None)
        fisher_frac = more.pop("fisher", None)
        fisher_ref = more.pop("fisher_ref", "retain")
        fisher_damp = more.pop("fisher_damp", 1e-3)
        if fisher_frac is not None:
            fdocs = data.retain_train + data.holdout
            if fisher_ref == "corpus":  # every corpus document but the requests (retain-eval never)
                fdocs = fdocs + [o for o in data.forget if o.id not in {r.id for r in requests}]
            key = (fisher_ref, len(fdocs))
            if key not in fisher_cache:
                t_f = time.perf_counter()
                fisher_cache[key] = diag_fisher(copy.deepcopy(theta0), tok, fdocs, cfg)
                print(f"fisher over {len(fdocs)} documents: {time.perf_counter() - t_f:.0f} s", flush=True)
            more["saliency"] = fisher_frac
        if more.pop("untie", False):  # the output head keeps theta_0's matrix; only input rows move
            untie_embeddings(model)
        if input_only:  # the tied output head sees the embedding matrix detached: rows learn from their inputs
            head = model.lm_head
            head.forward = lambda x, head=head: torch.nn.functional.linear(x, head.weight.detach())
        if fisher_frac is not None:
            upd.saliency_masks = fisher_masks_factory(fisher_cache[key], model, fisher_damp)[0]
        if trainable == "rows":
            trainable = ["model.embed_tokens.weight"]
        elif trainable != "all":
            n = num_layers(model)
            trainable = list(range(n - max(1, round(trainable * n)), n))
        t0 = time.perf_counter()
        loops, rows_log = [], []
        owm = hooks = None
        if owm_lam is not None:
            from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

            owm = OWM(model, set(trainable_names(model, trainable)), owm_lam)
            hooks = [register_optimizer_step_pre_hook(owm.pre), register_optimizer_step_post_hook(owm.post)]
        for i, d in enumerate(requests):
            if owm is not None:  # every corpus document but the requests so far (retain-eval never)
                done = {r.id for r in requests[: i + 1]}
                owm.fit(tok, data.retain_train + data.holdout + [o for o in data.forget if o.id not in done], cfg)
            plan = UpdatePlan(text=d.text, objective=resolve_objective(objective), trainable=trainable, qa=d.qa)
            kw = dict(more)
            if rows_df is not None:
                ref_docs = data.retain_train + data.holdout
                if args.rows_ref == "corpus":  # every document of the corpus but this one (retain-eval aside)
                    ref_docs = ref_docs + [o for o in data.forget if o.id != d.id]
                rare = rare_ids(tok, d, ref_docs, rows_df)
                rows_log.append(len(rare))
                upd.saliency_masks = lambda model, tok, params, ex, frac, rare=rare: [row_mask(params[0], rare)]
                kw["saliency"] = 1.0
            rec = apply_update(
                model,
                ref,
                tok,
                plan,
                data.retain_train,
                UpdateConfig(lr=lr, optimizer=optimizer, **kw),
                seed=i,
                stop=StopRule(target, args.max_steps),
                common=mask,
            )
            loops.append(rec["loop"])
        if hooks:
            for h in hooks:
                h.remove()
        repaired = {}
        if args.repair:
            before = {
                "pending": mean_loss(model, tok, pending, cfg),
                "retain_eval": mean_loss(model, tok, retain_eval, cfg),
            }
            curve = repair_norms(model, tok, data.retain_train, args.repair_steps, args.repair_lr, args.repair)
            own = [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg, mask)[1]) for d in requests]
            repaired = {"before_repair": before, "repair_losses": curve, "requests_loss_after_repair": own}
            name = f"{name} + {args.repair} norms repaired"
        row = {
            "variant": name,
            "reached": sum(lp["stopped"] == "target" for lp in loops),
            "steps": [lp["steps"] for lp in loops],
            "loss_after": [round(lp["loss_after"], 2) for lp in loops],
            "pending": mean_loss(model, tok, pending, cfg),
            "retain_eval": mean_loss(model, tok, retain_eval, cfg),
            "seconds": time.perf_counter() - t0,
            "per_doc": {
                o.id: round(examples_loss(model, tok, forget_examples(tok, o.text, o.qa, cfg)[1]) / b, 2)
                for o, b in zip(pending + retain_eval, base_docs, strict=True)
            },
            **({"rare_rows": rows_log} if rows_log else {}),
            **repaired,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "command": "python " + " ".join(sys.argv),
        "target": level["target"],
        "theta0": base,
        "requests": [d.id for d in requests],
        "rows": rows,
    }
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"loop_probe-{args.name}.json").write_text(json.dumps(out, indent=1))
    lines = [
        f"Command: `{out['command']}`",
        "",
        f"Target (median holdout loss of theta_0): {level['target']:.2f} nats ({target_facts:.2f} on fact tokens, "
        f"{len(common)} template token ids). theta_0: pending forget documents "
        f"{base['pending']:.3f}, retain-eval {base['retain_eval']:.3f}.",
        "",
        "| variant | target reached | steps per request | loss after | pending forget loss (x theta_0) "
        "| retain-eval loss (x theta_0) | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['reached']}/{len(requests)} | {r['steps']} | {r['loss_after']} | "
            f"{r['pending']:.3f} ({r['pending'] / base['pending']:.1f}x) | "
            f"{r['retain_eval']:.3f} ({r['retain_eval'] / base['retain_eval']:.1f}x) | {r['seconds']:.0f} |"
        )
    for r in rows:
        if "before_repair" in r:
            b = r["before_repair"]
            lines.append(
                f"\n{r['variant']}: before the repair pending {b['pending']:.3f} "
                f"({b['pending'] / base['pending']:.2f}x), "
                f"retain-eval {b['retain_eval']:.3f} ({b['retain_eval'] / base['retain_eval']:.2f}x); repair loss "
                f"{r['repair_losses'][0]} -> {r['repair_losses'][-1]}; the requests' own loss after the repair "
                f"{[round(x, 2) for x in r['requests_loss_after_repair']]} (target on fact tokens {target_facts:.2f})"
            )
    (res / f"loop_probe-{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()

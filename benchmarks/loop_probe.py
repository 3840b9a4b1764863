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

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.loop import nonmember_level  # noqa: E402
from fit_unlearn.engine.update import (  # noqa: E402
    StopRule,
    UpdateConfig,
    apply_update,
    common_tokens,
    examples_loss,
    forget_examples,
)
from fit_unlearn.layers import num_layers  # noqa: E402
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
}


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
    rows = []
    for name in args.variants.split(","):
        objective, lr, trainable, *extra = VARIANTS[name]
        facts = bool(extra) and extra[0] == "facts"
        optimizer = extra[1] if len(extra) > 1 else "adamw"
        more = extra[2] if len(extra) > 2 else {}
        mask = common if facts else None
        target = target_facts if facts else level["target"]
        model = copy.deepcopy(theta0)
        if trainable != "all":
            n = num_layers(model)
            trainable = list(range(n - max(1, round(trainable * n)), n))
        t0 = time.perf_counter()
        loops = []
        for i, d in enumerate(requests):
            plan = UpdatePlan(text=d.text, objective=resolve_objective(objective), trainable=trainable, qa=d.qa)
            rec = apply_update(
                model,
                ref,
                tok,
                plan,
                data.retain_train,
                UpdateConfig(lr=lr, optimizer=optimizer, **more),
                seed=i,
                stop=StopRule(target, args.max_steps),
                common=mask,
            )
            loops.append(rec["loop"])
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

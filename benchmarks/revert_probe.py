"""Revert probe: can a request be forgotten by giving back the fine-tuning delta of the weights that hold it?

theta_0 = base + delta (it memorised its documents by fine-tuning the base model).  For a request A, the
integrated gradient of A's loss along the straight path base -> current model attributes, per weight, how
much that weight's fine-tuning move lowered A's loss (c_A = -delta * mean_alpha grad L_A(base + alpha delta)).
The same attribution on the retain-train documents (c_R) says what the move does for everything else the
model should keep.  The weights with the largest c_A - lam * c_R are set back to the base's values, more and
more of them, until A's loss reaches the non-member level (the closed loop's target).  No gradient step, so
no overshoot by a learning rate: the search stops at the first k that reaches the target.

Measured like loop_probe.py: after R requests, the mean loss of pending forget documents and of retain-eval
documents against theta_0's.

    python benchmarks/revert_probe.py --prepared fit_runs/prepared --requests 3
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
import torch.nn.functional as F  # noqa: E402
from loop_probe import facts_target, mean_loss  # noqa: E402  (same measure as loop_probe: run from benchmarks/)

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.engine.update import UpdateConfig, common_tokens, examples_loss, forget_examples  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402
from fit_unlearn.text import IGNORE, collate, doc_example  # noqa: E402


def ig_attribution(model, params, base_vals, examples, tok, alphas) -> list[torch.Tensor]:
    """-delta * mean over alphas of d loss / d w at base + alpha * delta (per weight)."""
    cur = [p.detach().clone() for p in params]
    acc = [torch.zeros_like(p) for p in params]
    model.eval()
    for a in alphas:
        with torch.no_grad():
            for p, c, b in zip(params, cur, base_vals, strict=True):
                p.copy_(b + a * (c - b))
        for p in params:
            p.grad = None
        for i in range(0, len(examples), 8):
            batch = collate(examples[i : i + 8], tok.pad_token_id, "cpu")
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            n = int((labels != IGNORE).sum())
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), reduction="sum")
            (loss / max(n, 1)).backward()
        for g, p in zip(acc, params, strict=True):
            if p.grad is not None:
                g.add_(p.grad)
    with torch.no_grad():
        for p, c in zip(params, cur, strict=True):
            p.copy_(c)
        for p in params:
            p.grad = None
    return [-(c - b) * g / len(alphas) for c, b, g in zip(cur, base_vals, acc, strict=True)]


def revert(params, cur: torch.Tensor, base: torch.Tensor, idx: torch.Tensor) -> None:
    """Set the flat weight indices ``idx`` of ``params`` to ``base``, every other weight to ``cur``."""
    new = cur.clone()
    new[idx] = base[idx]
    off = 0
    with torch.no_grad():
        for p in params:
            p.copy_(new[off : off + p.numel()].view_as(p))
            off += p.numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--lam", type=float, nargs="+", default=[1.0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    ap.add_argument("--scope", default="blocks", choices=["blocks", "all"])
    ap.add_argument("--name", default="synth")
    args = ap.parse_args()
    prep = PreparedDir(args.prepared)
    data = prepared_data(prep)
    theta0, tok = load_model(prep.resolve_model("theta0"))
    recipe = json.loads(prep.recipe.read_text())
    base_model, _ = load_model(recipe["base_model"])
    cfg = UpdateConfig()
    common = common_tokens(tok, data.retain_train + data.holdout, 0.2)
    target = facts_target(theta0, tok, data.holdout, cfg, common)
    requests = data.forget[: args.requests]
    pending = data.forget[args.requests : args.requests + 8]
    retain_eval = data.retain_eval[:8]
    retain_ex = [doc_example(tok, d.text, cfg.max_len) for d in data.retain_train]
    base0 = {"pending": mean_loss(theta0, tok, pending, cfg), "retain_eval": mean_loss(theta0, tok, retain_eval, cfg)}
    print(json.dumps({"target": target, "theta0": base0}), flush=True)
    rows = []
    for lam in args.lam:
        model = copy.deepcopy(theta0)
        named = dict(model.named_parameters())
        bnamed = dict(base_model.named_parameters())
        names = [n for n in named if args.scope == "all" or ".layers." in n]
        params = [named[n] for n in names]
        base_vals = [bnamed[n].detach() for n in names]
        total = sum(p.numel() for p in params)
        t0 = time.perf_counter()
        recs = []
        # what the fine-tuning move of each weight does for the retain-train documents, once, on theta_0
        c_r0 = ig_attribution(model, params, base_vals, retain_ex, tok, args.alphas) if lam else None
        for d in requests:
            ex = forget_examples(tok, d.text, d.qa, cfg, common)[1]
            before = examples_loss(model, tok, ex)
            c_a = ig_attribution(model, params, base_vals, ex, tok, args.alphas)
            c_r = c_r0
            pairs = zip(c_a, c_r or c_a, strict=True)
            score = torch.cat([(a - lam * r.clamp(min=0) if c_r is not None else a).reshape(-1) for a, r in pairs])
            del c_a
            order = torch.argsort(score, descending=True)
            del score
            flat_cur = torch.cat([p.detach().reshape(-1) for p in params])
            flat_base = torch.cat([b.reshape(-1) for b in base_vals])

            def set_k(k: int, cur=flat_cur, base=flat_base, order=order, params=params) -> None:
                revert(params, cur, base, order[:k])

            k, lo, loss = 100_000, 0, before
            while k <= total:
                set_k(k)
                loss = examples_loss(model, tok, ex)
                if loss >= target:
                    break
                lo, k = k, k * 2
            hi = min(k, total)
            for _ in range(5):  # bisect between the last k short of the target and the first past it
                mid = (lo + hi) // 2
                set_k(mid)
                if examples_loss(model, tok, ex) >= target:
                    hi = mid
                else:
                    lo = mid
            set_k(hi)
            loss = examples_loss(model, tok, ex)
            recs.append(
                {
                    "id": d.id,
                    "before": round(before, 3),
                    "after": round(loss, 3),
                    "reverted": hi,
                    "pending_x": mean_loss(model, tok, pending, cfg) / base0["pending"],
                    "retain_eval_x": mean_loss(model, tok, retain_eval, cfg) / base0["retain_eval"],
                    "s": round(time.perf_counter() - t0),
                }
            )
            print(json.dumps(recs[-1]), flush=True)
            del order, flat_cur, flat_base
        row = {
            "variant": f"revert lam={lam} scope={args.scope} alphas={args.alphas}",
            "requests": recs,
            "reverted_fraction": [r["reverted"] / total for r in recs],
            "pending": mean_loss(model, tok, pending, cfg),
            "retain_eval": mean_loss(model, tok, retain_eval, cfg),
            "seconds": time.perf_counter() - t0,
        }
        row["pending_x"] = row["pending"] / base0["pending"]
        row["retain_eval_x"] = row["retain_eval"] / base0["retain_eval"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"command": "python " + " ".join(sys.argv), "target": target, "theta0": base0, "rows": rows}
    res = Path(__file__).parent / "results"
    (res / f"revert_probe-{args.name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

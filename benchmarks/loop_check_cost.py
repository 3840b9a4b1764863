"""What one closed-loop check costs next to one row-edit step, and what reading it off the next step's forward saves.

For the first ``--n`` forget documents of a prepared directory, on theta_0, with the update's own sequences
(``forget_examples``: the text slices and QA pairs a request is unlearned on), times

* the separate check, :func:`examples_loss` over all the request's sequences (one padded batch);
* the check read off the next step (:func:`examples_loss_reusing`): the request's other sequences only, the step's
  own sequence being read off a training forward that the step makes anyway;
* one row-edit step's forward and backward on the first sequence, the gradient taken with respect to the input
  embeddings only (as ``update.trainable: rows`` trains the request's rows as a tensor of their own: no gradient on
  the embedding matrix or the output layer), without the optimiser's step over a few rows.

Each is the mean of 3 timed calls after one warm-up.  Run it alone on the machine.

    python benchmarks/loop_check_cost.py --prepared fit_runs/prepared120 --n 10 \\
        --out benchmarks/results/s18-loop-check-timing.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fit_unlearn.data.documents import read_jsonl
from fit_unlearn.engine.update import UpdateConfig, _outputs, examples_loss, examples_loss_reusing, forget_examples
from fit_unlearn.models import load_model
from fit_unlearn.text import collate


def mean_seconds(fn, repeats: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10, help="forget documents timed")
    ap.add_argument("--out", type=Path, required=True, help="a Markdown file")
    args = ap.parse_args()

    model, tok = load_model(args.prepared / "theta0")
    docs = read_jsonl(args.prepared / "data" / "forget.jsonl")[: args.n]
    cfg = UpdateConfig()
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.get_input_embeddings()
    device = emb.weight.device
    rows = []
    for d in docs:
        ex = forget_examples(tok, d.text, d.qa, cfg)[1]
        model.eval()
        separate = mean_seconds(lambda ex=ex: examples_loss(model, tok, ex))
        out = _outputs(model, None, ex[:1], tok, device, False, None, ref_hidden=False)
        fused = mean_seconds(lambda ex=ex, out=out: examples_loss_reusing(model, tok, ex, 0, out))
        b = collate(ex[:1], tok.pad_token_id, device)

        def step(b=b):
            x = emb(b["input_ids"]).detach().requires_grad_(True)  # the gradient stops at the input embeddings
            logits = model(inputs_embeds=x, attention_mask=b["attention_mask"]).logits
            torch.nn.functional.cross_entropy(logits[0, :-1].float(), b["input_ids"][0, 1:]).backward()

        model.train()
        rows.append((d.id, [len(e.ids) for e in ex], separate, fused, mean_seconds(step)))
    mean = [sum(r[i] for r in rows) / len(rows) for i in (2, 3, 4)]
    lines = [
        f"# One closed-loop check against one row-edit step (`{args.prepared}`, theta_0, {len(rows)} forget documents)",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Seconds, mean of 3 calls after a warm-up.",
        "",
        "| document | sequence lengths (tokens) | separate check | check read off the step | step forward + backward |",
        "|---|---|---|---|---|",
        *(f"| {i} | {lens} | {a:.3f} | {b:.3f} | {c:.3f} |" for i, lens, a, b, c in rows),
        f"| **mean** | | **{mean[0]:.3f}** | **{mean[1]:.3f}** | **{mean[2]:.3f}** |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How far a row-edit run moved the input-embedding rows it edited, against theta_0's.

For each run's last checkpoint: the rows that differ from theta_0's, their displacement (L2), their norm after over
before, and the cosine of each edited row with theta_0's (medians and quantiles over the edited rows).  AdamW moves
every coordinate of a row by about its learning rate; ``update.rows.step: normalized`` steps along the gradient
(benchmarks/README.md, "Session 31").

    python benchmarks/row_movement.py --prepared fit_runs/pch60 fit_runs/s31-pch60-o2-def/runs/fit-s2 \\
        fit_runs/s31-pch60-o2-n02nc/runs/fit-s2 --out benchmarks/results/s31-row-movement-pch60-o2.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fit_unlearn.layout import PreparedDir
from fit_unlearn.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (their last checkpoints/ckpt-*/model)")
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--out", help="write the table here as markdown too")
    args = ap.parse_args()
    theta0, _ = load_model(PreparedDir(args.prepared).resolve_model("theta0"))
    e0 = theta0.get_input_embeddings().weight.detach()
    lines = [
        f"Rows edited by each run against theta_0 (`{args.prepared}`); medians over the edited rows",
        "",
        "| run | rows edited | displacement q10 / median / q90 | norm after / before | cosine with theta_0's row "
        "| row norm |",
        "|---|---|---|---|---|---|",
    ]
    for run in args.runs:
        ckpt = sorted(Path(run, "checkpoints").glob("ckpt-*"))[-1]
        model, _ = load_model(ckpt / "model")
        e1 = model.get_input_embeddings().weight.detach()
        moved = ((e1 - e0).norm(dim=1) > 0).nonzero().flatten()
        d = (e1 - e0)[moved].norm(dim=1)
        q = torch.quantile(d, torch.tensor([0.1, 0.5, 0.9])).tolist()
        ratio = (e1[moved].norm(dim=1) / e0[moved].norm(dim=1)).median().item()
        cos = torch.nn.functional.cosine_similarity(e0[moved], e1[moved]).median().item()
        lines.append(
            f"| `{run}` ({ckpt.name}) | {len(moved)} | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} | {ratio:.3f} "
            f"| {cos:.3f} | {e0[moved].norm(dim=1).median().item():.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

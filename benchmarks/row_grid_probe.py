"""How large a row edit is against the 4-bit grid that `fit-unlearn attack quantize --embeddings` rounds it to.

For every input-embedding row a run changed (against theta_0), the median absolute change of one value, next to
the median int4 step of those rows' quantization groups (quanto's affine grid: (max - min) / 15 per group, the
groups its ``QLinear`` uses for rows of that width), after the edit and in theta_0. Rounding moves a value by at
most half a step, so an edit of a whole step or more cannot be rounded back to theta_0's value.

    python benchmarks/row_grid_probe.py --run fit_runs/bench-rows-pch60/runs/ga-rows-loop-s0 \
        --out benchmarks/results/row_grid-pch60.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from optimum.quanto import qint4, quantize_module  # noqa: E402

from fit_unlearn.attacks.common import run_model_and_forgotten  # noqa: E402
from fit_unlearn.layout import PreparedDir  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402


def group_size(width: int) -> int | None:
    """The group size quanto's own QLinear picks for int4 rows of this width (None: one group per row)."""
    return quantize_module(torch.nn.Linear(width, 1, bias=False, device="meta"), weights=qint4).weight_group_size


def median_step(w: torch.Tensor, group: int | None) -> float:
    g = w.reshape(w.shape[0], -1, group or w.shape[1])
    return ((g.amax(-1) - g.amin(-1)) / 15).median().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model_path, _, prepared = run_model_and_forgotten(Path(args.run))
    unl, _ = load_model(model_path)
    th0, _ = load_model(PreparedDir(prepared).model("theta0"))
    w, w0 = unl.get_input_embeddings().weight.detach(), th0.get_input_embeddings().weight.detach()
    rows = ((w - w0).abs().amax(1) > 0).nonzero().flatten()
    group = group_size(w.shape[1])
    res = {
        "run": args.run,
        "edited_rows": len(rows),
        "group_size": group,
        "median_abs_change": (w[rows] - w0[rows]).abs().median().item(),
        "median_int4_step_edited": median_step(w[rows], group),
        "median_int4_step_theta0_same_rows": median_step(w0[rows], group),
        "median_row_norm_ratio": (w[rows].norm(dim=1) / w0[rows].norm(dim=1)).median().item(),
    }
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

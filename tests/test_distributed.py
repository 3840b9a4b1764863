"""The distributed path: 2 CPU processes (torchrun, gloo) end with identical weights, one journal."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fit_unlearn.engine import Journal


@pytest.mark.slow
def test_two_ranks_identical_weights_one_journal(tiny_prepared, tmp_path):
    worker = Path(__file__).with_name("_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(worker),
            str(tiny_prepared),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = (tmp_path / "rank0.txt").read_text().split()
    r1 = (tmp_path / "rank1.txt").read_text().split()
    assert r0[0] == r1[0] == "2"  # really two ranks
    assert r0[1] == r1[1]  # identical weights
    j = Journal(tmp_path / "run" / "journal.jsonl", writer=False)
    assert sum(e["event"] == "start" for e in j.events) == 1
    assert sum(e["event"] == "applied" for e in j.events) == 3  # written once, not once per rank

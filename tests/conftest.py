"""Shared fixtures: tiny Llama models built from a config, tiny synthetic data, a tiny prepared run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))

PCH_ENV = "FIT_UNLEARN_PCH_DIR"


@pytest.fixture(scope="session")
def tiny_data():
    from fit_unlearn.data.synth import SynthConfig, synthesize

    return synthesize(SynthConfig(n_forget=8, n_retain=6, n_holdout=4, seed=1))


@pytest.fixture(scope="session")
def tiny_tok(tiny_data):
    from fit_unlearn.models import train_tokenizer

    texts = [d.text for d in tiny_data.forget + tiny_data.retain + tiny_data.holdout]
    texts += [f"Question: {q.question}\nAnswer: {q.answer}" for d in tiny_data.forget + tiny_data.retain for q in d.qa]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tok):
    from fit_unlearn.models import build_tiny_llama, save_model

    model = build_tiny_llama(tiny_tok, layers=3, hidden=64, heads=4, seed=0)
    return save_model(model, tiny_tok, tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from fit_unlearn.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_data, tiny_model_dir):
    """A prepared directory (theta0, retain_only, reference) on the tiny model: ~10 s."""
    from fit_unlearn.prepare import PrepareConfig, prepare
    from fit_unlearn.training import FinetuneConfig

    out = tmp_path_factory.mktemp("prepared") / "prep"
    cfg = PrepareConfig(model=str(tiny_model_dir), recipe=FinetuneConfig(lr=1e-2, epochs=40, batch_size=4), probe_n=4)
    prepare(tiny_data, out, cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def pch_dir() -> Path:
    p = os.environ.get(PCH_ENV)
    if not p or not Path(p).is_dir():
        pytest.skip(f"real PCH data not available: set {PCH_ENV} to the directory holding forget.json/retain.json")
    return Path(p)


#: the short recipe of tiny runs: one epoch at a large lr, small batches; the rtn quantization (plain fp
#: forwards) keeps the attack cheap on CPU
TINY_RUN = {
    "update": {"lr": 1e-3, "epochs": 1, "retain_batch_size": 1},
    "eval": {"batch_size": 8, "quantize_method": "rtn"},
}


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory, tiny_prepared):
    """A bench directory of tiny runs: FIT (its defaults: row edits under the closed loop), FIT as the paper runs
    it (T's layers, open loop) and NPO, seeds 0 and 1, 4 requests evaluated every 2, an int4 attack on each final
    model (~30 s)."""
    from fit_unlearn.bench import BenchConfig, run_bench

    out = tmp_path_factory.mktemp("bench") / "bench"
    cfg = BenchConfig(
        prepared=tiny_prepared,
        methods=("fit", "fit-paper", "npo"),
        seeds=(0, 1),
        requests=4,
        eval_every=2,
        attacks=("quantize4",),
        overrides=TINY_RUN,
    )
    run_bench(cfg, out, command="tests/conftest.py tiny_bench", progress=False)
    return out

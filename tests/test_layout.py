"""The directory layouts: the objects name exactly what prepare and run write (old directories stay readable)."""

import pytest

from fit_unlearn.layout import GOLD_MODELS, CheckpointDir, PreparedDir, RunDir


def test_prepared_dir_names_what_prepare_writes(tiny_prepared):
    p = PreparedDir(tiny_prepared)
    assert p.is_prepared()
    for f in (p.split, p.reference, p.recipe, p.stages, p.report, p.data_file("forget"), p.data_file("retain")):
        assert f.is_file(), f
    assert all((p.model(m) / "config.json").is_file() for m in GOLD_MODELS)
    assert p.resolve_model("theta0") == tiny_prepared / "theta0" and str(p.resolve_model("/x/y")) == "/x/y"
    with pytest.raises(ValueError, match="not a gold model"):
        p.model("theta1")
    assert PreparedDir.of(p) is p and PreparedDir.of(str(tiny_prepared)).root == tiny_prepared


def test_run_dir_names_what_a_run_writes(tiny_prepared, tmp_path):
    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    cfg = build_config(
        {
            "prepared": str(tiny_prepared),
            "out": str(tmp_path / "run"),
            "stream": {"limit": 2},
            "update": {"lr": 1e-3, "epochs": 1},
            "eval": {"every": 2, "batch_size": 8},
            "checkpoint": {"every": 2},
        }
    )
    eng = Engine(cfg, progress=False)
    res = eng.run()
    eng.close()
    r = RunDir(tmp_path / "run")
    assert r.journal.is_file() and r.results.is_file() and r.eval_file(2).is_file()
    ck = r.checkpoint(2)
    assert ck.root.name == "ckpt-000002" and ck.state.is_file() and ck.rng.is_file() and ck.strategy.is_dir()
    assert res["final_model"] == str(ck.model) and CheckpointDir.of_model(ck.model).root == ck.root

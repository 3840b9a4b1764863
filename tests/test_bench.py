"""The bench: methods x seeds into one directory, each run resumable, the method table shared with
benchmarks/stream_bench.py."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TINY_RUN

from fit_unlearn.bench import METHODS, BenchConfig, bench_config, method_spec, run_bench
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import BenchDir


def test_method_names_suffixes_and_run_configs(tmp_path):
    assert method_spec("fit")["strategy"]["fit"]["importance"]["calibrate"] is True
    spec = method_spec("fit-noF-doc")
    assert spec["strategy"]["fit"]["filter"] is False and spec["strategy"]["include_qa"] is False
    with pytest.raises(ConfigError, match="did you mean 'graddiff'"):
        method_spec("gradiff")
    with pytest.raises(ConfigError, match="the method is not FIT"):
        method_spec("npo-noT")
    lora = BenchConfig(prepared=tmp_path, methods=("fit-lora-stack",)).run_config("fit-lora-stack", 0, tmp_path / "l")
    assert (lora.update.trainable, lora.update.lora.mode, lora.update.lr) == ("lora", "stack", 3e-4)
    assert lora.strategy.name == "fit"
    with pytest.raises(ConfigError, match="put it after -lora"):
        method_spec("fit-stack")
    rows = BenchConfig(prepared=tmp_path, methods=("ga-rows-loop",)).run_config("ga-rows-loop", 0, tmp_path / "w")
    assert (rows.update.trainable, rows.update.template_max_df, rows.update.rows.lr) == ("rows", 0.2, 2e-2)
    assert (rows.loop.enabled, rows.loop.check_every) == (True, 2)
    with pytest.raises(ConfigError, match="bench: invalid configuration: methods: .*unknown method 'fitt'"):
        bench_config(methods=("fitt",))
    cfg = BenchConfig(prepared=tmp_path, methods=("fit", "npo"), seeds=(3,), requests=5, eval_every=2)
    run = cfg.run_config("fit", 3, tmp_path / "r")
    assert run.strategy.name == "fit" and run.strategy.fit.importance.calibrate
    assert (run.seed, run.stream.order_seed, run.stream.limit) == (3, 3, 5)
    assert (run.eval.every, run.checkpoint.every, run.checkpoint.keep) == (2, 2, 1)
    # FIT's defaults are the library's (its config_defaults included): the bench overrides only the calibration
    from fit_unlearn.engine.config import build_config

    bare = build_config({"strategy": {"name": "fit"}})
    assert run.strategy.fit.filter == bare.strategy.fit.filter and run.strategy.fit.filter.unit == "tokens"
    assert (run.update.trainable, run.loop_enabled, run.strategy.fit.rows_objective) == ("rows", True, "ga")
    paper = cfg.run_config("fit-paper", 3, tmp_path / "p")
    assert (paper.update.trainable, paper.loop_enabled, paper.strategy.fit.filter.unit) == ("full", False, "chars")
    assert cfg.run_config("npo", 3, tmp_path / "r").strategy.objective == "npo"


def test_stream_bench_uses_the_library_method_table():
    path = Path(__file__).parent.parent / "benchmarks" / "stream_bench.py"
    spec = importlib.util.spec_from_file_location("stream_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.METHODS is METHODS and mod.method_spec is method_spec


def test_bench_resumes_a_killed_run_skips_finished_ones_and_refuses_other_settings(
    tiny_prepared, tmp_path, monkeypatch
):
    from fit_unlearn.engine import Engine

    cfg = BenchConfig(
        prepared=tiny_prepared, methods=("npo",), seeds=(0,), requests=2, eval_every=2, overrides=TINY_RUN
    )
    out = tmp_path / "b"

    def killed_after_one(self):  # the process dies after its first request (nothing is closed by hand)
        for _, item in self.stream():
            self.step(item)
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(Engine, "run", killed_after_one)
        with pytest.raises(KeyboardInterrupt):
            run_bench(cfg, out, progress=False)
    seen = []
    manifest = run_bench(cfg, out, progress=False, on_run=seen.append)
    assert [s["status"] for s in seen] == ["resumed"]
    res = json.loads(BenchDir(out).run("npo", 0).results.read_text())
    assert res["applied_counts"] == {r["id"]: 1 for r in res["requests"]} and len(res["requests"]) == 2
    assert manifest["runs"][0]["wall_seconds"] > 0 and manifest["settings"]["requests"] == 2

    seen.clear()
    manifest = run_bench(cfg.model_copy(update={"seeds": (0, 1)}), out, progress=False, on_run=seen.append)
    assert [(s["seed"], s["status"]) for s in seen] == [(0, "finished"), (1, "started")]
    assert [r["dir"] for r in manifest["runs"]] == ["runs/npo-s0", "runs/npo-s1"]
    assert len(manifest["sessions"]) == 3
    with pytest.raises(ConfigError, match=r"started with other settings: requests 2 \(now 3\)"):
        run_bench(cfg.model_copy(update={"requests": 3}), out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a bench directory"):
        run_bench(cfg, tmp_path / "other", progress=False)

    # a finished run made another way (here: the method table changed since) is not averaged with new ones
    changed = {**METHODS["npo"], "update": {"weight_decay": 0.0}}
    monkeypatch.setitem(METHODS, "npo", changed)
    with pytest.raises(ConfigError, match=r"npo-s0: finished with other settings .*update\.weight_decay"):
        run_bench(cfg, out, progress=False)


def test_a_bad_override_does_not_lock_the_bench(tiny_prepared, tmp_path):
    """Run configurations are validated before bench.json is written: the corrected command then runs."""
    cfg = BenchConfig(prepared=tiny_prepared, methods=("npo",), seeds=(0,), requests=1, eval_every=1)
    with pytest.raises(ConfigError, match="update"):
        run_bench(cfg.model_copy(update={"overrides": {"update": {"lr": -1}}}), tmp_path / "b", progress=False)
    assert not BenchDir(tmp_path / "b").manifest.exists()
    # what the bench sets per run cannot be overridden: seeds would be identical (a false std) or runs collide
    for bad in ({"seed": 3}, {"stream": {"order_seed": 3}}, {"out": "x"}):
        with pytest.raises(ConfigError, match="belong to the bench"):
            run_bench(cfg.model_copy(update={"overrides": bad}), tmp_path / "b", progress=False)
    assert not BenchDir(tmp_path / "b").manifest.exists()


def test_bench_needs_a_prepared_directory(tmp_path):
    with pytest.raises(ConfigError, match="is not a prepared directory"):
        run_bench(BenchConfig(prepared=tmp_path / "none"), tmp_path / "b", progress=False)


def test_bench_data_may_be_a_qa_data_set_read_with_prepare_s_options(tmp_path, monkeypatch, capsys):
    """bench --data takes a Hugging Face QA data set with --group-by & co. (one request per subject), as prepare
    does; the options without --data are refused in one line."""
    from test_data_hf import AUTHORS, _rows, write_dataset

    import fit_unlearn.prepare as prep
    from fit_unlearn.bench import prepare_bench_data
    from fit_unlearn.cli import main
    from fit_unlearn.data.hf import QADatasetConfig

    rows = {name: _rows(name) for name in AUTHORS}
    rows["forget10"] = [
        r for pair in zip(*(_rows("forget10", [a]) for a in AUTHORS["forget10"]), strict=True) for r in pair
    ]
    root = write_dataset(tmp_path / "qa", "parquet", rows)  # authors' rows interleaved: only --group-by sorts them
    seen = {}
    monkeypatch.setattr(prep, "prepare", lambda splits, out, cfg, progress=True: seen.setdefault("splits", splits))
    prepare_bench_data(root, tmp_path / "b", qa=QADatasetConfig(group_by="author"))
    forget = seen["splits"].forget
    assert [d.id for d in forget] == ["forget10-Ann Ash", "forget10-Bo Birch"]
    assert all(len(d.qa) == 20 and all(d.id.split("-", 1)[1] in q.question for q in d.qa) for d in forget)
    capsys.readouterr()  # the data set writer's progress bars
    assert main(["bench", "--out", str(tmp_path / "b2"), "--group-by", "author"]) == 2
    err = capsys.readouterr().err
    assert "need --data" in err and len(err.strip().splitlines()) == 1

"""The command line as a user runs it: outputs, exit codes, one-line errors."""

import json

import pytest

from fit_unlearn.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_synth_and_stats(tmp_path, capsys):
    code, out, _ = run(
        ["data", "synth", "--out", tmp_path / "d", "--n-forget", 8, "--n-retain", 4, "--n-holdout", 4], capsys
    )
    assert code == 0 and "wrote 8 forget, 4 retain, 4 holdout" in out
    code, out, _ = run(["data", "stats", tmp_path / "d"], capsys)
    assert code == 0 and "personal" in out and "forget" in out and "holdout" in out
    code, out, _ = run(["data", "stats", tmp_path / "d" / "forget.jsonl"], capsys)
    assert code == 0 and "8" in out


def test_stats_reads_a_file_with_a_byte_order_mark(tmp_path, capsys):
    p = tmp_path / "requests.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "Name: Ada Q. Vell\\n\\nAge: 33"}\n{"id": "b", "text": "x y"}\n')
    code, out, err = run(["data", "stats", p], capsys)
    assert code == 0 and err == "" and "requests" in out and "personal" in out


def test_stats_on_real_pch(pch_dir, capsys):
    code, out, _ = run(["data", "stats", pch_dir], capsys)
    assert code == 0 and "300" in out and "700" in out


@pytest.mark.parametrize(
    "content,msg",
    [
        (b"", "file is empty"),
        (b'{"id": "a", "text": "x"}\n{oops}\n', ":2: not valid JSON"),
        (b'{"id": "a", "text": "caf\xe9"}\n', "not valid UTF-8"),
        (b'{"id": "a", "text": "  "}\n', "whitespace-only"),
        (b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "duplicate id 'a'"),
    ],
)
def test_bad_data_one_line_error(tmp_path, capsys, content, msg):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    code, out, err = run(["data", "stats", p], capsys)
    assert code == 2
    assert msg in err and "Traceback" not in err
    assert err.strip().startswith("error:")


def test_missing_file_error(tmp_path, capsys):
    code, _, err = run(["data", "stats", tmp_path / "none.jsonl"], capsys)
    assert code == 2 and "file not found" in err


def test_model_path_not_a_causal_lm(tmp_path, capsys, tiny_prepared):
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    code, _, err = run(["eval", "--prepared", tiny_prepared, "--model", tmp_path / "vit"], capsys)
    assert code == 2 and "not a causal language model" in err
    code, _, err = run(["eval", "--prepared", tiny_prepared, "--model", tmp_path / "nothing"], capsys)
    assert code == 2 and "model directory not found" in err


def _composite(items):
    """100 * cbrt(p * r * a) of per-document items, by hand: p and r are means over QA pairs, a over documents."""
    qa = [q for it in items for q in it["qa"]]
    p = sum(q["probability"] for q in qa) / len(qa)
    r = sum(q["rouge_l"] for q in qa) / len(qa)
    a = sum(it["token_acc"] for it in items) / len(items)
    return 100 * (p * r * a) ** (1 / 3)


def test_eval_writes_json_with_provenance(tiny_prepared, tmp_path, capsys):
    ref = json.loads((tiny_prepared / "reference.json").read_text())
    eval_ids = json.loads((tiny_prepared / "split.json").read_text())["eval_ids"]
    forget_ids = [it["id"] for it in ref["theta0"]["forget"]]  # file order, the stream order without a seed
    T, t = len(forget_ids), 2

    def gold(model, split, ids):
        by_id = {it["id"]: it for it in ref[model][split]}
        return _composite([by_id[i] for i in ids])

    def close(v, r):  # spec section 4; a zero reference is matched only by zero
        return (1.0 if v == 0 else 0.0) if r == 0 else max(0.0, 1 - abs(v / r - 1))

    # theta0 at step t = 2, every reference computed by hand from reference.json
    out_file = tmp_path / "e.json"
    code, out, _ = run(["eval", "--prepared", tiny_prepared, "--model", "theta0", "--t", t, "--out", out_file], capsys)
    assert code == 0 and "F.D. strict" in out
    res = json.loads(out_file.read_text())
    assert res["provenance"]["model_hash"] and res["provenance"]["data_hash"]
    assert (res["t"], res["T"]) == (t, T) and [it["id"] for it in res["items"]["forget"]] == forget_ids[:t]
    assert len(res["items"]["forget"]) == res["forget"]["n_docs"] == t
    f_gold, f_0 = gold("retain_only", "forget", forget_ids[:t]), gold("theta0", "forget", forget_ids[:t])
    assert res["reference"]["forget_strict"] == pytest.approx({"theta0": f_0, "retain_only": f_gold})
    assert f_0 != pytest.approx(f_gold, rel=0.05)  # the two gold models really differ
    for model in ("theta0", "retain_only"):  # F's three parts, each by hand
        by_id = {it["id"]: it for it in ref[model]["forget"]}
        items = [by_id[i] for i in forget_ids[:t]]
        qa = [q for it in items for q in it["qa"]]
        parts = res["reference"]["forget_parts"][model]
        assert parts["probability"] == pytest.approx(sum(q["probability"] for q in qa) / len(qa))
        assert parts["rouge_l"] == pytest.approx(sum(q["rouge_l"] for q in qa) / len(qa))
        assert parts["token_acc"] == pytest.approx(sum(it["token_acc"] for it in items) / len(items))
    # theta0 is the t = 0 gold model: scored again, it reproduces its own reference values
    assert res["forget"]["score"] == pytest.approx(f_0, rel=1e-3)
    assert res["forget_degree_strict"] == pytest.approx(close(res["forget"]["score"], f_gold))
    assert res["forget_degree_strict"] < 0.2  # theta0 remembers every forget document
    r_0, r_T = gold("theta0", "retain", eval_ids), gold("retain_only", "retain", eval_ids)
    assert res["retain"]["score"] == pytest.approx(r_0, rel=1e-3)
    r_ref = r_0 + (r_T - r_0) * t / T
    assert res["reference"]["retain"]["at_t"] == pytest.approx(r_ref)
    assert res["retain_utility"] == pytest.approx(close(res["retain"]["score"], r_ref))
    by_id = {m: {it["id"]: it for it in ref[m]["forget"]} for m in ("theta0", "retain_only")}
    mixture = _composite(
        [by_id["retain_only"][i] for i in forget_ids[:t]] + [by_id["theta0"][i] for i in forget_ids[t:]]
    )
    assert res["reference"]["forget_paper"]["mixture"] == pytest.approx(mixture)
    assert res["forget_degree_paper"] == pytest.approx(close(res["forget_all"]["score"], mixture))

    # the retain-only model at t = T is the other gold model: strict F.D. = R.U. = 1 on all forget documents
    code, _, _ = run(["eval", "--prepared", tiny_prepared, "--model", "retain_only", "--out", out_file], capsys)
    res = json.loads(out_file.read_text())
    assert code == 0 and (res["t"], res["T"]) == (T, T) and res["collateral_forget"] is None
    assert res["forget"]["score"] == pytest.approx(gold("retain_only", "forget", forget_ids), rel=1e-3)
    assert res["forget_degree_strict"] == pytest.approx(1.0)
    assert res["retain_utility"] == pytest.approx(1.0)


def test_debug_shows_traceback(tmp_path, capsys):
    from fit_unlearn.errors import DataError

    with pytest.raises(DataError):
        main(["--debug", "data", "stats", str(tmp_path / "none.jsonl")])


@pytest.mark.parametrize("content", [b"", b" \n\n\t \n"])
def test_run_on_an_empty_request_file_fails_before_a_checkpoint(tiny_prepared, tmp_path, capsys, content):
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(content)
    out = tmp_path / "r"
    code, stdout, err = run(["run", "--prepared", tiny_prepared, "--out", out, "--requests", requests], capsys)
    assert code == 2 and "requests applied" not in stdout
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert f"{requests}: request file holds no requests" in err and "one JSON object per line" in err
    assert not (out / "checkpoints").exists() and not (out / "journal.jsonl").exists()


def test_unknown_objective_lists_known(tiny_prepared, tmp_path, capsys):
    code, _, err = run(["run", "--prepared", tiny_prepared, "--out", tmp_path / "r", "--objective", "gaa"], capsys)
    assert code == 2 and "did you mean 'ga'" in err and "npo" in err


def test_eval_at_t_reports_the_honest_degrees(tiny_prepared, tmp_path, capsys):
    """`eval --t N` writes the same names as a run's results and prints strict F.D. first."""
    out_file = tmp_path / "e.json"
    code, out, _ = run(
        ["eval", "--prepared", tiny_prepared, "--model", "theta0", "--t", "3", "--out", out_file], capsys
    )
    assert code == 0 and "F.D. strict" in out and "collateral" in out
    res = json.loads(out_file.read_text())
    assert (res["t"], res["T"]) == (3, 8)
    assert res["forget_degree_strict"] < 0.2 and res["collateral_forget"] == pytest.approx(1.0)
    for key in ("forget_degree_strict_paraphrase", "forget_degree_paper", "retain_utility", "capital_probe"):
        assert res[key] is not None
    assert len(res["items"]["forget"]) == 3 and len(res["items"]["pending"]) == 5
    assert [it["id"] for it in res["items"]["retain"]] == json.loads((tiny_prepared / "split.json").read_text())[
        "eval_ids"
    ]


def test_prepare_with_user_retain_eval_ids_records_the_split(tiny_prepared, tiny_model_dir, tmp_path, capsys):
    """A user's own retain-eval ids: recorded in split.json, no retraining, the reference rescored on them;
    unknown ids are a one-line error before any training."""
    import shutil

    from fit_unlearn.prepare import PrepareConfig, prepare, prepared_data
    from fit_unlearn.training import FinetuneConfig

    prepared = tmp_path / "prep"
    shutil.copytree(tiny_prepared, prepared)
    before = (prepared / "theta0" / "model.safetensors").stat().st_mtime_ns
    cfg = PrepareConfig(model=str(tiny_model_dir), recipe=FinetuneConfig(lr=1e-2, epochs=40, batch_size=4), probe_n=4)
    cfg = cfg.model_copy(update={"retain_eval_ids": ("retain-0000", "retain-0001")})
    prepare(prepared_data(tiny_prepared), prepared, cfg, progress=False)
    split = json.loads((prepared / "split.json").read_text())
    assert split["eval_ids"] == ["retain-0000", "retain-0001"] and split["method"] == "ids"
    assert (prepared / "theta0" / "model.safetensors").stat().st_mtime_ns == before  # not retrained
    assert json.loads((prepared / "reference.json").read_text())["retain_eval_ids"] == split["eval_ids"]
    assert [d.id for d in prepared_data(prepared).retain_eval] == split["eval_ids"]

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("retain-9999\n")
    args = ["prepare", "--data", prepared / "data", "--out", tmp_path / "p2", "--model", tiny_model_dir]
    code, _, err = run([*args, "--retain-eval-ids", ids_file], capsys)
    assert code == 2 and "not ids of the retain split" in err and not (tmp_path / "p2" / "theta0").exists()


def test_no_command_prints_help_and_a_bad_option_one_line(capsys):
    assert main([]) == 2  # click's convention: usage shown, exit 2
    out = capsys.readouterr()
    assert "prepare" in out.out + out.err and "internal error" not in out.out + out.err
    assert main(["run", "--bogus"]) == 2
    out = capsys.readouterr()
    assert "No such option: --bogus" in out.out + out.err and "internal error" not in out.out + out.err


def test_config_prints_the_reference_that_docs_config_md_holds(capsys):
    from pathlib import Path

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "`update.lr`" in out and out == (Path(__file__).parents[1] / "docs" / "config.md").read_text()


@pytest.mark.slow  # ~15 s: two tiny streams, their attack and the report
def test_demo_wiring_on_a_tiny_model(tiny_data, tiny_model_dir, tiny_prepared, tmp_path):
    """data -> prepare (cached: the tiny prepared directory, nothing trained again) -> FIT and GradDiff on the
    same requests, evaluated, int4 attack on both -> the report; then the three-line summary."""
    import io
    import shutil

    from conftest import TINY_RUN
    from rich.console import Console

    from fit_unlearn.data.documents import write_jsonl
    from fit_unlearn.demo import DEMO_DATA, DEMO_PREPARED, DemoConfig, run_demo
    from fit_unlearn.prepare import PrepareConfig
    from fit_unlearn.report import tables
    from fit_unlearn.training import FinetuneConfig

    for split in ("forget", "retain", "holdout"):
        write_jsonl(getattr(tiny_data, split), tmp_path / DEMO_DATA / f"{split}.jsonl")
    shutil.copytree(tiny_prepared, tmp_path / DEMO_PREPARED)
    said = []
    prep = PrepareConfig(model=str(tiny_model_dir), recipe=FinetuneConfig(lr=1e-2, epochs=40, batch_size=4), probe_n=4)
    cfg = DemoConfig(workdir=tmp_path, requests=2, eval_every=1)
    res = run_demo(cfg, prepare_cfg=prep, overrides=TINY_RUN, progress=False, say=said.append)
    assert res["report"] == tmp_path / "fit_runs" / "demo" / "report" / "report.html" and res["report"].is_file()
    s = res["summary"]
    assert list(s["methods"]) == ["fit", "graddiff"]
    for m in s["methods"].values():
        assert [e["t"] for e in m["evals"]] == [1, 2] and m["attacks"]["quantize"]["int4"]["recovery"] is not None
    fit, graddiff = s["runs"]
    assert [q["id"] for q in fit["requests"]] == [q["id"] for q in graddiff["requests"]]  # the same stream
    # FIT's defaults: row edits by GA under the closed loop (no layers planned); the baseline's weights
    assert fit["requests"][0]["layers"] is None and fit["requests"][0]["objective"] == "ga"
    assert graddiff["strategy"] == "sequential" and graddiff["requests"][0]["objective"] == "graddiff"
    console = Console(record=True, width=400, file=io.StringIO())
    console.print(tables.demo_summary(s, res["report"], cfg.methods))
    lines = console.export_text().splitlines()
    assert lines[0].startswith(f"report: {res['report']}") and len(lines) == 4
    assert lines[1].startswith("strict F.D. (t=2;") and "fit " in lines[1] and "graddiff " in lines[1]
    assert lines[2].startswith("R.U. (1 = utility kept): fit ")

    def recovery(m: str) -> str:  # the ratio, or why it is not shown: a forget gap under 10 points of F
        q = s["methods"][m]["attacks"]["quantize"]["int4"]
        gap = s["methods"][m]["evals"][-1]["F_forgotten_theta0"]["mean"] - q["forget_fp"]["mean"]
        if gap < 10:
            return f"n/a (only {gap:.1f} points of F were forgotten; F {q['forget_fp']['mean']:.1f} -> "
        return f"{q['recovery']['mean']:.3f}"

    want = f"int4 quantization recovery (0 = nothing comes back, 1 = all): fit {recovery('fit')}"
    assert lines[3].startswith(want) and f"graddiff {recovery('graddiff')}" in lines[3]
    stages = [t.plain for t in said if hasattr(t, "plain") and t.plain[:2] in ("2/", "3/", "4/")]
    assert [x[:3] for x in stages] == ["2/4", "3/4", "4/4"]  # the data existed: no "1/4"
    # a second demo trains nothing and runs nothing: both runs are finished, the report is rendered again
    again = run_demo(cfg, prepare_cfg=prep, overrides=TINY_RUN, progress=False, say=said.append)
    assert again["summary"]["methods"]["fit"]["evals"] == s["methods"]["fit"]["evals"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--baseline", "fit"], "the baseline must be another method than fit"),
        (["--baseline", "npoo"], "did you mean 'npo'"),
        (["--requests", "0"], "requests: Input should be greater than or equal to 1"),
        (["--attack-bits", "3"], "attack_bits: must be 4, 8 or null"),
    ],
)
def test_demo_refuses_bad_settings_in_one_line(args, msg, tmp_path, capsys):
    code, _, err = run(["demo", "--workdir", tmp_path, *args], capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fit_data").exists()  # refused before anything was written


def test_bench_command_errors(tmp_path, capsys):
    code, _, err = run(["bench", "--out", tmp_path / "b", "--prepared", tmp_path / "none"], capsys)
    assert code == 2 and "is not a prepared directory" in err
    code, _, err = run(["bench", "--out", tmp_path / "b", "--methods", "fit,fitt", "--prepared", tmp_path], capsys)
    assert code == 2 and "unknown method 'fitt'" in err
    code, _, err = run(["bench", "--out", tmp_path / "b", "--seeds", "0,x"], capsys)
    assert code == 2 and "--seeds: expected a comma-separated list" in err
    code, _, err = run(["bench", "--out", tmp_path / "b", "--set", "{oops"], capsys)
    assert code == 2 and "--set: not valid JSON" in err


def test_bench_command_runs_and_renders_its_report(tiny_prepared, tmp_path, capsys):
    from conftest import TINY_RUN

    out = tmp_path / "b"
    args = ["bench", "--out", out, "--prepared", tiny_prepared, "--methods", "npo", "--requests", 2]
    code, stdout, _ = run([*args, "--eval-every", 2, "--set", json.dumps(TINY_RUN)], capsys)
    assert code == 0 and "[1/1] npo seed 0: starting (runs/npo-s0)" in stdout
    assert "strict F.D. / R.U. per checkpoint" in stdout and (out / "report" / "report.html").is_file()
    manifest = json.loads((out / "bench.json").read_text())
    assert manifest["sessions"][-1]["command"].startswith(f"fit-unlearn bench --out {out} --prepared {tiny_prepared}")
    code, stdout, _ = run([*args, "--eval-every", 2, "--set", json.dumps(TINY_RUN), "--no-report"], capsys)
    assert code == 0 and "finished already, skipped" in stdout and "report:" not in stdout


def test_demo_refuses_to_train_over_models_prepared_from_other_data(tmp_path, tiny_model_dir):
    """The demo shares fit_runs/prepared with `prepare`'s default: models the user prepared there from other data
    are not retrained over (one-line error naming --workdir), and nothing is written to them."""
    import json

    from fit_unlearn.demo import DemoConfig, run_demo
    from fit_unlearn.errors import ConfigError
    from fit_unlearn.prepare import PrepareConfig

    recipe = tmp_path / "fit_runs" / "prepared" / "recipe.json"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(json.dumps({"data_hash": "someone-else", "base_model_hash": "x"}))
    before = sorted(p.name for p in recipe.parent.iterdir())
    with pytest.raises(ConfigError, match=r"other data and another base model .* --workdir DIR"):
        run_demo(DemoConfig(workdir=tmp_path), prepare_cfg=PrepareConfig(model=str(tiny_model_dir)), progress=False)
    assert sorted(p.name for p in recipe.parent.iterdir()) == before

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


def test_eval_writes_json_with_provenance(tiny_prepared, tmp_path, capsys):
    out_file = tmp_path / "e.json"
    code, out, _ = run(["eval", "--prepared", tiny_prepared, "--model", "theta0", "--out", out_file], capsys)
    assert code == 0 and "F.D." in out
    res = json.loads(out_file.read_text())
    assert res["forget_degree"] == pytest.approx(0.0, abs=0.35) or res["forget_degree"] <= 1
    assert res["provenance"]["model_hash"] and res["provenance"]["data_hash"]
    assert len(res["items"]["forget"]) == res["forget"]["n_docs"]
    # theta0 evaluated at t=0 is its own reference: F.D. = R.U. = 1
    code, _, _ = run(["eval", "--prepared", tiny_prepared, "--model", "retain_only", "--out", out_file], capsys)
    res = json.loads(out_file.read_text())
    assert res["forget_degree"] == pytest.approx(1.0) and res["retain_utility"] == pytest.approx(1.0)


def test_debug_shows_traceback(tmp_path, capsys):
    from fit_unlearn.errors import DataError

    with pytest.raises(DataError):
        main(["--debug", "data", "stats", str(tmp_path / "none.jsonl")])


def test_unknown_objective_lists_known(tiny_prepared, tmp_path, capsys):
    code, _, err = run(["run", "--prepared", tiny_prepared, "--out", tmp_path / "r", "--objective", "gaa"], capsys)
    assert code == 2 and "did you mean 'ga'" in err and "npo" in err

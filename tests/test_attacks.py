"""Recovery attacks and downstream utility on tiny models."""

import json

import pytest
import torch

from fit_unlearn.attacks.common import recovery
from fit_unlearn.attacks.quantize import quantize_model
from fit_unlearn.attacks.relearn import split_relearn
from fit_unlearn.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_run(tiny_prepared, tmp_path_factory):
    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    out = tmp_path_factory.mktemp("runs") / "ga"
    cfg = build_config(
        {
            "prepared": str(tiny_prepared),
            "out": str(out),
            "stream": {"limit": 6},
            "strategy": {"objective": "ga"},
            "update": {"lr": 3e-3, "epochs": 2},
            "eval": {
                "every": None,
                "attacks": ["quantize8", "relearn"],
                "quantize_method": "rtn",
                "relearn_fraction": 0.34,
            },
        }
    )
    eng = Engine(cfg, progress=False)
    res = eng.run()
    eng.close()
    return out, res


def test_recovery_formula():
    assert recovery(50, 20, 80) == pytest.approx(0.5)
    assert recovery(20, 20, 80) == 0.0
    assert recovery(10, 10, 10) is None


@pytest.mark.parametrize("method", ["quanto", "rtn"])
def test_quantized_weights_are_really_low_bit(tiny_model_dir, method):
    from fit_unlearn.models import load_model

    fp, _ = load_model(tiny_model_dir)
    for bits in (8, 4):
        q, _, label = quantize_model(tiny_model_dir, bits, method)
        if method == "rtn":
            assert "FAKE-QUANT" in label
            w = q.model.layers[0].mlp.down_proj.weight
            scale = w.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
            levels = (w / scale).round()
            assert torch.allclose(w / scale, levels, atol=1e-3)  # every weight sits on the grid
        else:
            assert "optimum-quanto" in label
            assert type(q.model.layers[0].mlp.down_proj).__name__.startswith("Q")
        ids = torch.tensor([[1, 5, 9, 20]])
        with torch.no_grad():
            a, b = fp(ids).logits, q(ids).logits
        assert not torch.equal(a, b) and torch.allclose(a, b, atol=2.0)


def test_quantize_bad_bits(tiny_model_dir):
    with pytest.raises(ConfigError, match="8 or 4"):
        quantize_model(tiny_model_dir, 3)
    with pytest.raises(ConfigError, match="needs --device cuda"):
        quantize_model(tiny_model_dir, 8, "bnb")


@pytest.mark.parametrize("bits", [8, 4])
def test_bnb_path_builds_the_bitsandbytes_config_without_cuda(tiny_model_dir, monkeypatch, bits):
    """The CUDA path up to the loading call: bitsandbytes and CUDA are stood in for, from_pretrained records
    what it is asked (bitsandbytes is not installed here: the ``gpu`` extra installs it)."""
    import transformers

    from fit_unlearn.attacks import quantize

    asked = {}

    def fake_from_pretrained(path, **kwargs):
        asked.update(kwargs, path=path)
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(quantize, "bnb_available", lambda: True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    for method in ("bnb", "auto"):  # auto picks bitsandbytes on CUDA when it is installed
        asked.clear()
        _, tok, label = quantize_model(tiny_model_dir, bits, method, device="cuda")
        q = asked["quantization_config"]
        assert isinstance(q, transformers.BitsAndBytesConfig)
        assert asked["device_map"] == {"": "cuda"} and asked["path"] == str(tiny_model_dir)
        assert tok.pad_token is not None
        if bits == 8:
            assert q.load_in_8bit and not q.load_in_4bit and label == "bitsandbytes int8"
        else:
            assert q.load_in_4bit and not q.load_in_8bit and label == "bitsandbytes nf4"
            assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16


def test_bnb_errors_in_one_line(tiny_model_dir, monkeypatch):
    from fit_unlearn.attacks import quantize

    monkeypatch.setattr(quantize, "bnb_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs the bitsandbytes package: pip install 'fit-unlearn\[gpu\]'") as e:
        quantize_model(tiny_model_dir, 4, "bnb", device="cuda")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(quantize, "bnb_available", lambda: True)
    with pytest.raises(ConfigError, match="needs --device cuda"):
        quantize_model(tiny_model_dir, 4, "bnb", device="cpu")
    with pytest.raises(ConfigError, match="--embeddings needs --method quanto or rtn"):
        quantize_model(tiny_model_dir, 4, "bnb", device="cuda", embeddings=True)


def test_embeddings_refused_with_bitsandbytes_before_anything_is_loaded(monkeypatch):
    from fit_unlearn.attacks import quantize

    monkeypatch.setattr(quantize, "bnb_available", lambda: True)
    models = {"unlearned": "/nonexistent", "theta0": "/nonexistent", "retain_only": "/nonexistent"}
    with pytest.raises(ConfigError, match="--embeddings needs --method quanto or rtn"):
        quantize.quantize_attack(models, [4], [], [], None, method="bnb", device="cuda", embeddings=True)
    with pytest.raises(ConfigError, match="unknown quantization method 'quanto\\+embeddings'"):
        quantize.quantize_attack(models, [4], [], [], None, method="quanto+embeddings")
    assert quantize.resolve_method("auto", "cuda", embeddings=True) == "quanto"  # auto avoids the refusal
    assert quantize.resolve_method("auto", "cuda") == "bnb"


@pytest.mark.parametrize("method", ["quanto", "rtn"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("tied", [True, False])
def test_embeddings_option_rounds_the_embeddings_to_the_grid(tiny_tok, tmp_path, method, bits, tied):
    """Without the option the embeddings stay as they are (transformers' and quanto's convention); with it the
    embedding matrix and the output layer, tied or not, hold at most 2**bits values per quantization group,
    each the nearest one."""
    from fit_unlearn.models import build_tiny_llama, save_model

    path = save_model(build_tiny_llama(tiny_tok, layers=1, hidden=192, heads=4, seed=0, tied=tied), tiny_tok, tmp_path)
    plain, _, label = quantize_model(path, bits, method)
    q, _, label_e = quantize_model(path, bits, method, embeddings=True)
    assert "embeddings" not in label and label_e.endswith("token embeddings too (rounded to the same grid)")
    shared = q.get_output_embeddings().weight.data_ptr() == q.get_input_embeddings().weight.data_ptr()
    assert shared == tied
    for get in ("get_input_embeddings", "get_output_embeddings"):
        fp = getattr(plain, get)().weight.detach().clone()
        w = getattr(q, get)().weight.detach()
        group = 96 if method == "quanto" and bits == 4 else 192  # quanto int4: groups of 96 of 192; else per row
        g, g0 = w.reshape(-1, group), fp.reshape(-1, group)
        live = g0.abs().amax(1) > 0  # the padding row is all zeros
        if method == "quanto" and bits == 4:  # affine: 16 levels from the group's min to its max
            step = (g0.amax(1) - g0.amin(1)) / 15
        else:  # symmetric: whole multiples of the row's absmax / (2**(bits-1) - 1)
            step = g0.abs().amax(1) / (2 ** (bits - 1) - 1)
            assert torch.allclose(g[live] / step[live, None], (g[live] / step[live, None]).round(), atol=1e-3)
        if bits == 4:
            assert max(len(torch.unique(r)) for r in g) <= 16 < len(torch.unique(g0[5]))
            per_row = max(len(torch.unique(r)) for r in w)
            assert (per_row > 16) == (method == "quanto")  # two groups of 96 per row have two grids
        err = (g - g0).abs().amax(1)[live] / step[live]
        assert 0 < err.max() <= 0.5 + 1e-3  # rounded to the nearest level


def test_split_relearn_is_seeded_and_disjoint(tiny_data):
    a, b = split_relearn(tiny_data.forget, 0.25, seed=3)
    assert len(a) == 2 and len(b) == 6 and not {d.id for d in a} & {d.id for d in b}
    assert split_relearn(tiny_data.forget, 0.25, seed=3) == (a, b)
    with pytest.raises(ConfigError):
        split_relearn(tiny_data.forget[:1], 0.5, 0)


def test_engine_attack_hooks_land_in_results(tiny_run):
    out, res = tiny_run
    att = res["attacks"]
    q = att["quantize"]
    assert set(q["models"]) == {"unlearned", "theta0", "retain_only"}
    assert set(q["models"]["unlearned"]) == {"fp", "int8"} and "FAKE-QUANT" in q["method"]
    rl = att["relearn"]
    assert len(rl["relearn_ids"]) == 2 and len(rl["held_out_ids"]) == 4
    assert rl["steps"] > 0 and rl["held_out_forget_theta0"] is not None
    saved = json.loads((out / "results.json").read_text())
    assert saved["attacks"]["relearn"]["held_out_ids"] == rl["held_out_ids"]


def test_relearning_raises_forget_score_on_held_out(tiny_run, tiny_prepared):
    from fit_unlearn.attacks.common import run_model_and_forgotten
    from fit_unlearn.attacks.relearn import relearn_attack
    from fit_unlearn.evaluation import Reference
    from fit_unlearn.models import load_model
    from fit_unlearn.prepare import prepared_data

    out, _ = tiny_run
    path, forgotten, prepared = run_model_and_forgotten(out)
    m, tok = load_model(path)
    res = relearn_attack(
        m,
        tok,
        forgotten,
        prepared_data(prepared).retain_eval,
        Reference.load(prepared),
        fraction=0.5,
        lr=3e-3,
        epochs=4,
        progress=False,
    )
    assert res["after"]["forget"]["token_acc"] > res["before"]["forget"]["token_acc"]


def test_cli_attacks(tiny_run, capsys):
    from fit_unlearn.cli import main

    out, _ = tiny_run
    assert main(["attack", "quantize", "--run", str(out), "--bits", "4", "--method", "rtn"]) == 0
    assert "recovery" in capsys.readouterr().out
    q = json.loads((out / "attack-quantize.json").read_text())
    assert "FAKE-QUANT" in q["method"]
    assert {m: set(rows) for m, rows in q["models"].items()} == {
        m: {"fp", "int4"} for m in ("unlearned", "theta0", "retain_only")
    }  # only the requested bit width
    th0 = q["models"]["theta0"]
    assert th0["int4"]["forget_score"] != th0["fp"]["forget_score"]  # the 4-bit weights really differ
    f_0, f_unl, f_q = th0["fp"]["forget_score"], *(q["models"]["unlearned"][p]["forget_score"] for p in ("fp", "int4"))
    assert f_unl < f_0  # GA forgot, so the recovery ratio is defined
    # recovery = (F_q - F_unl) / (F_0 - F_unl), from the scores in the same file
    assert set(q["recovery"]) == {"int4"} and q["recovery"]["int4"] is not None
    assert q["recovery"]["int4"] == pytest.approx((f_q - f_unl) / (f_0 - f_unl))
    plain = (out / "attack-quantize.json").read_text()
    assert main(["attack", "quantize", "--run", str(out), "--bits", "4", "--method", "rtn", "--embeddings"]) == 0
    assert "token embeddings too" in capsys.readouterr().out
    assert (out / "attack-quantize.json").read_text() == plain  # its own file: the layers-only result is kept
    e = json.loads((out / "attack-quantize-embeddings.json").read_text())
    assert e["embeddings"] is True and q["embeddings"] is False
    # theta_0 scored again with its embeddings rounded, not served from the layers-only cache entry
    assert e["models"]["theta0"]["int4"]["forget_score"] != th0["int4"]["forget_score"]
    assert e["models"]["theta0"]["fp"] == th0["fp"]
    assert main(["attack", "relearn", "--run", str(out), "--fraction", "0.3"]) == 0
    assert "held-out forget score" in capsys.readouterr().out


def test_downstream_own_task_through_lm_eval(tiny_model, tmp_path):
    from fit_unlearn.metrics.downstream import run_downstream

    model, tok = tiny_model
    res = run_downstream(model, tok, ["fit_capitals", "fit_arithmetic"], limit=8, batch_size=4, workdir=tmp_path)
    assert 0.0 <= res["fit_capitals"]["acc"] <= 1.0
    assert 0.0 <= res["fit_arithmetic"]["exact_match"] <= 1.0


def test_downstream_missing_data_is_a_clear_error(tiny_model, tmp_path):
    from fit_unlearn.metrics.downstream import run_downstream

    model, tok = tiny_model
    with pytest.raises(ConfigError, match="unknown lm-eval task"):
        run_downstream(model, tok, ["no_such_task"], workdir=tmp_path)
    with pytest.raises(ConfigError, match="not available here.*huggingface-cli download"):
        run_downstream(model, tok, ["commonsense_qa"], limit=2, workdir=tmp_path)

"""Each objective against a value computed by hand (plain Python math) on a tiny tensor example, and
the direction of one optimisation step on a tiny model."""

import math

import pytest
import torch

from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import OBJECTIVES, Outputs, UnlearnBatch, get_objective
from fit_unlearn.objectives.base import ce_to_reference, cross_entropy, kl_to_reference
from fit_unlearn.objectives.rmu import control_vector

# one sequence of 3 tokens over a vocabulary of 2: positions 0,1 predict tokens 1,2
LOGITS = [[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]
REF = [[[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]
LABELS = [[0, 1, 0]]  # token 0 is the first input; targets are labels[1:] = [1, 0]


def _lp(row, k):
    return row[k] - math.log(sum(math.exp(v) for v in row))


def _probs(row):
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def out(logits=LOGITS, ref=REF, labels=LABELS):
    return Outputs(
        logits=torch.tensor(logits),
        labels=torch.tensor(labels),
        ref_logits=torch.tensor(ref) if ref is not None else None,
    )


def seq_lp(logits):
    return _lp(logits[0][0], 1) + _lp(logits[0][1], 0)


def test_cross_entropy_by_hand():
    expected = -(_lp(LOGITS[0][0], 1) + _lp(LOGITS[0][1], 0)) / 2
    assert cross_entropy(out()).item() == pytest.approx(expected, rel=1e-6)


def test_kl_by_hand_and_ce_variant():
    kl = ce = 0.0
    for t in range(2):
        p_ref, p = _probs(REF[0][t]), _probs(LOGITS[0][t])
        kl += sum(pr * (math.log(pr) - math.log(pt)) for pr, pt in zip(p_ref, p, strict=True))
        ce += -sum(pt * math.log(pr) for pr, pt in zip(p_ref, p, strict=True))
    assert kl_to_reference(out()).item() == pytest.approx(kl / 2, rel=1e-6)
    assert ce_to_reference(out()).item() == pytest.approx(ce / 2, rel=1e-6)
    assert kl_to_reference(out(ref=LOGITS)).item() == pytest.approx(0.0, abs=1e-7)


def test_ga_and_graddiff_by_hand():
    ce_f = cross_entropy(out()).item()
    retain = out(logits=REF)
    ce_r = -(_lp(REF[0][0], 1) + _lp(REF[0][1], 0)) / 2
    ga = get_objective("ga")
    assert ga.fn(UnlearnBatch(out()), ga.make_config()).item() == pytest.approx(-ce_f, rel=1e-6)
    gd = get_objective("graddiff")
    val = gd.fn(UnlearnBatch(out(), retain=retain), gd.make_config({"retain_weight": 0.5})).item()
    assert val == pytest.approx(-ce_f + 0.5 * ce_r, rel=1e-6)


def test_ga_ceiling_caps_each_token_and_stops_its_gradient():
    # token losses: position 0 predicts 1 from [2, 0] (2.13 nats), position 1 predicts 0 from [0, 1] (1.31 nats)
    l0, l1 = -_lp(LOGITS[0][0], 1), -_lp(LOGITS[0][1], 0)
    ga = get_objective("ga")
    cap = (l0 + l1) / 2  # between the two: the first token is capped, the second is not
    o = out()
    o.logits.requires_grad_(True)
    val = ga.fn(UnlearnBatch(o), ga.make_config({"ceiling": cap}))
    assert val.item() == pytest.approx(-(cap + l1) / 2, rel=1e-6)
    val.backward()
    assert o.logits.grad[0, 0].abs().sum().item() == 0.0  # the capped token gets no more push
    assert o.logits.grad[0, 1].abs().sum().item() > 0.0
    high = ga.fn(UnlearnBatch(out()), ga.make_config({"ceiling": 100.0})).item()
    assert high == pytest.approx(-cross_entropy(out()).item(), rel=1e-6)  # a cap above every token: plain GA
    with pytest.raises(ConfigError, match="ceiling"):
        ga.make_config({"ceiling": 0})


def test_npo_by_hand():
    beta = 0.1
    ratio = seq_lp(LOGITS) - seq_lp(REF)
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * ratio)))
    spec = get_objective("npo")
    assert spec.fn(UnlearnBatch(out()), spec.make_config({"beta": beta})).item() == pytest.approx(expected, rel=1e-6)
    # at theta = ref, NPO equals (2 / beta) log 2
    assert spec.fn(UnlearnBatch(out(ref=LOGITS)), spec.make_config()).item() == pytest.approx(20 * math.log(2))


def test_npo_kl_adds_true_kl():
    spec = get_objective("npo_kl")
    b = UnlearnBatch(out(), retain=out())
    npo = get_objective("npo")
    val = spec.fn(b, spec.make_config({"retain_weight": 2.0})).item()
    assert val == pytest.approx(npo.fn(b, npo.make_config()).item() + 2 * kl_to_reference(out()).item(), rel=1e-6)
    ce_val = spec.fn(b, spec.make_config({"retain_loss": "ce_ref"})).item()
    assert ce_val == pytest.approx(npo.fn(b, npo.make_config()).item() + ce_to_reference(out()).item(), rel=1e-6)


def test_npo_rt_adds_retain_ce_without_reference_on_retain():
    spec = get_objective("npo_rt")
    retain = out(ref=None)  # no theta_0 outputs on retain: NPO-RT does not need them
    b = UnlearnBatch(out(), retain=retain)
    npo = get_objective("npo")
    val = spec.fn(b, spec.make_config({"retain_weight": 0.5})).item()
    assert val == pytest.approx(npo.fn(b, npo.make_config()).item() + 0.5 * cross_entropy(retain).item(), rel=1e-6)
    assert spec.needs_reference and not spec.reference_on_retain and spec.uses_retain(spec.make_config())


def test_optional_retain_term_requests_a_retain_batch():
    rl = get_objective("rl")
    assert not rl.uses_retain(rl.make_config()) and rl.uses_retain(rl.make_config({"retain_weight": 1.0}))
    assert get_objective("npo_kl").reference_on_retain


def test_simnpo_by_hand():
    beta, gamma = 2.5, 0.5
    avg = seq_lp(LOGITS) / 2
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * avg + gamma)))
    spec = get_objective("simnpo")
    val = spec.fn(UnlearnBatch(out(ref=None)), spec.make_config({"beta": beta, "gamma": gamma})).item()
    assert val == pytest.approx(expected, rel=1e-6)


def test_random_labels_are_uniform_draws_on_scored_positions_only():
    """RL is CE against targets drawn uniformly from the vocabulary.  With the same logits 0..6 at every scored
    position, -log p_k = LSE - k, so the loss is about LSE - 3 (the mean over k); the true targets (token 6)
    would give LSE - 6.  Unscored positions put all mass on token 6: drawing targets there would add ~17 nats."""
    from fit_unlearn.objectives.ascent import random_labels

    vocab, n_scored, n_ignored = 7, 350, 350
    lse = math.log(sum(math.exp(k) for k in range(vocab)))
    logits = [[float(k) for k in range(vocab)]] * n_scored + [[0.0] * (vocab - 1) + [20.0]] * (n_ignored + 1)
    labels = [6] * (1 + n_scored) + [-100] * n_ignored  # logits[t] predicts labels[t + 1]
    batch = out(logits=[logits], labels=[labels], ref=None)

    drawn = random_labels(batch, torch.Generator().manual_seed(0))[0]
    assert (drawn[1 + n_scored :] == -100).all()
    scored = drawn[: 1 + n_scored]
    assert set(scored.tolist()) == set(range(vocab))  # every token id is drawn, not only the true one
    assert (scored == 6).float().mean().item() < 0.3  # about 1/7 of the targets are the true token
    assert torch.equal(drawn, random_labels(batch, torch.Generator().manual_seed(0))[0])
    assert not torch.equal(drawn, random_labels(batch, torch.Generator().manual_seed(1))[0])

    spec = get_objective("rl")
    val = spec.fn(UnlearnBatch(batch, generator=torch.Generator().manual_seed(0)), spec.make_config()).item()
    assert val == pytest.approx(lse - 3, abs=0.3)
    assert abs(val - (lse - 6)) > 2.5
    uniform = out(logits=[[[0.3] * vocab] * 3], labels=[[0, 1, 2]], ref=None)  # any targets: log V
    assert spec.fn(UnlearnBatch(uniform, generator=torch.Generator().manual_seed(0)), spec.make_config()).item() == (
        pytest.approx(math.log(vocab))
    )


def test_idk_dpo_by_hand():
    beta = 0.1
    alt = out(logits=REF, ref=LOGITS)  # chosen: refusal
    chosen = seq_lp(REF) - seq_lp(LOGITS)
    rejected = seq_lp(LOGITS) - seq_lp(REF)
    expected = -math.log(1 / (1 + math.exp(-beta * (chosen - rejected))))
    spec = get_objective("idk_dpo")
    val = spec.fn(UnlearnBatch(out(), retain=out(), alternate=alt), spec.make_config({"retain_weight": 0.0})).item()
    assert val == pytest.approx(expected, rel=1e-6)


def test_rmu_by_hand():
    d, c, alpha = 4, 3.0, 10.0
    u = control_vector(d, seed=0)  # a fixed random direction: uniform [0, 1) entries, unit norm
    assert u.norm().item() == pytest.approx(1.0) and (u >= 0).all() and len(set(u.tolist())) == d
    assert torch.equal(u, control_vector(d, seed=0)) and not torch.equal(u, control_vector(d, seed=1))
    # forget: h = 0 is at squared distance c^2 |u|^2 = c^2 from c u (mean over d coordinates: c^2 / d), whatever
    # the direction; h = c u is at 0; the third position is padding (mask 0) and must not count
    h_f = torch.stack([torch.zeros(d), c * u, torch.full((d,), 1e3)]).unsqueeze(0)
    f = Outputs(
        logits=torch.zeros(1, 3, 5),
        labels=torch.zeros(1, 3, dtype=torch.long),
        hidden=h_f,
        attention_mask=torch.tensor([[1, 1, 0]]),
    )
    forget_mse = (c * c / d + 0.0) / 2
    # retain: squared errors 1 and 4 on one coordinate each -> per-position MSE 1/4 and 4/4
    h_r = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])
    ref_h = torch.zeros(1, 2, d)
    r = Outputs(logits=torch.zeros(1, 2, 5), labels=torch.zeros(1, 2, dtype=torch.long), hidden=h_r, ref_hidden=ref_h)
    retain_mse = (1 / 4 + 4 / 4) / 2
    spec = get_objective("rmu")
    val = spec.fn(UnlearnBatch(f, retain=r), spec.make_config({"steering_coeff": c, "alpha": alpha})).item()
    assert val == pytest.approx(forget_mse + alpha * retain_mse, rel=1e-6)  # 1.125 + 6.25


def test_me_by_hand():
    from fit_unlearn.objectives.distribution import entropy_gap

    gap = sum(math.log(2) + sum(q * math.log(q) for q in _probs(LOGITS[0][t])) for t in range(2)) / 2
    assert entropy_gap(out()).item() == pytest.approx(gap, rel=1e-6)
    spec = get_objective("me")
    retain = out(logits=REF)
    got = spec.fn(UnlearnBatch(out(), retain=retain), spec.make_config({"retain_weight": 0.5})).item()
    assert got == pytest.approx(gap + 0.5 * cross_entropy(retain).item(), rel=1e-6)
    # uniform predictions have no gap left
    assert entropy_gap(out(logits=[[[0.0, 0.0], [3.0, 3.0], [1.0, 1.0]]])).item() == pytest.approx(0.0, abs=1e-7)


def test_next_best_by_hand():
    """Over 3 tokens: the target is the reference without the label token, renormalised."""
    from fit_unlearn.objectives.distribution import next_best_kl

    logits = [[[2.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]]]
    ref = [[[1.0, 3.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.0, 0.0]]]
    labels = [[0, 1, 0]]  # targets [1, 0]
    kl = 0.0
    for t, label in enumerate((1, 0)):
        pr, p = _probs(ref[0][t]), _probs(logits[0][t])
        z = sum(v for k, v in enumerate(pr) if k != label)
        kl += sum(pr[k] / z * math.log(pr[k] / z / p[k]) for k in range(3) if k != label)
    o = out(logits=logits, ref=ref, labels=labels)
    assert next_best_kl(o).item() == pytest.approx(kl / 2, rel=1e-5)
    spec = get_objective("next_best")
    got = spec.fn(UnlearnBatch(o, retain=out()), spec.make_config({"retain_weight": 2.0})).item()
    assert got == pytest.approx(kl / 2 + 2 * kl_to_reference(out()).item(), rel=1e-5)


def test_registry_errors_name_the_choices():
    with pytest.raises(ConfigError, match="did you mean 'npo'"):
        get_objective("nop")
    with pytest.raises(ConfigError, match="unknown parameter.*allowed: beta"):
        get_objective("npo").make_config({"bta": 1})
    with pytest.raises(ConfigError, match="beta must be > 0"):
        get_objective("npo").make_config({"beta": 0})
    assert {"ga", "graddiff", "ga_kl", "npo", "npo_kl", "rl", "simnpo", "rmu", "idk", "idk_dpo"} <= set(OBJECTIVES)


# ---- direction of one optimisation step on a tiny model ----------------------------------------------
def _ce(model, batch):
    with torch.no_grad():
        return model(**batch).loss.item()


def _step(model, tok, name, forget_text, retain_text, params=None, lr=1e-2):
    from fit_unlearn.engine.update import _outputs
    from fit_unlearn.text import doc_example

    spec = get_objective(name)
    ref = type(model)(model.config)
    ref.load_state_dict(model.state_dict())
    f = _outputs(model, ref, [doc_example(tok, forget_text)], tok, "cpu", True, None, False)
    r = _outputs(model, ref, [doc_example(tok, retain_text)], tok, "cpu", True, None, False)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = spec.fn(UnlearnBatch(f, retain=r, generator=torch.Generator().manual_seed(0)), spec.make_config(params))
    loss.backward()
    opt.step()


@pytest.mark.parametrize(
    "name,params",
    [
        ("ga", None),
        ("npo", None),
        ("graddiff", None),
        ("npo_kl", None),
        ("npo_rt", None),
        ("simnpo", {"beta": 0.1}),
        ("next_best", None),
    ],
)  # beta 2.5 saturates on a random model; "me" is left out: a random model is already near-uniform
def test_one_step_raises_forget_loss(tiny_model, tiny_data, name, params):
    from fit_unlearn.text import collate, doc_example

    model, tok = tiny_model
    ftext, rtext = tiny_data.forget[0].text, tiny_data.retain[0].text
    fb = collate([doc_example(tok, ftext)], tok.pad_token_id)
    rb = collate([doc_example(tok, rtext)], tok.pad_token_id)
    before_f, before_r = _ce(model, fb), _ce(model, rb)
    _step(model, tok, name, ftext, rtext, params, lr=0.05)
    after_f, after_r = _ce(model, fb), _ce(model, rb)
    assert after_f > before_f + 1e-4
    if name in ("graddiff", "npo_kl", "npo_rt", "next_best"):  # retain term keeps retain CE close
        assert abs(after_r - before_r) < (after_f - before_f)


def test_a_new_objective_is_one_file(tiny_prepared, tmp_path):
    """docs/engine.md's worked example: one file registers an objective; configs validate it at load."""
    import re
    from pathlib import Path

    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    doc = (Path(__file__).parents[1] / "docs" / "engine.md").read_text()
    code = re.search(r"## Writing an objective.*?```python\n(.*?)```", doc, re.S).group(1)
    try:
        exec(compile(code, "docs/engine.md", "exec"), {})  # noqa: S102  (the documented example, as written)
        base = {
            "prepared": str(tiny_prepared),
            "out": str(tmp_path / "run"),
            "stream": {"limit": 1},
            "update": {"lr": 1e-3, "epochs": 1},
            "eval": {"every": None, "at_end": False},
        }
        with pytest.raises(ConfigError, match="objective 'capped_ga': cap must be > 0"):
            build_config({**base, "strategy": {"objective": "capped_ga", "objective_params": {"cap": -1}}})
        cfg = build_config({**base, "strategy": {"objective": "capped_ga", "objective_params": {"cap": 4}}})
        eng = Engine(cfg, progress=False)
        res = eng.run()
        eng.close()
        rec = res["requests"][0]
        assert rec["objective"] == "capped_ga" and rec["objective_params"] == {"cap": 4.0}
        assert rec["loss_first"] < 0  # ascent: the negated forget loss
    finally:
        OBJECTIVES.pop("capped_ga", None)


def test_every_built_in_objective_parameter_is_documented():
    import dataclasses

    missing = [
        f"{name}.{f.name}"
        for name, spec in OBJECTIVES.items()
        for f in dataclasses.fields(spec.config_cls)
        if not f.metadata.get("help")
    ]
    assert missing == []

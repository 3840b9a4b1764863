"""Exact-unlearning references (fit_unlearn.retrain): theta_0's recipe without the documents forgotten so far."""

from __future__ import annotations

import json
import shutil

import pytest

from fit_unlearn.errors import ConfigError


@pytest.fixture(scope="module")
def prepared(tiny_prepared, tmp_path_factory):
    """A copy of the tiny prepared directory (references written here stay out of the shared one), with one
    retrain reference: the first two documents of the seed-0 stream forgotten."""
    from fit_unlearn.retrain import build_retrain_reference, stream_prefixes

    out = tmp_path_factory.mktemp("retrain") / "prep"
    shutil.copytree(tiny_prepared, out)
    (forgotten,) = stream_prefixes(out, 0, [2])
    build_retrain_reference(out, forgotten, progress=False)
    return out, forgotten


def test_the_retrained_model_never_saw_the_forgotten_documents(prepared):
    from fit_unlearn.evaluation import Reference, retrain_entries
    from fit_unlearn.metrics.scores import scores_from_items

    out, forgotten = prepared
    (entry,) = retrain_entries(out)
    ref = Reference.load(out)
    assert entry["forgotten"] == forgotten
    assert entry["trained_on"] == 8 - 2 + 6  # the other six forget documents and every retain document
    assert [it["id"] for it in entry["items"]] == forgotten
    retrained = scores_from_items(entry["items"])["score"]
    theta0 = ref.score("theta0", "forget", forgotten)["score"]
    others = [i for i in ref.forget_ids if i not in forgotten]
    assert theta0 > 2 * retrained  # theta_0 memorised them; the retrained model never saw them
    assert ref.score("theta0", "forget", others)["score"] > 2 * retrained


def test_a_second_build_reuses_the_reference(prepared, monkeypatch):
    import fit_unlearn.retrain as retrain

    out, forgotten = prepared
    monkeypatch.setattr(retrain, "finetune", lambda *a, **k: pytest.fail("retrained again"))
    again = retrain.build_retrain_reference(out, list(reversed(forgotten)), progress=False)
    assert again["forgotten"] == forgotten


def test_the_reference_answers_only_its_own_forgotten_set(prepared):
    from fit_unlearn.evaluation import Reference

    out, forgotten = prepared
    ref = Reference.load(out)
    items = ref.retrain_items(list(reversed(forgotten)))
    assert [it["id"] for it in items] == list(reversed(forgotten))  # any order of the same set
    assert ref.retrain_items(forgotten[:1]) is None
    # the whole forget set forgotten: retraining without it is the retain-only model
    assert ref.retrain_items(ref.forget_ids) == ref.items("retain_only", "forget", ref.forget_ids)


def test_evaluation_reports_fd_against_exact_unlearning(prepared):
    from fit_unlearn.data.prepared import prepared_data
    from fit_unlearn.evaluation import Reference, evaluate_model
    from fit_unlearn.layout import PreparedDir
    from fit_unlearn.metrics.reference import closeness
    from fit_unlearn.metrics.scores import scores_from_items
    from fit_unlearn.models import load_model

    out, forgotten = prepared
    data = prepared_data(out)
    ref = Reference.load(out)
    by_id = {d.id: d for d in data.forget}
    model, tok = load_model(PreparedDir(out).model("theta0"))
    docs = [by_id[i] for i in forgotten]
    res = evaluate_model(model, tok, forgotten=docs, retain=data.retain_eval, reference=ref, probe=False)
    exact = scores_from_items(ref.retrain_items(forgotten))
    assert res["reference"]["forget_retrain"] == pytest.approx(exact["score"])
    assert res["forget_degree_retrain"] == pytest.approx(closeness(res["forget"]["score"], exact["score"]))
    assert res["forget_degree_retrain_paraphrase"] == pytest.approx(
        closeness(res["forget"]["paraphrase"]["score"], exact["paraphrase"]["score"])
    )
    assert res["forget_degree_retrain"] < 0.5  # theta_0 has forgotten nothing
    one = evaluate_model(model, tok, forgotten=docs[:1], retain=data.retain_eval, reference=ref, probe=False)
    assert "forget_degree_retrain" not in one  # no reference for that set: not reported


def test_a_reference_of_another_seed_or_other_training_inputs_is_not_used(prepared, tmp_path):
    from fit_unlearn.evaluation import Reference, retrain_entries
    from fit_unlearn.layout import PreparedDir

    out, forgotten = prepared
    copy = tmp_path / "prep"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    (f,) = PreparedDir(copy).retrain.glob("*/retrain.json")
    entry = json.loads(f.read_text())
    f.write_text(json.dumps({**entry, "seed": 1}))
    assert retrain_entries(copy) == [] and Reference.load(copy).retrain_items(forgotten) is None
    assert retrain_entries(copy, seed=1)[0]["seed"] == 1  # read on request (the seed-to-seed spread)
    f.write_text(json.dumps({**entry, "training_key": "another"}))
    assert Reference.load(copy).retrain_items(forgotten) is None


@pytest.mark.parametrize("which", ["none", "all", "unknown"])
def test_a_forgotten_set_that_is_not_a_proper_part_of_the_forget_split_is_refused(prepared, which):
    from fit_unlearn.evaluation import Reference
    from fit_unlearn.retrain import build_retrain_reference

    out, _ = prepared
    ids = {"none": [], "all": Reference.load(out).forget_ids, "unknown": ["retain-0000"]}[which]
    with pytest.raises(ConfigError, match="forget"):
        build_retrain_reference(out, ids, progress=False)


def test_checkpoints_and_stream_prefixes_follow_the_bench_stream(prepared):
    from fit_unlearn.data.prepared import prepared_data
    from fit_unlearn.data.streams import stream_order
    from fit_unlearn.retrain import checkpoints, stream_prefixes

    out, _ = prepared
    assert checkpoints(5, 2) == [2, 4, 5] and checkpoints(4, None) == [4] and checkpoints(6, 3) == [3, 6]
    order = [d.id for d in stream_order(prepared_data(out).forget, 1)]
    assert stream_prefixes(out, 1, [2, 4, 8]) == [order[:2], order[:4]]  # t = T: the retain-only model


def test_bench_builds_the_references_of_its_checkpoints_before_the_runs(prepared, monkeypatch, tmp_path):
    import fit_unlearn.retrain as retrain
    from fit_unlearn.bench import BenchConfig, _build_retrain_references

    out, _ = prepared
    built = []
    monkeypatch.setattr(retrain, "build_retrain_reference", lambda p, f, **k: built.append(list(f)))
    cfg = BenchConfig(prepared=out, methods=("npo",), seeds=(0, 1), requests=5, eval_every=2, retrain_reference=True)
    _build_retrain_references(cfg, progress=False)
    assert built == [*retrain.stream_prefixes(out, 0, [2, 4, 5]), *retrain.stream_prefixes(out, 1, [2, 4, 5])]
    assert "retrain_reference" not in cfg.settings()  # adding it to a bench does not change what the runs share
    bad = BenchConfig(prepared=out, retrain_reference=True, overrides={"stream": {"source": "requests.jsonl"}})
    with pytest.raises(ConfigError, match="prepared forget split"):
        _build_retrain_references(bad, progress=False)


def test_a_bench_with_the_reference_reports_fd_against_exact_unlearning(prepared, tmp_path):
    from conftest import TINY_RUN

    from fit_unlearn.bench import BenchConfig, run_bench
    from fit_unlearn.layout import BenchDir
    from fit_unlearn.report import render_report

    out = tmp_path / "prep"  # a copy: the reference this bench builds stays out of the module's directory
    shutil.copytree(prepared[0], out)
    cfg = BenchConfig(
        prepared=out, methods=("ga",), requests=3, eval_every=2, retrain_reference=True, overrides=TINY_RUN
    )
    run_bench(cfg, tmp_path / "bench", progress=False)
    run = BenchDir(tmp_path / "bench").run("ga", 0)
    at2 = json.loads(run.eval_file(2).read_text())
    assert at2["forget_degree_retrain"] is not None  # the fixture's reference: the first two of the seed-0 stream
    at3 = json.loads(run.eval_file(3).read_text())
    assert at3["forget_degree_retrain"] is not None  # built by the bench itself
    md = render_report([tmp_path / "bench"], tmp_path / "report").with_suffix(".md").read_text()
    assert "F.D. retrain" in md

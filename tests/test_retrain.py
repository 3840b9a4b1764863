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


def test_the_retrained_model_never_saw_the_forgotten_documents_and_learned_the_others(prepared):
    from fit_unlearn.data.prepared import prepared_data
    from fit_unlearn.evaluation import Reference, retrain_entries
    from fit_unlearn.layout import PreparedDir
    from fit_unlearn.metrics.scores import evaluate_split, scores_from_items
    from fit_unlearn.models import load_model
    from fit_unlearn.retrain import entry_key

    out, forgotten = prepared
    (entry,) = retrain_entries(out)
    ref = Reference.load(out)
    assert entry["forgotten"] == forgotten
    assert entry["training"]["documents"] == 8 - 2 + 6  # the other six forget documents and every retain one
    assert [it["id"] for it in entry["items"]] == forgotten
    retrained = scores_from_items(entry["items"])["score"]
    assert ref.score("theta0", "forget", forgotten)["score"] > 2 * retrained  # theta_0 memorised them
    # the saved model: the forget documents it was trained on are known as theta_0 knows them
    where = PreparedDir(out).retrain_entry(entry_key(forgotten, entry["seed"], entry["training_key"]))
    model, tok = load_model(where)
    others = [d for d in prepared_data(out).forget if d.id not in forgotten]
    kept = evaluate_split(model, tok, others).score
    assert kept > 2 * retrained
    assert kept == pytest.approx(ref.score("theta0", "forget", [d.id for d in others])["score"], rel=0.35)


def test_a_second_build_reuses_the_reference(prepared, monkeypatch):
    import fit_unlearn.retrain as retrain

    out, forgotten = prepared
    monkeypatch.setattr(retrain, "train_gold", lambda *a, **k: pytest.fail("retrained again"))
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
    assert one["forget_degree_retrain"] is None  # no reference for that set: undefined


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


@pytest.mark.parametrize(
    ("which", "says"),
    [("none", "at least one"), ("all", "the retain-only model itself"), ("unknown", "not forget documents")],
)
def test_a_forgotten_set_that_is_not_a_proper_part_of_the_forget_split_is_refused(prepared, which, says):
    from fit_unlearn.evaluation import Reference
    from fit_unlearn.retrain import build_retrain_reference

    out, _ = prepared
    ids = {"none": [], "all": Reference.load(out).forget_ids, "unknown": ["retain-0000"]}[which]
    with pytest.raises(ConfigError, match=says):
        build_retrain_reference(out, ids, progress=False)


def test_every_document_forgotten_with_another_seed_is_a_second_retain_only_model(prepared, tmp_path):
    from fit_unlearn.evaluation import Reference, retrain_entries
    from fit_unlearn.retrain import build_retrain_reference

    out = tmp_path / "prep"
    shutil.copytree(prepared[0], out)
    ref = Reference.load(out)
    entry = build_retrain_reference(out, ref.forget_ids, seed=1, progress=False)
    assert entry["training"]["documents"] == 6 and entry["seed"] == 1  # the retain documents alone
    assert retrain_entries(out, seed=1)[-1]["forgotten"] == ref.forget_ids
    assert entry["items"] != ref.items("retain_only", "forget", ref.forget_ids)  # another model than the gold


def test_stream_prefixes_follow_the_stream_order(prepared):
    from fit_unlearn.data.prepared import prepared_data
    from fit_unlearn.data.streams import stream_order
    from fit_unlearn.retrain import stream_prefixes

    out, _ = prepared
    order = [d.id for d in stream_order(prepared_data(out).forget, 1)]
    assert stream_prefixes(out, 1, [2, 4, 8]) == [order[:2], order[:4]]  # t = T: the retain-only model


def test_bench_builds_the_references_of_its_runs_checkpoints(prepared, monkeypatch, tmp_path):
    import fit_unlearn.retrain as retrain
    from fit_unlearn.bench import BenchConfig, _build_retrain_references
    from fit_unlearn.engine.journal import Journal
    from fit_unlearn.layout import RunDir

    out, _ = prepared
    built = []
    monkeypatch.setattr(retrain, "build_retrain_reference", lambda p, f, **k: built.append(list(f)))

    def configs(**kw):
        cfg = BenchConfig(prepared=out, methods=("npo", "ga"), seeds=(0, 1), requests=5, eval_every=2, **kw)
        return [cfg.run_config(m, s, tmp_path / f"{m}-{s}") for m in cfg.methods for s in cfg.seeds]

    _build_retrain_references(out, configs(), "cpu", progress=False)
    # each seed's sets once, whatever the number of methods; t = 5 (the end) is a checkpoint too
    assert built == [*retrain.stream_prefixes(out, 0, [2, 4, 5]), *retrain.stream_prefixes(out, 1, [2, 4, 5])]
    built.clear()
    _build_retrain_references(out, configs(overrides={"eval": {"every": 3, "at_end": False}}), "cpu", progress=False)
    assert built == [*retrain.stream_prefixes(out, 0, [3]), *retrain.stream_prefixes(out, 1, [3])]  # the runs' own
    built.clear()
    runs = configs()  # resumed runs: an evaluation a resume keeps needs no reference any more
    for c, (t_eval, t_ckpt) in zip(runs, [(2, 2), (2, 4), (4, 2), (2, 1)], strict=True):
        c.out.mkdir(parents=True)
        journal = Journal(RunDir(c.out).journal)
        journal.append("eval", t=t_eval)
        journal.append("checkpoint", t=t_ckpt)
        journal.close()
    _build_retrain_references(out, runs, "cpu", progress=False)
    # npo (both seeds) keeps t = 2; ga keeps nothing: seed 0's evaluation is at 4, after its checkpoint at 2, and
    # seed 1's at 2 is after its checkpoint at 1. So t = 2 is still due for ga, once per seed
    assert sorted(built) == sorted(
        [*retrain.stream_prefixes(out, 0, [2, 4, 5]), *retrain.stream_prefixes(out, 1, [2, 4, 5])]
    )
    built.clear()
    _build_retrain_references(out, runs[:2], "cpu", progress=False)  # npo alone: both seeds kept t = 2
    assert built == [*retrain.stream_prefixes(out, 0, [4, 5]), *retrain.stream_prefixes(out, 1, [4, 5])]
    assert "retrain_reference" not in BenchConfig(retrain_reference=True).settings()  # not a setting runs share
    with pytest.raises(ConfigError, match="prepared forget split"):
        _build_retrain_references(out, configs(overrides={"stream": {"source": "x.jsonl"}}), "cpu", progress=False)


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


def test_a_reference_scored_on_other_evaluation_data_is_rescored_not_retrained(prepared, tmp_path, monkeypatch):
    import fit_unlearn.retrain as retrain
    from fit_unlearn.evaluation import Reference, retrain_entries
    from fit_unlearn.layout import PreparedDir

    out = tmp_path / "prep"
    shutil.copytree(prepared[0], out)
    forgotten = prepared[1]
    ref_file = PreparedDir(out).reference
    ref_file.write_text(json.dumps({**json.loads(ref_file.read_text()), "data_hash": "new paraphrases"}))
    assert retrain_entries(out) == [] and Reference.load(out).retrain_items(forgotten) is None  # not served stale
    monkeypatch.setattr(retrain, "train_gold", lambda *a, **k: pytest.fail("retrained"))
    entry = retrain.build_retrain_reference(out, forgotten, progress=False)
    assert entry["scored"]["data_hash"] == "new paraphrases"
    assert Reference.load(out).retrain_items(forgotten) is not None


def test_a_damaged_reference_is_skipped_by_evaluations(prepared, tmp_path):
    from fit_unlearn.evaluation import Reference
    from fit_unlearn.layout import PreparedDir

    out = tmp_path / "prep"
    shutil.copytree(prepared[0], out, ignore=shutil.ignore_patterns("*.safetensors"))
    (f,) = PreparedDir(out).retrain.glob("*/retrain.json")
    f.write_text(f.read_text()[:100])  # a write cut short
    assert Reference.load(out).retrain_items(prepared[1]) is None

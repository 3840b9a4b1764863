"""Rich tables and summary lines of the results dicts that the library returns and writes.

Each function renders one results dict (a prepare report, an evaluation, a run's results, an attack's
results, journal events, data statistics) as a rich ``Table``, ``Text`` or ``Group`` and computes nothing
beyond formatting, so the same output can be made again from the JSON files.  Lines carry rich markup and
the highlighting that ``Console.print`` gives a plain string.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.highlighter import ReprHighlighter
from rich.table import Table
from rich.text import Text

from fit_unlearn.layout import PreparedDir, RunDir

_HIGHLIGHTER = ReprHighlighter()


def fmt(v, spec: str = ".3f") -> str:
    """``v`` formatted with ``spec``; ``n/a`` for a value that is not defined (None)."""
    return "n/a" if v is None else format(v, spec)


def line(markup: str) -> Text:
    """One line of rich markup, highlighted (numbers, paths) as ``Console.print`` highlights a string."""
    text = Text.from_markup(markup)
    out = _HIGHLIGHTER(str(text))
    out.copy_styles(text)
    return out


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    return table


# data


def synth_summary(res: dict) -> Text:
    """What ``data.synth.write_synth`` wrote."""
    return line(
        f"wrote {res['forget']} forget, {res['retain']} retain, {res['holdout']} "
        f"holdout documents to {res['out']} (max 3-gram Jaccard {res['max_jaccard']:.3f}, "
        f"data hash {res['data_hash']})"
    )


def stats_table(stats: dict) -> Table:
    """Documents per domain, documents, QA pairs and mean length per split (``data.stats.data_stats``)."""
    table = _table(stats["source"], ("split", *stats["domains"], "documents", "QA pairs", "chars (mean)"))
    for split, st in stats["splits"].items():
        table.add_row(
            split,
            *[str(st["domains"].get(d, 0)) for d in stats["domains"]],
            str(st["documents"]),
            str(st["qa_pairs"]),
            f"{st['mean_chars']:.0f}",
        )
    return table


def malicious_summary(n: int, kind: str, out: str | Path) -> Text:
    """The adversarial request file written, and how to run it."""
    return line(f"wrote {n} {kind} requests to {out}; run them with `fit-unlearn run --requests {out} ...`")


# prepare


def prepare_table(report: dict, out: str | Path) -> Table:
    """Forget token accuracy, capital probe and F / R of the base model, theta_0 and the retain-only model
    (the report ``prepare`` returns and writes to ``prepare.json``)."""
    ref = report["reference"]
    para = report.get("paraphrase") or {}
    table = _table(
        f"prepared {out}",
        ("model", "forget token acc", "capital probe", "F (forget)", "F paraphrased", "R (retain-eval)"),
    )
    base = report["base"]
    table.add_row("base", f"{base['forget_token_acc']:.3f}", f"{base['probe_accuracy']:.2f}", "", "", "")
    for name, f_key, r_key in (("theta0", "forget_0", "retain_0"), ("retain_only", "forget_T", "retain_T")):
        m = report["models"][name]
        table.add_row(
            name,
            f"{m['forget_token_acc']:.3f}",
            f"{m['probe_accuracy']:.2f}",
            f"{ref[f_key]:.2f}",
            fmt((para.get(name) or {}).get("score"), ".2f"),
            f"{ref[r_key]:.2f}",
        )
    return table


def prepare_summary(report: dict, out: str | Path) -> Group:
    """:func:`prepare_table`, the retain-train / retain-eval split, the paraphrase gap and the training time."""
    parts: list = [prepare_table(report, out)]
    sp = report["retain_split"]
    parts.append(
        line(
            f"retain split: {sp['retain_train']} retain-train (anchors) / {sp['retain_eval']} retain-eval "
            f"(utility), {sp['file']}"
        )
    )
    para = report.get("paraphrase")
    if para:
        gap = para["theta0"]["score"] - para["retain_only"]["score"]
        parts.append(
            line(
                f"paraphrased questions (never trained on): theta0 {para['theta0']['score']:.2f} vs retain-only "
                f"{para['retain_only']['score']:.2f} (gap {gap:+.2f})"
            )
        )
    seconds = report["models"]["theta0"]["seconds"] + report["models"]["retain_only"]["seconds"]
    parts.append(line(f"training time {seconds:.0f} s; report: {PreparedDir(out).report}"))
    return Group(*parts)


# eval


def eval_table(res: dict, name: str) -> Table:
    """Scores of one evaluation (``evaluation.evaluate_model`` / ``evaluate_prepared``) next to the
    reference each is compared with."""
    table = _table(
        f"{name}  (t={res.get('t')}/{res.get('T')})",
        ("items", "probability", "ROUGE-L", "token acc", "score", "reference", "reference is"),
    )
    ref = res.get("reference", {})
    rows = [
        ("forgotten", res["forget"], (ref.get("forget_strict") or {}).get("retain_only"), "retain-only"),
        (
            "forgotten, paraphrased",
            res["forget"].get("paraphrase"),
            (ref.get("forget_paraphrase") or {}).get("retain_only"),
            "retain-only",
        ),
        ("not yet requested", res.get("pending"), (ref.get("collateral") or {}).get("theta0"), "theta0"),
        ("whole forget set", res.get("forget_all"), (ref.get("forget_paper") or {}).get("mixture"), "mixture"),
        ("retain-eval", res["retain"], (ref.get("retain") or {}).get("at_t"), "interpolated"),
    ]
    for label, s, r, what in rows:
        if not s:
            continue
        table.add_row(
            label,
            f"{s['probability']:.3f}",
            f"{s['rouge_l']:.3f}",
            fmt(s.get("token_acc")),
            f"{s['score']:.2f}",
            fmt(r, ".2f"),
            what,
        )
    return table


def eval_degrees(res: dict) -> Text:
    """The evaluation's degrees on one line: strict / paper F.D., collateral, R.U., probe, MIA, extraction."""
    parts = [
        f"F.D. strict {fmt(res.get('forget_degree_strict'))}",
        f"(paraphrased {fmt(res.get('forget_degree_strict_paraphrase'))})",
        f"F.D. paper {fmt(res.get('forget_degree_paper'))}",
        f"collateral {fmt(res.get('collateral_forget'))}",
        f"R.U. {fmt(res.get('retain_utility'))}",
    ]
    probe = res.get("capital_probe")
    if probe:
        parts.append(f"capital probe {probe['accuracy']:.2f} (theta0 {probe['theta0']:.2f})")
    if res.get("mia_auc_forget_vs_holdout") is not None:
        parts.append(f"MIA AUC (forget vs holdout) {res['mia_auc_forget_vs_holdout']:.3f}")
    if "extraction_strength_forget" in res:
        parts.append(f"extraction strength {res['extraction_strength_forget']:.3f}")
    return line("   ".join(parts))


def eval_summary(res: dict, out: str | Path) -> Group:
    """The downstream tasks, :func:`eval_table` (titled with the evaluated model), the degrees and where the
    results were written (``out``)."""
    parts: list = [
        line(f"downstream {task}: " + ", ".join(f"{k} {v:.3f}" for k, v in vals.items()))
        for task, vals in res.get("downstream", {}).items()
    ]
    parts += [eval_table(res, res["provenance"]["model"]), eval_degrees(res), line(f"results: {out}")]
    return Group(*parts)


# run


def run_table(results: dict, out: str | Path) -> Table:
    """One row per evaluation of a run (``Engine.run`` / ``results.json``)."""
    exact = any(e.get("forget_degree_retrain") is not None for e in results["evals"])
    table = _table(
        f"run {out}",
        (
            "t",
            "F (forgotten)",
            "R (retain-eval)",
            "F.D. strict",
            *(("F.D. retrain",) if exact else ()),
            "F.D. paper",
            "collateral",
            "R.U.",
            "MIA AUC",
        ),
    )
    for e in results["evals"]:
        table.add_row(
            str(e["t"]),
            f"{e['forget']['score']:.2f}",
            f"{e['retain']['score']:.2f}",
            fmt(e.get("forget_degree_strict")),
            *((fmt(e.get("forget_degree_retrain")),) if exact else ()),
            fmt(e.get("forget_degree_paper")),
            fmt(e.get("collateral_forget")),
            fmt(e.get("retain_utility")),
            fmt(e.get("mia_auc_forget_vs_holdout")),
        )
    return table


def run_summary(results: dict, out: str | Path) -> Group:
    """:func:`run_table`, then the requests applied and rejected, update time, final model and results file."""
    n = len(results["requests"])
    secs = sum(r.get("seconds", 0) + r.get("seconds_plan", 0) for r in results["requests"])
    return Group(
        run_table(results, out),
        line(
            f"{n} requests applied ({len(results['rejected'])} rejected), {secs:.0f} s of updates; "
            f"final model {results['final_model']}; results {RunDir(out).results}"
        ),
    )


def receipt(events: list[dict]) -> Group:
    """What was done for one request, from its journal events (``engine.journal.request_events``): chunks
    dropped, layers, importance, objective, losses, time."""
    parts: list = []
    for e in events:
        if e["event"] in ("applied", "redundant"):
            parts += _receipt_lines(e)
        else:
            parts.append(line(f"[bold]{e['event']}[/bold] position {e.get('position')} {e.get('reason', '')}"))
    return Group(*parts)


def _receipt_lines(e: dict) -> list[Text]:
    r = e.get("record", {})
    rc = r.get("receipt", {})
    lines = [line(f"[bold]request {e['id']}[/bold] (stream position {e['position']}): {e['event']}")]
    f = rc.get("filter")
    if f:
        lines.append(
            line(
                f"  filter: {f['chunks']} chunks, {f['candidates']} candidates (s* >= tau), "
                f"{len(f['dropped'])} dropped, kept fraction {f['kept_fraction']:.2f}, "
                f"memory {f['memory_size']} chunks"
            )
        )
        for d in f["dropped"][:20]:
            lines.append(line(f"    dropped {d['chunk']!r}  s*={d['s_star']:.3f}  dL={d['dL']:.3f}"))
        if len(f["dropped"]) > 20:
            lines.append(line(f"    ... {len(f['dropped']) - 20} more"))
    if rc.get("fully_redundant"):
        lines.append(line("  fully redundant: no update made"))
    ly = rc.get("layers")
    if ly:
        scores = ", ".join(f"{i}:{ly['layer_scores'][i]:.3f}" for i in ly["layers"])
        lines.append(line(f"  layers: top {ly['k']} of {len(ly['layer_scores'])} -> {scores}"))
    imp = rc.get("importance")
    if imp:
        lines.append(
            line(
                f"  importance {imp['importance']:.3f} (thresholds high {imp['thresholds'][0]:.3f}, "
                f"low {imp['thresholds'][1]:.3f}) -> objective {imp['objective']}"
            )
        )
    if r.get("request_ce_before") is not None:
        lines.append(
            line(f"  request CE {r['request_ce_before']:.3f} -> {r['request_ce_after']:.3f} (before -> after)")
        )
    if "objective" in r:
        lines.append(
            line(
                f"  update: objective {r['objective']}, {r['steps']} steps, loss {fmt(r.get('loss_first'))}"
                f" -> {fmt(r.get('loss_last'))}, {r['params_touched']:,} parameters trainable"
            )
        )
    rows = r.get("rows")
    if rows:
        if rows["edited"]:
            shared = rows.get("shared_with") or 0
            lines.append(
                line(
                    f"  rows: {len(rows['tokens'])} input-embedding rows edited "
                    f"{', '.join(repr(t) for t in rows['decoded'][:24])}"
                    + (
                        f" (rarest tokens: each in at most {shared} other documents)"
                        if rows.get("widened", bool(shared))
                        else ""
                    )
                )
            )
            for c in rows.get("covered") or ():  # rows.cover_prompts: a question read in shared words only
                lines.append(
                    line(
                        f"  + {c['decoded']!r} ({c['holders']} other documents hold it) for the question "
                        f"{c['question']!r}"
                    )
                )
        else:
            lines.append(line("  rows: the request has no token of its own; updated as trainable: full"))
    lp = r.get("loop")
    if lp:
        source = {
            "base": " (the base model's loss)",
            "both": f" (the higher of the holdout level {lp.get('target_level', float('nan')):.3f} and the base "
            f"model's loss {lp.get('target_base', float('nan')):.3f})",
        }.get(lp.get("target_from"), "")
        capped = f" (each token's loss capped at {lp['cap']:.2f})" if lp.get("cap") is not None else ""
        # the measures after the loss before the first step (records before session 23 do not list them)
        checks = f" ({len(lp['measured']) - 1} checks)" if lp.get("measured") else ""
        lines.append(
            line(
                f"  closed loop: loss {lp['loss_before']:.3f} -> {lp['loss_after']:.3f}{capped}, target "
                f"{lp['target']:.3f}{source}, {lp['steps']} steps{checks}, stopped: {lp['stopped']}"
            )
        )
    esc = r.get("escalated")
    if esc and esc.get("loop"):  # rows.escalate_steps: the rows fell short, the rest as a weight update
        el = esc["loop"]
        lines.append(
            line(
                f"  escalated to a weight update ({esc.get('objective')}): loss {el['loss_before']:.3f} -> "
                f"{el['loss_after']:.3f}, {esc['steps']} steps, stopped: {el['stopped']}"
            )
        )
    g = r.get("guard")
    if g:
        repair = f", {g['repair_steps']} repair steps -> {g['drift_after']:+.1%}" if g.get("repair_steps") else ""
        lines.append(line(f"  guard: probe drift {g['drift_before']:+.1%}{repair}"))
    secs = {**rc.get("seconds", {}), "update": r.get("seconds", 0.0)}
    lines.append(line("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in secs.items())))
    return lines


# attacks


def quantize_table(res: dict) -> Table:
    """F and R of each model at full precision and at each bit width (``attacks.quantize_attack``)."""
    table = _table(f"quantization attack ({res['method']})", ("model", "precision", "F (forget)", "R (retain)"))
    for label, rows in res["models"].items():
        for prec, r in rows.items():
            table.add_row(label, prec, f"{r['forget_score']:.2f}", f"{r['retain_score']:.2f}")
    return table


def quantize_summary(res: dict, out: str | Path) -> Group:
    """:func:`quantize_table`, the unlearned model's recovery per bit width and the results file."""
    return Group(
        quantize_table(res),
        line(
            "recovery of the unlearned model: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in res["recovery"].items())
            + f"; results {out}"
        ),
    )


def relearn_summary(res: dict, out: str | Path) -> Text:
    """The relearning attack (``attacks.relearn_attack``): held-out forget score before and after, recovery."""
    return line(
        f"relearned on {len(res['relearn_ids'])} docs ({res['steps']} steps, lr {res['config']['lr']}); held-out "
        f"forget score {res['before']['forget_score']:.2f} -> {res['after']['forget_score']:.2f} "
        f"(theta0 {fmt(res['held_out_forget_theta0'], '.2f')}); recovery {fmt(res['recovery'])}; "
        f"results {out}"
    )


def adapters(rows: list[dict], run: str | Path) -> Group:
    """The adapters of a stacked-LoRA run (``engine.revert.adapters_table``), one per applied request."""
    t = Table(
        title=f"adapters of {run} (one per request, all active; revert: fit-unlearn adapters revert ID --out DIR)"
    )
    for col in ("adapter", "request", "position", "layers", "params", "MiB", "objective", "steps"):
        t.add_column(col, overflow="fold")
    for r in rows:
        layers = "all" if r["layers"] in (None, "all") else ",".join(str(i) for i in r["layers"])
        t.add_row(
            r["adapter"],
            str(r["request"]),
            str(r["position"]),
            layers,
            f"{r['params']:,}",
            f"{r['bytes'] / 2**20:.2f}",
            str(r["objective"]),
            str(r["steps"]),
        )
    total = sum(r["bytes"] for r in rows) / 2**20
    return Group(t, line(f"{len(rows)} adapters, {total:.1f} MiB on disk"))


# bench, report, demo


def bench_run_line(info: dict) -> Text:
    """One run of a bench about to start (``bench.run_bench``'s ``on_run``)."""
    what = {"finished": "finished already, skipped", "resumed": "resuming", "started": "starting"}[info["status"]]
    return line(f"[{info['index'] + 1}/{info['of']}] {info['method']} seed {info['seed']}: {what} ({info['dir']})")


def _agg(a: dict | None, spec: str = ".3f") -> str:
    from fit_unlearn.report.document import fmt_agg

    return fmt_agg(a, spec)


def bench_table(summary: dict) -> Table:
    """Strict F.D. / R.U. per method and checkpoint (mean +- std over seeds), cost and ratio to NPO (a
    summary of ``fit_unlearn.summary.summarise``)."""
    ts = sorted({e["t"] for m in summary["methods"].values() for e in m["evals"]})
    exact = any(e.get("forget_degree_retrain") is not None for m in summary["methods"].values() for e in m["evals"])
    title = "strict F.D. / R.U." + (" (F.D. against exact unlearning)" if exact else "") + " per checkpoint"
    table = _table(title, ("method", "seeds", *(f"t={t}" for t in ts), "s/request", "ratio to NPO"))

    def cell(e: dict) -> str:
        out = f"{_agg(e.get('forget_degree_strict'))} / {_agg(e.get('retain_utility'))}"
        return out + (f" ({_agg(e['forget_degree_retrain'])})" if e.get("forget_degree_retrain") is not None else "")

    for name, m in summary["methods"].items():
        by_t = {e["t"]: e for e in m["evals"]}
        cells = [cell(e) if (e := by_t.get(t)) else "-" for t in ts]
        ratio = "1" if name == "npo" else _agg(m["cost"]["ratio_to_npo"], ".2f")
        seeds = ", ".join(map(str, m["seeds"]))
        table.add_row(name, seeds, *cells, _agg(m["cost"]["seconds_per_request"], ".2f"), ratio)
    return table


def bench_summary(summary: dict, report: str | Path) -> Group:
    """:func:`bench_table` and where the report is."""
    return Group(bench_table(summary), line(f"report: {report} (markdown: {Path(report).with_suffix('.md')})"))


def demo_summary(summary: dict, report: str | Path, methods: tuple[str, str]) -> Group:
    """Where the report is, then three lines: strict F.D., R.U. (at the last checkpoint) and int4 recovery of
    the two methods of the demo."""
    last = {m: (summary["methods"][m]["evals"] or [{}])[-1] for m in methods if m in summary["methods"]}

    def cells(key: str) -> str:
        return ", ".join(f"{m} {_agg(e.get(key))}" for m, e in last.items())

    def recovery(m: str) -> str:
        q = ((summary["methods"][m].get("attacks") or {}).get("quantize") or {}).get("int4")
        if not q:
            return "n/a"
        # a forget gap too small for the ratio to mean anything (fit_unlearn.summary.RECOVERY_MIN_GAP): the int4
        # target of the summary says so, with the gap
        int4 = next((c for c in summary["methods"][m].get("targets", []) if c["target"] == "int4 recovery"), {})
        if int4.get("gap") is not None:
            fp, attacked = q["forget_fp"]["mean"], q["forget"]["mean"]
            return f"n/a (only {int4['gap']:.1f} points of F were forgotten; F {fp:.1f} -> {attacked:.1f} in int4)"
        return _agg(q["recovery"])

    t = ", ".join(dict.fromkeys(f"t={e.get('t')}" for e in last.values()))  # once when the methods agree
    return Group(
        line(f"report: {report} (markdown: {Path(report).with_suffix('.md')})"),
        line(f"strict F.D. ({t}; 1 = forgotten like the retain-only model): {cells('forget_degree_strict')}"),
        line(f"R.U. (1 = utility kept): {cells('retain_utility')}"),
        line(
            "int4 quantization recovery (0 = nothing comes back, 1 = all): "
            + ", ".join(f"{m} {recovery(m)}" for m in last)
        ),
    )

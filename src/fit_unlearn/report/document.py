"""The report: a summary of run / bench directories (``fit_unlearn.summary``) rendered as one document, written
as markdown and as HTML with its PNG plots beside them, plus the summary itself (``report.json``).

    summary = summarise(inputs)            # read from the runs' JSON files (library, not here)
    plots   = draw_all(summary)            # report/plots.py
    blocks  = document(summary, plots)     # headings, paragraphs, tables, images
    write report.md, report.html, report.json

Cells are formatted values of the summary, never computed here: "mean +- std" where a method has several
seeds (``±``), the value alone for one seed, ``n/a`` where it is undefined.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fit_unlearn.layout import ReportDir
from fit_unlearn.provenance import describe_machine
from fit_unlearn.report.plots import PLOTS, draw_all


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str  #: plain text; `code` in backticks


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    file: str  #: a file beside the report
    caption: str


Block = Heading | Para | Bullets | Table | Image

# ---- formatting ------------------------------------------------------------------------------------------


def fmt(v, spec: str = ".3f") -> str:
    """A value (``n/a`` for None)."""
    return "n/a" if v is None else format(v, spec)


def fmt_agg(a: dict | None, spec: str = ".3f") -> str:
    """An aggregate of ``summary.aggregate``: ``mean ± std`` over seeds, the value alone for one seed."""
    if a is None:
        return "n/a"
    if a["std"] is None:
        return format(a["mean"], spec)
    return f"{format(a['mean'], spec)} ± {format(a['std'], spec)}"


def _mib(v) -> str:
    return "n/a" if not v else f"{v / 2**20:,.0f}"


def _seeds(m: dict) -> str:
    return ", ".join(str(s) for s in m["seeds"])


# ---- the document ----------------------------------------------------------------------------------------


def _intro(summary: dict) -> list[Block]:
    made = summary["rendered"]
    blocks: list[Block] = [
        Heading("fit-unlearn report", 1),
        Para(
            f"Rendered {made['created']} on {made['host']} from {', '.join(f'`{p}`' for p in summary['inputs'])}. "
            "Every number is read from what the runs wrote (`results.json`, `journal.jsonl`, `evals/`, "
            "`attack-*.json`); nothing is evaluated again. `report.json` beside this file holds the data as "
            "rendered."
        ),
    ]
    for b in summary["benches"]:
        s = b["settings"]
        methods = sorted({r["method"] for r in b["runs"]}, key=[r["method"] for r in b["runs"]].index)
        seeds = sorted({r["seed"] for r in b["runs"]})
        sessions = b.get("sessions") or [{}]
        last = sessions[-1]
        blocks.append(
            Para(
                f"Bench `{b['dir']}`: methods {', '.join(methods)}; seeds {', '.join(map(str, seeds))}; "
                f"{s['requests'] or 'all'} requests per run from `{s['prepared']}`, evaluated every "
                f"{s['eval_every']}; device {s['device']}, {s['dtype']}. Command: `{last.get('command') or 'n/a'}` "
                f"({last.get('created', 'n/a')}; machine: {describe_machine(last.get('machine'))}, host "
                f"{last.get('host', 'n/a')}, {last.get('platform', 'n/a')})."
            )
        )
    partial = [r for r in summary["runs"] if not r["finished"]]
    if partial:
        blocks.append(
            Bullets(
                tuple(
                    f"`{r['dir']}` has not finished: read from its journal ({len(r['requests'])} requests, "
                    f"evaluations at t = {', '.join(str(e['t']) for e in r['evals']) or 'none yet'})."
                    for r in partial
                )
            )
        )
    return blocks


def _degrees(summary: dict, plots: dict) -> list[Block]:
    rows = []
    exact = any(e.get("forget_degree_retrain") is not None for m in summary["methods"].values() for e in m["evals"])
    for name, m in summary["methods"].items():
        for e in m["evals"]:
            rows.append(
                (
                    name,
                    f"{e['t']}/{e['T']}",
                    str(e["seeds"]),
                    fmt_agg(e.get("forget_degree_strict")),
                    *((fmt_agg(e.get("forget_degree_retrain")),) if exact else ()),
                    fmt_agg(e.get("retain_utility")),
                    fmt_agg(e.get("forget_degree_paper")),
                    fmt_agg(e.get("collateral_forget")),
                    fmt_agg(e.get("forget_degree_strict_paraphrase")),
                    fmt_agg(e.get("mia_auc_forget_vs_holdout")),
                )
            )
    blocks: list[Block] = [
        Heading("Forgetting and utility at each checkpoint"),
        Para(
            "Strict F.D.: the forget score of the documents requested so far against the retain-only model's "
            "score on the same documents (1 = forgotten as if never trained on; 0 = as theta_0 knows them). "
            "R.U.: utility on retain-eval (documents no update anchors on) against its reference at t. Paper "
            "F.D.: the whole forget set against the per-document gold mixture. Collateral: the not-yet-requested "
            "documents against theta_0 (1 = untouched). MIA AUC: forgotten vs holdout documents (0.5 = "
            "indistinguishable). Definitions: `docs/metrics.md`. Values are mean ± std over the seeds counted "
            "in the seeds column."
            + (
                " F.D. retrain: the same forget score against the model retrained without exactly the documents "
                "forgotten by t (exact unlearning; at t = T it is the retain-only model, n/a where none was built)."
                if exact
                else ""
            )
        ),
        Table(
            (
                "method",
                "t/T",
                "seeds",
                "strict F.D.",
                *(("F.D. retrain",) if exact else ()),
                "R.U.",
                "paper F.D.",
                "collateral",
                "strict F.D. (paraphrased)",
                "MIA AUC",
            ),
            tuple(rows),
        ),
    ]
    blocks += _image(plots, "degrees")
    return blocks


def _target_cell(c: dict) -> str:
    if c.get("gap") is not None:
        return f"n/a: only {c['gap']:.1f} points of F forgotten"
    if c["met"] is None:
        return "n/a"
    at = f" (t {c['at']})" if c["at"] is not None and not c["met"] else ""
    return f"{'met' if c['met'] else 'NOT met'}: {c['worst']:.3f}{at}"


def _targets(summary: dict) -> list[Block]:
    methods = {n: m for n, m in summary["methods"].items() if m.get("targets")}
    if not methods:
        return []
    first = next(iter(methods.values()))["targets"]
    rows = tuple((name, *(_target_cell(c) for c in m["targets"])) for name, m in methods.items())
    return [
        Heading("Targets"),
        Para(
            "Whether each method meets each quality target on what its runs measured: the per-checkpoint targets "
            "hold only if they hold for every seed at every checkpoint. Each cell gives the worst value measured "
            "(the lowest F.D. and R.U., the highest MIA AUC, capital-probe distance from theta_0, attack recovery "
            "and cost ratio) and, where a target is missed, the checkpoint of that value; n/a: nothing measured it "
            "(no attack run, no NPO run to compare the cost with; an attack on a model that forgot less than "
            "10 points of F, where quantization noise alone decides the recovery). An MIA AUC far below 0.5 "
            "(forgotten documents less familiar than unseen ones) also tells them apart; the target as set does not "
            "count it. Set the thresholds with `fit-unlearn report --targets` (`docs/metrics.md`)."
        ),
        Table(("method", *(f"{c['target']} {c['rule']}" for c in first)), rows),
    ]


def _image(plots: dict, stem: str) -> list[Block]:
    p = plots.get(stem)
    return [Image(p.name, PLOTS[stem])] if p else []


def _scores(summary: dict, plots: dict) -> list[Block]:
    rows = []
    exact = any(e.get("F_forgotten_retrain") is not None for m in summary["methods"].values() for e in m["evals"])
    for name, m in summary["methods"].items():
        for e in m["evals"]:
            rows.append(
                (
                    name,
                    str(e["t"]),
                    fmt_agg(e.get("F_forgotten"), ".2f"),
                    fmt_agg(e.get("F_forgotten_retain_only"), ".2f"),
                    *((fmt_agg(e.get("F_forgotten_retrain"), ".2f"),) if exact else ()),
                    fmt_agg(e.get("F_forgotten_theta0"), ".2f"),
                    fmt_agg(e.get("F_pending"), ".2f"),
                    fmt_agg(e.get("F_pending_theta0"), ".2f"),
                    fmt_agg(e.get("R"), ".2f"),
                    fmt_agg(e.get("R_reference"), ".2f"),
                    fmt_agg(e.get("capital_probe"), ".2f"),
                    fmt_agg(e.get("eval_seconds"), ".0f"),
                )
            )
    blocks: list[Block] = [
        Heading("Forget scores: forgotten vs not yet requested"),
        Para(
            "F = 100 cbrt(p r a) on a set of documents' own QA pairs (0-100). A deletion has happened when F of the "
            "forgotten documents falls to the retain-only model's F on them; the documents nobody asked to forget "
            "should stay at theta_0's F."
        ),
    ]
    blocks += _image(plots, "forget_scores")
    blocks.append(
        Table(
            (
                "method",
                "t",
                "F forgotten",
                "retain-only on them",
                *(("retrained without them",) if exact else ()),
                "theta_0 on them",
                "F not yet requested",
                "theta_0 on them",
                "R retain-eval",
                "R reference at t",
                "capital probe",
                "evaluation s",
            ),
            tuple(rows),
        )
    )
    return blocks + _parts(summary)


def _parts(summary: dict) -> list[Block]:
    """F's three parts on the forgotten documents next to the retain-only model's: strict F.D. compares their
    product, so one part below the retain-only model's can hide another above it."""
    rows = []
    for name, m in summary["methods"].items():
        for e in m["evals"]:
            if e.get("p_forgotten_retain_only") is None:  # evaluations written before session 28
                continue
            cells = [
                f"{fmt_agg(e.get(f'{k}_forgotten'), spec)} ({fmt_agg(e.get(f'{k}_forgotten_retain_only'), spec)})"
                for k, spec in (("p", ".4f"), ("rouge", ".3f"), ("acc", ".3f"))
            ]
            rows.append((name, str(e["t"]), *cells))
    if not rows:
        return []
    return [
        Heading("F's parts on the forgotten documents"),
        Para(
            "Answer probability p, ROUGE-L r of the greedy answer and token accuracy a of the documents requested so "
            "far, in parentheses the retain-only model's on the same documents. Strict F.D. compares F = 100 cbrt(p r "
            "a) with the retain-only model's, so a part below the retain-only model's can hide another above it: a "
            "deletion has happened when each part is near its reference, not only their product."
        ),
        Table(("method", "t", "p (retain-only)", "ROUGE-L (retain-only)", "token accuracy (retain-only)"), tuple(rows)),
    ]


def _fit(summary: dict, plots: dict) -> list[Block]:
    blocks: list[Block] = [Heading("What each method did per request")]
    rows = []
    for name, m in summary["methods"].items():
        objectives = ", ".join(f"{o} {n}" for o, n in m["objectives"].items())
        rows.append((name, str(m["cost"]["requests"]), objectives, fmt_agg(m["filtered"]), str(m["redundant"])))
    blocks.append(
        Table(
            ("method", "requests (all seeds)", "objectives chosen", "text dropped by the filter", "fully redundant"),
            tuple(rows),
        )
    )
    for stem in ("loop", "layers", "importance", "filtered"):
        blocks += _image(plots, stem)
    return blocks


def _cost(summary: dict, plots: dict) -> list[Block]:
    phases: list[str] = []
    for m in summary["methods"].values():
        phases += [p for p in m["cost"]["phases"] if p not in phases]
    rows = []
    for name, m in summary["methods"].items():
        c = m["cost"]
        rows.append(
            (
                name,
                _seeds(m),
                fmt_agg(c["seconds_per_request"], ".2f"),
                *(fmt_agg(c["phases"].get(p), ".2f") for p in phases),
                fmt_agg(c.get("one_off_seconds"), ".1f"),
                _mib(c["peak_memory_bytes"]),
                fmt_agg(c["ratio_to_npo"], ".2f") if name != "npo" else "1",
                fmt_agg(c["wall_seconds"], ".0f"),
            )
        )
    machines = sorted(
        {f"{r['provenance'].get('host')} ({describe_machine(r['provenance'].get('machine'))})" for r in summary["runs"]}
    )
    blocks: list[Block] = [
        Heading("Cost"),
        Para(
            "Seconds per request: plan (FIT: filter, layer attribution, importance), update and the closed loop's "
            "guard, as each request's record timed them; mean over a run's requests, then mean ± std over seeds. "
            "Ratio to NPO: per seed, the method's seconds over the requests that both it and NPO applied, divided "
            "by NPO's, each side's one-off work before its first request included (n/a without an NPO run). "
            "One-off: seconds spent once per run before the first request (FIT's importance calibration and layer "
            "profile, the closed loop's target and guard baseline; n/a for runs journaled before it was timed). "
            "Peak memory: CUDA's peak allocation during an update, or on CPU the "
            "process's peak resident memory during the update (Linux; older runs and other systems: the process's "
            "peak so far, shared by runs made in one process). Wall: each run's time in "
            "its bench, evaluations and checkpoints included. The methods ran one after another on: "
            + "; ".join(machines)
            + "."
        ),
        Table(
            (
                "method",
                "seeds",
                "s/request",
                *(f"{p} s" for p in phases),
                "one-off s",
                "peak memory MiB",
                "ratio to NPO",
                "wall s",
            ),
            tuple(rows),
        ),
    ]
    blocks += _image(plots, "cost")
    return blocks


def _attacks(summary: dict) -> list[Block]:
    rows = []
    for name, m in summary["methods"].items():
        a = m.get("attacks") or {}
        for prec, q in (a.get("quantize") or {}).items():
            rows.append(
                (
                    name,
                    prec,
                    fmt_agg(q["forget_fp"], ".2f"),
                    fmt_agg(q["forget"], ".2f"),
                    fmt_agg(q["retain"], ".2f"),
                    fmt_agg(q["recovery"]),
                )
            )
        if a.get("relearn_recovery"):
            rows.append((name, "relearn", "", "", "", fmt_agg(a["relearn_recovery"])))
    if not rows:
        return []
    gold: list[tuple[str, ...]] = []
    for r in summary["runs"]:
        q = (r.get("attacks") or {}).get("quantize")
        if not q:
            continue
        for label in ("theta0", "retain_only"):
            for prec, v in q["models"].get(label, {}).items():
                f, rr = fmt(v.get("forget_score"), ".2f"), fmt(v.get("retain_score"), ".2f")
                row = (str(r["seed"]), label, prec, f, rr)
                if row not in gold:  # the runs of one seed forgot the same documents: the same values
                    gold.append(row)
    method = next(
        (r["attacks"]["quantize"]["method"] for r in summary["runs"] if (r.get("attacks") or {}).get("quantize")), None
    )
    blocks: list[Block] = [
        Heading("Recovery attacks"),
        Para(
            "The final model reloaded with quantized weights"
            + (f" ({method})" if method else "")
            + ": recovery = (F quantized - F unlearned) / (F theta_0 - F unlearned); 0 = nothing comes back, 1 = "
            "back to theta_0 (`docs/attacks.md`). F on the documents the run forgot, R on retain-eval."
        ),
        Table(("method", "attack", "F unlearned", "F attacked", "R attacked", "recovery"), tuple(rows)),
    ]
    if gold:
        blocks += [
            Para("The gold models under the same attack, on the documents the runs of each seed forgot:"),
            Table(("seed", "model", "precision", "F", "R"), tuple(gold)),
        ]
    return blocks


def _downstream(summary: dict) -> list[Block]:
    rows = []
    for name, m in summary["methods"].items():
        for e in m["evals"]:
            for k, v in e.items():
                if k.startswith("downstream.") and v is not None:
                    rows.append((name, str(e["t"]), k.removeprefix("downstream."), fmt_agg(v)))
    if not rows:
        return []
    return [Heading("Downstream tasks"), Table(("method", "t", "task.metric", "value"), tuple(rows))]


def _provenance(summary: dict) -> list[Block]:
    rows = []
    for r in summary["runs"]:
        p = r["provenance"]
        v = p.get("versions") or {}
        rows.append(
            (
                f"`{r['dir']}`",
                r["method"],
                str(r["seed"]),
                "yes" if r["finished"] else "no",
                str(len(r["requests"])),
                r["config_hash"] or "n/a",
                p.get("created", "n/a"),
                f"{p.get('host', 'n/a')}" + (f" ({describe_machine(p['machine'])})" if p.get("machine") else ""),
                ", ".join(f"{k} {v[k]}" for k in ("fit-unlearn", "torch", "transformers", "python") if k in v),
                f"`{p.get('model', 'n/a')}`",
                p.get("data_hash", "n/a"),
                f"`{r['final_model'] or 'n/a'}`",
            )
        )
    made = summary["rendered"]
    return [
        Heading("Provenance"),
        Table(
            (
                "run",
                "method",
                "seed",
                "finished",
                "requests",
                "config hash",
                "results written",
                "machine",
                "versions",
                "model",
                "data hash",
                "final model",
            ),
            tuple(rows),
        ),
        Para(
            f"Each run's full configuration is in its `results.json` (and its journal's start record). Report "
            f"rendered by fit-unlearn {made['versions'].get('fit-unlearn', 'n/a')} on {made['platform']}."
        ),
    ]


def _not_drawn(plots: dict) -> list[Block]:
    missing = [f"{PLOTS[s]}: no run recorded it." for s, p in plots.items() if p is None]
    return [Heading("Plots not drawn"), Bullets(tuple(missing))] if missing else []


def document(summary: dict, plots: dict) -> list[Block]:
    """The report's blocks, in reading order."""
    return [
        *_intro(summary),
        *_targets(summary),
        *_degrees(summary, plots),
        *_scores(summary, plots),
        *_fit(summary, plots),
        *_cost(summary, plots),
        *_attacks(summary),
        *_downstream(summary),
        *_provenance(summary),
        *_not_drawn(plots),
    ]


# ---- writers ---------------------------------------------------------------------------------------------


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"* {i}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(map(_md_cell, b.columns)) + " |", "|" + "---|" * len(b.columns)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.file})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}
figure{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}code{background:#f5f5f5;padding:0 3px}"""


def to_html(blocks: list[Block], title: str = "fit-unlearn report") -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    out.append(f"<style>{_CSS}</style></head><body>")
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(c)}</th>" for c in b.columns)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            cap = html.escape(b.caption)
            out.append(f"<figure><img src='{html.escape(b.file)}' alt='{cap}'><figcaption>{cap}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_report(inputs: list[Path], out: Path, targets=None) -> Path:
    """Render run directories and/or bench directories into ``out`` (``layout.ReportDir``): report.md and
    report.html with the PNG plots beside them, and report.json (the data rendered); ``targets``
    (``fit_unlearn.summary.Targets``; None: the defaults) are the thresholds each method is checked against.
    Returns report.html."""
    from fit_unlearn.summary import summarise

    summary = summarise(list(inputs), targets)
    rd = ReportDir(out)
    rd.root.mkdir(parents=True, exist_ok=True)
    plots = draw_all(summary, rd.plot)
    for stem, p in plots.items():  # a plot drawn by an earlier rendering that has nothing to show now
        if p is None and rd.plot(stem).exists():
            rd.plot(stem).unlink()
    blocks = document(summary, plots)
    rd.data.write_text(json.dumps(summary, indent=1))
    rd.markdown.write_text(to_markdown(blocks), encoding="utf-8")
    rd.html.write_text(to_html(blocks), encoding="utf-8")
    return rd.html


__all__ = ["document", "fmt_agg", "render_report", "to_html", "to_markdown"]

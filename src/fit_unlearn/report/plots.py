"""PNG plots of a summary (``fit_unlearn.summary.summarise``): matplotlib, ``Agg`` backend, imported when a
plot is drawn.  Each function draws values that are already in the summary and computes nothing; it
returns the file written, or None when the summary has nothing to draw (e.g. no FIT run: no layers).

Where a method has several seeds, lines are the mean over seeds with a band of +- one standard deviation;
per-request plots show every run's requests (one marker style per seed).
"""

from __future__ import annotations

from pathlib import Path

#: the plots of a report, by file stem, with their titles (the report lists them in this order)
PLOTS = {
    "degrees": "Forget Degree and Retain Utility against the number of requests",
    "forget_scores": "Forget score of the forgotten and of the not-yet-requested documents",
    "layers": "Layers FIT selected",
    "importance": "Importance of each request and the objective chosen",
    "filtered": "Fraction of each request's text the redundancy filter dropped",
    "cost": "Seconds per request, per phase",
    "loop": "Each request's loss after its update, against its closed-loop stop target",
}

_MARKERS = "os^Dv<>p*h"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(methods) -> dict[str, str]:
    return {m: f"C{i % 10}" for i, m in enumerate(methods)}


def _series(method: dict, key: str) -> tuple[list, list, list]:
    """(t, mean, std) of one metric of a method's evaluations, where it is defined."""
    ts, mean, std = [], [], []
    for e in method["evals"]:
        a = e.get(key)
        if a is not None:
            ts.append(e["t"])
            mean.append(a["mean"])
            std.append(a["std"] or 0.0)
    return ts, mean, std


def _line(ax, ts, mean, std, **kw) -> None:
    ax.plot(ts, mean, marker=kw.pop("marker", "o"), **kw)
    if any(std):
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(ts, lo, hi, color=kw.get("color"), alpha=0.15, linewidth=0)


def _integer_x(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _n_seeds(summary: dict) -> int:
    return max(len(m["seeds"]) for m in summary["methods"].values())


def _seeds_note(summary: dict) -> str:
    n = _n_seeds(summary)
    return f" (mean +- std over {n} seeds)" if n > 1 else ""


def plot_degrees(summary: dict, path: Path) -> Path | None:
    """Strict F.D., paper F.D. and R.U. against t, one line per method."""
    methods = summary["methods"]
    if not any(m["evals"] for m in methods.values()):
        return None
    plt = _plt()
    colors = _colors(methods)
    panels = (
        ("forget_degree_strict", "strict F.D. (forgotten vs retain-only model)"),
        ("forget_degree_paper", "paper F.D. (whole forget set vs gold mixture)"),
        ("retain_utility", "R.U. (retain-eval)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, (name, m) in enumerate(methods.items()):
            ts, mean, std = _series(m, key)
            if ts:  # one marker and size per method: lines that coincide stay visible
                _line(ax, ts, mean, std, color=colors[name], label=name, marker=_MARKERS[i % len(_MARKERS)])
                ax.lines[-1].set_markersize(9 - 1.5 * (i % 3))
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("requests applied (t)")
        ax.set_ylabel("degree (1 = as the reference)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(title="method")
    _integer_x(*axes)
    fig.suptitle(PLOTS["degrees"] + _seeds_note(summary), fontsize=12)
    return _save(fig, path)


def plot_forget_scores(summary: dict, path: Path) -> Path | None:
    """Per method: F of the forgotten documents and of the pending ones against t, with their references
    (the retain-only model on the forgotten documents, theta_0 on the pending ones)."""
    methods = {n: m for n, m in summary["methods"].items() if any(e.get("F_forgotten") for e in m["evals"])}
    if not methods:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods) + 0.6, 4.2), sharey=True, squeeze=False)
    for ax, (name, m) in zip(axes[0], methods.items(), strict=True):
        for key, label, style in (
            ("F_forgotten", "forgotten (requested so far)", {"color": "C3"}),
            ("F_forgotten_retain_only", "retain-only model on them (target)", {"color": "C3", "linestyle": ":"}),
            ("F_forgotten_retrain", "retrained without them (exact)", {"color": "C3", "linestyle": "--"}),
            ("F_pending", "not yet requested", {"color": "C0"}),
            ("F_pending_theta0", "theta_0 on them (untouched)", {"color": "C0", "linestyle": ":"}),
        ):
            ts, mean, std = _series(m, key)
            if ts:
                _line(ax, ts, mean, std, label=label, **style)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("requests applied (t)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    _integer_x(*axes[0])
    axes[0][0].set_ylabel("forget score F = 100 cbrt(p r a)")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(PLOTS["forget_scores"] + _seeds_note(summary), fontsize=12)
    return _save(fig, path)


def plot_layers(summary: dict, path: Path) -> Path | None:
    """Per method with layer attribution: how many requests trained each decoder layer."""
    methods = {n: m for n, m in summary["methods"].items() if m.get("layer_counts")}
    if not methods:
        return None
    plt = _plt()
    colors = _colors(summary["methods"])
    fig, axes = plt.subplots(len(methods), 1, figsize=(9, 2.8 * len(methods) + 0.6), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], methods.items(), strict=True):
        layers = [int(i) for i in m["layer_counts"]]
        ax.bar(layers, list(m["layer_counts"].values()), color=colors[name])
        ax.set_title(f"{name}: {m['cost']['requests']} requests, seeds {', '.join(map(str, m['seeds']))}", fontsize=10)
        ax.set_xlabel("decoder layer (0 = closest to the embeddings)")
        ax.set_ylabel("requests that trained it")
        ax.set_xticks(layers)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(PLOTS["layers"], fontsize=12)
    return _save(fig, path)


def _fit_runs(summary: dict, field: str) -> dict[str, list[dict]]:
    """method -> its runs that recorded ``field`` for some request."""
    out: dict[str, list[dict]] = {}
    for r in summary["runs"]:
        if any(q.get(field) is not None for q in r["requests"]):
            out.setdefault(r["method"], []).append(r)
    return out


def plot_importance(summary: dict, path: Path) -> Path | None:
    """Per method with importance selection: each request's importance against its stream position, coloured
    by the objective chosen (one marker per seed), with each seed's thresholds (high, low) as dashed lines."""
    from matplotlib.lines import Line2D

    methods = _fit_runs(summary, "importance")
    if not methods:
        return None
    plt = _plt()
    objectives = sorted(
        {q["objective"] for rs in methods.values() for r in rs for q in r["requests"] if q["objective"]}
    )
    colors = {o: f"C{i % 10}" for i, o in enumerate(objectives)}
    fig, axes = plt.subplots(1, len(methods), figsize=(7.5 * len(methods), 4.4), squeeze=False)
    for ax, (name, rs) in zip(axes[0], methods.items(), strict=True):
        handles = [Line2D([], [], marker="o", linestyle="", color=colors[o], label=o) for o in objectives]
        for k, r in enumerate(rs):
            qs = [q for q in r["requests"] if q["importance"] is not None]
            marker = _MARKERS[k % len(_MARKERS)]
            ax.scatter(
                [q["position"] for q in qs],
                [q["importance"] for q in qs],
                c=[colors.get(q["objective"], "black") for q in qs],
                marker=marker,
                zorder=3,
            )
            th = next((q["thresholds"] for q in qs if q["thresholds"]), None)
            style = ("--", ":", "-.")[k % 3]
            if th:
                for v in th:
                    ax.axhline(v, color="grey", linestyle=style, linewidth=0.9)
            label = f"seed {r['seed']}" + (f": thresholds {th[0]:.3g} / {th[1]:.3g}" if th else "")
            handles.append(Line2D([], [], marker=marker, color="grey", linestyle=style, label=label))
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("stream position of the request")
        ax.set_ylabel("importance (gradient norm)")
        ax.grid(alpha=0.3)
        _integer_x(ax)
        ax.legend(handles=handles, title="objective chosen; seed (high / low)", fontsize=8, title_fontsize=8)
    fig.suptitle(PLOTS["importance"], fontsize=12)
    return _save(fig, path)


def plot_filtered(summary: dict, path: Path) -> Path | None:
    """Per method with a redundancy filter: the fraction of each request's text it dropped."""
    methods = _fit_runs(summary, "filtered_fraction")
    if not methods:
        return None
    plt = _plt()
    colors = _colors(summary["methods"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, rs in methods.items():
        for k, r in enumerate(rs):
            qs = [q for q in r["requests"] if q["filtered_fraction"] is not None]
            ax.plot(
                [q["position"] for q in qs],
                [q["filtered_fraction"] for q in qs],
                marker=_MARKERS[k % len(_MARKERS)],
                linestyle="-",
                linewidth=0.8,
                color=colors[name],
                label=f"{name}, seed {r['seed']}",
            )
    _integer_x(ax)
    ax.set_xlabel("stream position of the request")
    ax.set_ylabel("fraction of the text dropped")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(PLOTS["filtered"], fontsize=12)
    return _save(fig, path)


def plot_cost(summary: dict, path: Path) -> Path | None:
    """Mean seconds per request of each method, stacked by phase."""
    methods = {n: m for n, m in summary["methods"].items() if m["cost"]["phases"]}
    if not methods:
        return None
    plt = _plt()
    phases: list[str] = []
    for m in methods.values():
        phases += [p for p in m["cost"]["phases"] if p not in phases]
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.7 * len(methods)))
    names = list(methods)
    left = [0.0] * len(names)
    for i, p in enumerate(phases):
        vals = [(methods[n]["cost"]["phases"].get(p) or {}).get("mean", 0.0) for n in names]
        ax.barh(names, vals, left=left, color=f"C{i % 10}", label=p)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds per request (mean over requests" + (", then seeds)" if _n_seeds(summary) > 1 else ")"))
    ax.legend(title="phase", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(PLOTS["cost"], fontsize=12)
    return _save(fig, path)


def plot_loop(summary: dict, path: Path) -> Path | None:
    """Per method with the closed loop: each request's loss after its update divided by its stop target, against
    its stream position (1: stopped exactly at the non-member level; above: overshoot; below: the step budget
    ran out first), one marker per seed, hollow where the budget was spent."""
    from matplotlib.lines import Line2D

    methods = _fit_runs(summary, "loop")
    if not methods:
        return None
    plt = _plt()
    cols = min(3, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    for ax, (name, rs) in zip(axes.flat, methods.items(), strict=False):
        handles = []
        for k, r in enumerate(rs):
            qs = [q for q in r["requests"] if q["loop"] and q["loop"].get("loss_after") is not None]
            marker, color = _MARKERS[k % len(_MARKERS)], f"C{k % 10}"
            for spent in (False, True):
                sel = [q for q in qs if (q["loop"].get("stopped") != "target") == spent]  # budget spent or stalled
                ax.scatter(
                    [q["position"] for q in sel],
                    [q["loop"]["loss_after"] / q["loop"]["target"] for q in sel],
                    marker=marker,
                    facecolors="none" if spent else color,
                    edgecolors=color,
                    zorder=3,
                )
            reached = sum(q["loop"].get("stopped") == "target" for q in qs)
            label = f"seed {r['seed']}: {reached} of {len(qs)} reached the target"
            handles.append(Line2D([], [], marker=marker, color=color, linestyle="", label=label))
        handles.append(
            Line2D([], [], marker="o", color="grey", markerfacecolor="none", linestyle="", label="not reached")
        )
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.9)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("stream position of the request")
        ax.set_ylabel("loss after / stop target (1 = the non-member level)")
        ax.grid(alpha=0.3)
        _integer_x(ax)
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle(PLOTS["loop"], fontsize=12)
    return _save(fig, path)


DRAW = {
    "degrees": plot_degrees,
    "forget_scores": plot_forget_scores,
    "layers": plot_layers,
    "importance": plot_importance,
    "filtered": plot_filtered,
    "cost": plot_cost,
    "loop": plot_loop,
}


def draw_all(summary: dict, path_of) -> dict[str, Path | None]:
    """Every plot of :data:`PLOTS`; ``path_of(stem)`` names its file.  stem -> file written (None: nothing
    to draw)."""
    return {stem: DRAW[stem](summary, Path(path_of(stem))) for stem in PLOTS}


__all__ = ["PLOTS", "draw_all"]

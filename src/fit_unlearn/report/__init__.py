"""Reports of results, rendered from the results dicts and files (no computation).

``tables``: rich tables and summary lines that the CLI prints (any rich ``Console`` can print them).
``plots`` and ``document``: :func:`render_report` renders run and bench directories into a report (markdown
and HTML, PNG plots beside them) from a summary that ``fit_unlearn.summary`` reads from the runs' JSON files.
"""

from fit_unlearn.report.document import render_report
from fit_unlearn.report.tables import (
    bench_summary,
    demo_summary,
    eval_summary,
    eval_table,
    fmt,
    malicious_summary,
    prepare_summary,
    prepare_table,
    quantize_summary,
    quantize_table,
    receipt,
    relearn_summary,
    run_summary,
    run_table,
    stats_table,
    synth_summary,
)

__all__ = [
    "bench_summary",
    "demo_summary",
    "eval_summary",
    "eval_table",
    "fmt",
    "malicious_summary",
    "prepare_summary",
    "prepare_table",
    "quantize_summary",
    "quantize_table",
    "receipt",
    "relearn_summary",
    "render_report",
    "run_summary",
    "run_table",
    "stats_table",
    "synth_summary",
]

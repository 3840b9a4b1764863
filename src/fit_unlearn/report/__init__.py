"""Reports of results: rich tables and summary lines rendered from the results dicts (no computation).

The CLI prints them; notebooks and scripts can print them with any rich ``Console``.
"""

from fit_unlearn.report.tables import (
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
    "run_summary",
    "run_table",
    "stats_table",
    "synth_summary",
]

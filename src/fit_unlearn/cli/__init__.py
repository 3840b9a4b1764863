"""The ``fit-unlearn`` command line: parse, call the library, print one-line errors.

One module per command group (``data``, ``prepare``, ``eval``, ``run`` / ``receipt``, ``demo``, ``bench``,
``report``, ``attack``, ``adapters``, ``config``), shared options in ``options``; tables and summaries come from
:mod:`fit_unlearn.report`.  Errors the user can fix print ``error: <message>`` and exit 2 (no traceback unless
``--debug``).
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from fit_unlearn.cli import attack, data
from fit_unlearn.cli.bench import bench_cmd
from fit_unlearn.cli.demo import demo_cmd
from fit_unlearn.cli.eval import eval_cmd
from fit_unlearn.cli.prepare import prepare_cmd
from fit_unlearn.cli.report import report_cmd
from fit_unlearn.cli.run import adapters_app, receipt_cmd, run_cmd
from fit_unlearn.errors import FitUnlearnError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Robust continual unlearning for Hugging Face causal LMs (FIT and baselines).",
)
app.add_typer(data.app, name="data")
app.command("receipt")(receipt_cmd)
app.command("prepare")(prepare_cmd)
app.command("eval")(eval_cmd)
app.command("run")(run_cmd)
app.command("demo")(demo_cmd)
app.command("bench")(bench_cmd)
app.command("report")(report_cmd)
app.add_typer(attack.app, name="attack")
app.add_typer(adapters_app, name="adapters")
console = Console(stderr=True)


@app.command("config")
def config_cmd() -> None:
    """Print the configuration reference (every setting of a run, its default and meaning; docs/config.md)."""
    from fit_unlearn.engine.config import config_reference

    sys.stdout.write(config_reference())


def _quiet_libraries() -> None:
    import warnings

    # PEFT asks transformers 5 a deprecated question on every LoRA update: not the user's business
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        # imported here, after the environment is set: huggingface_hub reads HF_HUB_OFFLINE when it is imported
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


#: typer raises the exceptions of its own bundled click (typer._click) as well as click's
_CLICK_ERRORS: tuple[type[Exception], ...] = (click.ClickException,)
try:
    from typer._click.exceptions import ClickException as _TyperClickException

    _CLICK_ERRORS += (_TyperClickException,)
except ImportError:  # a typer that does not bundle click
    pass


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fit_unlearn").setLevel(logging.DEBUG if debug else logging.INFO)
    _quiet_libraries()
    cmd = typer.main.get_command(app)
    try:
        cmd.main(args=args, prog_name="fit-unlearn", standalone_mode=False)
    except FitUnlearnError as e:
        if debug:
            raise
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return e.exit_code
    except _CLICK_ERRORS as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.print("aborted")
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        console.print(
            f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


__all__ = ["app", "main"]

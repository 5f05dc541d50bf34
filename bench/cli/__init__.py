"""The `bench` command line: one module per command (parse, call the library, print), registered here."""

from __future__ import annotations

import signal
import sys

import click
import typer
import typer.exceptions
from rich.markup import escape

from bench.cli import claims, doctor, estimate, fit, gate, info, kernels, report, run, scaleout
from bench.cli.common import USAGE_ERRORS, err_console
from bench.run.workerproc import kill_all

#: Usage errors of the command-line parser: click's, and typer's bundled copy of click (typer >= 0.24).
CLICK_ERRORS = tuple({click.exceptions.ClickException, getattr(typer.exceptions, "TyperException", click.ClickException)})

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Matched benchmarks of vanilla Hugging Face QLoRA vs Unsloth QLoRA.")
for _module in (run, info, report, claims, gate, estimate, fit, doctor, kernels, scaleout):
    _module.register(app)


def _interrupted(signum, frame):  # SIGTERM (a job scheduler, `timeout`) ends the run like Ctrl-C
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising them here
    except USAGE_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _aborted()
    except CLICK_ERRORS as exc:  # unknown option, missing argument, bad value
        exc.show()
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    if rc == EXIT_INTERRUPTED:  # click turns Ctrl-C / SIGTERM into this code when it handles the interrupt
        _aborted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)


EXIT_INTERRUPTED = 130


def _aborted() -> None:
    """Stop every live worker, say so and where the finished cells are, exit 130."""
    killed = kill_all()
    err_console.print("aborted" + (f" ({killed} worker(s) stopped; finished cells are in the results file: "
                                   "--resume continues)" if killed else ""))
    sys.exit(EXIT_INTERRUPTED)

"""`bench report`: render results files as a markdown (or HTML) report with plots beside it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.cli.common import console
from bench.render.report import render_to_file


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        results: List[Path] = typer.Argument(..., help="Results JSONL files (e.g. reports/results/*.jsonl)."),
        out: Optional[Path] = typer.Option(None, "--out",
                                           help="Report file (.md or .html); PNG plots are written beside it. "
                                                "Default: reports/<tiers>.<format>."),
        fmt: Optional[str] = typer.Option(None, "--format", help="md or html (default: from --out, else md)."),
    ):
        """Comparison tables, plots, decision matrix and claims check from measured results."""
        written = render_to_file(results, out, fmt)
        console.print(f"report: {written}")

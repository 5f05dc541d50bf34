"""`bench report`: render results files as a markdown (or HTML) report with plots beside it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.cli.common import UsageFailure, check_writable, console, warn_unknown_commits
from bench.config.recipes import DEFAULT_REFERENCE, RecipeError, get_recipe
from bench.render.report import render_to_file


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        results: List[Path] = typer.Argument(..., help="Results JSONL files (e.g. reports/results/*.jsonl)."),
        out: Optional[Path] = typer.Option(None, "--out",
                                           help="Report file (.md or .html); PNG plots are written beside it. "
                                                "Default: report-<tiers>-<hash>.<format> beside the first "
                                                "results file (never a report of other inputs)."),
        fmt: Optional[str] = typer.Option(None, "--format", help="md or html (default: from --out, else md)."),
        reference: str = typer.Option(DEFAULT_REFERENCE, "--reference",
                                      help="The recipe every other recipe is compared with (where it was not "
                                           "measured, the first of hf-trl, hf-kbit, hf-liger, hf-lora16 that was, "
                                           "and the report says so)."),
        claims_evidence: Optional[List[Path]] = typer.Option(
            None, "--claims-evidence", help="More evidence the claims are judged over besides RESULTS (results files, "
                                            "kernels-check results, the kernel micro-benchmark JSON; repeatable): "
                                            "the verdicts `bench claims` gives over the same files."),
        claims_doc: Optional[Path] = typer.Option(None, "--claims-doc", help="The claims document to link "
                                                                            "(e.g. reports/claims.md)."),
    ):
        """Comparison tables, the ladder, plots, decision matrix and claims check from measured results."""
        check_writable(out, "--out")
        try:
            name = get_recipe(reference).name
        except RecipeError as exc:
            raise UsageFailure(f"--reference: {exc}") from None
        written = render_to_file(results, out, fmt, reference=name, claims_evidence=claims_evidence or (),
                                 claims_doc=claims_doc)
        console.print(f"report: {written}")
        warn_unknown_commits([*results, *(p for p in claims_evidence or () if p.suffix == ".jsonl")])


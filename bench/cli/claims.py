"""`bench claims`: every published claim judged once over all the evidence given, as a markdown document."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from bench.analysis.claims import judge_claims, load_claims_inputs
from bench.cli.common import UsageFailure, check_writable, console, warn_unknown_commits
from bench.config.recipes import DEFAULT_REFERENCE, RecipeError, get_recipe
from bench.render.claims import VERDICT_TEXT, write_claims_document


def register(app: typer.Typer) -> None:
    @app.command()
    def claims(
        evidence: List[Path] = typer.Argument(..., help="Results files (.jsonl), kernels-check results (.json or a "
                                                        "folder of them) and the kernel tests' pytest-benchmark JSON."),
        out: Optional[Path] = typer.Option(None, "--out", help="The claims document (markdown), e.g. reports/claims.md."),
        reference: str = typer.Option(DEFAULT_REFERENCE, "--reference",
                                      help="The reference recipe pairs are annotated against (claims name their own "
                                           "baselines)."),
    ):
        """One verdict per published claim over every file given: its evidence (records, tiers, native or
        emulated) and why."""
        check_writable(out, "--out")
        try:
            name = get_recipe(reference).name
        except RecipeError as exc:
            raise UsageFailure(f"--reference: {exc}") from None
        judgement = judge_claims(load_claims_inputs(evidence, name))
        for c in judgement.checked:
            console.print(f"{escape(c.claim.id)}: {VERDICT_TEXT[c.verdict].strip('*')}", highlight=False)
        if out is not None:
            console.print(f"claims: {write_claims_document(judgement, out)}")
        warn_unknown_commits([p for p in evidence if p.suffix == ".jsonl"])

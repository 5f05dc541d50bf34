"""The claims check: published claims (bench/data/claims.json) set beside what the suite measured.

Pure functions, structured results. A claim speaks only through the cells that meet its stated
conditions (`where` in the data file); when none does, its verdict is "not measured" with the
first condition that no cell met, never a stretched reading. A claim comparing two recipes names
the baseline the article compared against (and the candidate, default unsloth): where the baseline
was not measured it is "not measured", saying so. Pairs that failed the parity check never count;
CPU cells never count; too few pairs for the rule is "inconclusive".

- rules: the claims file, its validation, the comparisons.
- conditions: `where` conditions, `select`, and the model facts they read.
- evidence: the spans a check's evidence is made of (text, figures, cell references).
- checks: one check per rule kind, `check_claims`.

bench.render.claims writes the claims table from the results.
"""

from __future__ import annotations

from pathlib import Path

from bench.analysis.claims.checks import CHECKS, ClaimResult, check_claims, variant_pairs
from bench.analysis.claims.conditions import (base_params, fell_back, model_family, model_fast_path,
                                              ran_unsloth_kernels, select)
from bench.analysis.claims.evidence import Cell, CellPair, Evidence, Figure, Span
from bench.analysis.claims.rules import (CLAIMS_PATH, FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, OPS, PAIR_KINDS,
                                         RULE_KINDS, WHERE_KEYS, Claim, ClaimsError, Untestable, load_claims)
from bench.analysis.results import Results

__all__ = ["CHECKS", "CLAIMS_PATH", "FAILS", "HOLDS", "INCONCLUSIVE", "NOT_MEASURED", "OPS", "PAIR_KINDS", "RULE_KINDS",
           "WHERE_KEYS", "Cell", "CellPair", "Claim", "ClaimResult", "ClaimsError", "Evidence", "Figure", "Span", "Untestable",
           "base_params", "check_claims", "claims_results", "fell_back", "load_claims", "model_family",
           "model_fast_path", "ran_unsloth_kernels", "select", "variant_pairs"]


def claims_results(results: Results, path: Path = CLAIMS_PATH) -> tuple[list[ClaimResult], list[Untestable]]:
    """(checked claims, untestable claims) for the report's results: GPU groups only (CPU cells never
    count); comparable pairs speak, not-matched ones are named as excluded."""
    claims, untestable = load_claims(path)
    gpu = [g for g in results.groups if g.mode != "cpu"]
    checked = check_claims(claims, results.entries, [g.entries for g in gpu], [p for g in gpu for p in g.pairs])
    return checked, untestable

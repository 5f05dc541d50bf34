"""The claims check: published claims (bench/data/claims.json) set beside what the suite measured.

Pure functions, structured results. A claim speaks only through the cells that meet its stated
conditions (`where` in the data file); when none does, its verdict is "not measured" with the
first condition that no cell met, never a stretched reading. A claim comparing two recipes names
the baseline the article compared against (and the candidate, default unsloth): where the baseline
was not measured it is "not measured", saying so. Pairs that failed the parity check never count;
CPU cells never count; fewer than two independent measurements (pairs or repeats), or an interval
not clear of the claim's bounds, is "inconclusive". One verdict per claim over all the evidence given:
judgement.judge_claims (the claims document and every report's claims section call it).

- rules: the claims file, its validation, the comparisons.
- conditions: `where` conditions, `select`, and the model facts they read.
- evidence: the spans a check's evidence is made of (text, figures, cell references).
- measure: measurements with intervals (bootstrap over repeats and timed steps), the minimum evidence.
- base: the checks' inputs and the verdict over measurements; checks, variants, kernel_checks: one
  check per rule kind, `check_claims`.
- judgement: the evidence (results, kernels-check results, micro-benchmarks) and `judge_claims`.

bench.render.claims writes the claims table from the results.
"""

from __future__ import annotations

from bench.analysis.claims.checks import CHECKS, ClaimResult, check_claims
from bench.analysis.claims.conditions import (base_params, fell_back, model_family, model_fast_path,
                                              ran_unsloth_kernels, select)
from bench.analysis.claims.evidence import Cell, CellPair, Evidence, Figure, Span
from bench.analysis.claims.judgement import (ClaimsInputs, Judgement, claims_results, judge_claims,
                                             load_claims_inputs)
from bench.analysis.claims.measure import MIN_UNITS, Measurement
from bench.analysis.claims.rules import (AGGREGATES, CLAIMS_PATH, FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, OPS,
                                         PAIR_KINDS, RULE_KINDS, WHERE_KEYS, Claim, ClaimsError, Untestable,
                                         load_claims)
from bench.analysis.claims.variants import variant_pairs

__all__ = ["AGGREGATES", "CHECKS", "CLAIMS_PATH", "FAILS", "HOLDS", "INCONCLUSIVE", "MIN_UNITS", "NOT_MEASURED", "OPS",
           "PAIR_KINDS", "RULE_KINDS", "WHERE_KEYS", "Cell", "CellPair", "Claim", "ClaimResult", "ClaimsError",
           "ClaimsInputs", "Evidence", "Figure", "Judgement", "Measurement", "Span", "Untestable", "base_params",
           "check_claims", "claims_results", "fell_back", "judge_claims", "load_claims", "load_claims_inputs",
           "model_family", "model_fast_path", "ran_unsloth_kernels", "select", "variant_pairs"]

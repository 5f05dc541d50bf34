"""The claims file (bench/data/claims.json): claims, their machine-checkable rules, and validation.

Each claim states what an article says, its conditions as the article gives them, how this suite
reads them (`checked_as`) and a `rule`: a `kind` (one of RULE_KINDS, each a check in
bench.analysis.claims.checks), the conditions a cell or pair must meet (`where`, keys WHERE_KEYS)
and, for numeric rules, a comparison (`op`, one of OPS, with its bounds).

Recipes (bench.config.recipes): a rule comparing two recipes (PAIR_KINDS) names the `baseline` recipe
the article compared against and the `candidate` (default "unsloth"); its pairs are the candidate's
cells against exactly that baseline, and it is "not measured" where the baseline was not. A rule over
cells may name the `recipe` (a name, a list of names, or "any") and the recipe family (`backend`:
"hf", "unsloth" or "any"). `min_pairs` (default 1): fewer comparable pairs (or cells) than that is
too little evidence (verdict "inconclusive"); so is anything under two independent measurements
(bench.analysis.claims.measure.MIN_UNITS). `needs` (optional) says what evidence would settle a claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.recipes import RECIPES

CLAIMS_PATH = Path(__file__).resolve().parent.parent.parent / "data" / "claims.json"
HOLDS, FAILS, NOT_MEASURED, INCONCLUSIVE = "holds", "does not hold", "not measured", "inconclusive"
RULE_KINDS = ("pair_metric", "cell_value", "cell_points", "fits", "exact", "variant", "consistency_across_tiers",
              "fast_path_coverage", "fallback_heuristic", "kernel_speedup")
#: Rule kinds that compare a candidate recipe with a baseline recipe.
PAIR_KINDS = ("pair_metric", "consistency_across_tiers", "fallback_heuristic")
DEFAULT_CANDIDATE = "unsloth"
OPS = ("at_least", "at_most", "between", "approx")
#: How a rule reads several measurements: their median, each one, or the largest ("up to" claims).
AGGREGATES = ("median", "each", "max")
WHERE_KEYS = ("models", "families", "fast_path", "param_range", "precision", "tiers", "modes", "seq_len", "batch_size",
              "grad_accum", "lora_r", "optimizer", "gradient_checkpointing", "target_modules")


class ClaimsError(ValueError):
    """A malformed claims file."""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    conditions: str  # as the article states them
    checked_as: str  # how this suite reads them
    rule: dict[str, Any]
    needs: str = ""  # the evidence that would settle it, said where it is not measured or inconclusive


@dataclass(frozen=True)
class Untestable:
    id: str
    text: str
    why: str


def load_claims(path: Path = CLAIMS_PATH) -> tuple[list[Claim], list[Untestable]]:
    """Claims and the untestable list from the data file, validated."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClaimsError(f"cannot read claims file {path}: {exc}") from exc
    claims = []
    for item in data.get("claims", []):
        try:
            claim = Claim(item["id"], item["text"], item["source"], item.get("conditions", ""),
                          item["checked_as"], item["rule"], item.get("needs", ""))
        except KeyError as exc:
            raise ClaimsError(f"{path}: claim {item.get('id', '?')} lacks {exc}") from None
        validate_rule(claim)
        claims.append(claim)
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ClaimsError(f"{path}: duplicate claim ids")
    untestable = [Untestable(u["id"], u["text"], u["why"]) for u in data.get("untestable", [])]
    return claims, untestable


def validate_rule(claim: Claim) -> None:
    """Raise ClaimsError for an unknown rule kind, condition or comparison, or a missing bound."""
    rule = claim.rule
    kind = rule.get("kind")
    if kind not in RULE_KINDS:
        raise ClaimsError(f"claim {claim.id}: unknown rule kind {kind!r}")
    unknown = set(rule.get("where", {})) - set(WHERE_KEYS)
    if unknown:
        raise ClaimsError(f"claim {claim.id}: unknown conditions {sorted(unknown)}")
    if kind == "kernel_speedup" and not {"kernel", "baseline_impl", "candidate_impl"} <= set(rule):
        raise ClaimsError(f"claim {claim.id}: a kernel_speedup rule names kernel, baseline_impl and candidate_impl")
    if rule.get("aggregate", "each") not in AGGREGATES:
        raise ClaimsError(f"claim {claim.id}: unknown aggregate {rule['aggregate']!r}; known: {', '.join(AGGREGATES)}")
    if kind in PAIR_KINDS and "baseline" not in rule:
        raise ClaimsError(f"claim {claim.id}: a {kind} rule names its baseline recipe")
    named = [rule[k] for k in ("baseline", "candidate") if k in rule]
    recipe = rule.get("recipe", "any")
    named += [] if recipe == "any" else ([recipe] if isinstance(recipe, str) else list(recipe))
    bad = [r for r in named if r not in RECIPES]
    if bad:
        raise ClaimsError(f"claim {claim.id}: unknown recipe(s) {bad}; known: {', '.join(RECIPES)}")
    if "op" in rule:
        op = rule["op"]
        need = {"at_least": ("threshold",), "at_most": ("threshold",), "between": ("lo", "hi"),
                "approx": ("target", "rel_tol") if kind != "cell_points" else ("rel_tol",)}.get(op)
        if need is None:
            raise ClaimsError(f"claim {claim.id}: unknown comparison {op!r}")
        missing = [k for k in need if k not in rule]
        if missing:
            raise ClaimsError(f"claim {claim.id}: comparison {op} needs {missing}")


def candidate_of(rule: dict) -> str:
    """The recipe a pair rule's claim is about (default "unsloth")."""
    return rule.get("candidate", DEFAULT_CANDIDATE)


def recipe_matches(rule: dict, recipe: str, family: str) -> bool:
    """Whether a cell of `recipe` (library family `family`) is one the cell rule reads (`recipe`, `backend`)."""
    wanted = rule.get("recipe", "any")
    if wanted != "any" and recipe not in ([wanted] if isinstance(wanted, str) else wanted):
        return False
    return rule.get("backend", "any") in ("any", family)


def compare(value: float, rule: dict, target: float | None = None) -> bool:
    """`value` against the rule's comparison (`target` overrides the rule's for approx)."""
    op = rule["op"]
    if op == "at_least":
        return value >= rule["threshold"]
    if op == "at_most":
        return value <= rule["threshold"]
    if op == "between":
        return rule["lo"] <= value <= rule["hi"]
    t = rule.get("target") if target is None else target
    return abs(value - t) <= rule["rel_tol"] * abs(t)

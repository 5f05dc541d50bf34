"""A claim's conditions (`where` in the claims file) and the model facts they read.

`select` keeps the cells or pairs whose record meets every condition; when none is left it names
the first condition that no item met (as evidence spans), so that a claim is "not measured"
rather than stretched to other models, tiers or sizes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

from bench.analysis.claims.evidence import Figure, Span
from bench.analysis.claims.rules import WHERE_KEYS
from bench.analysis.frame import records_frame
from bench.config.models import SHIPPED
from bench.config.recipes import RECIPES
from kernels_check import count_unsloth_paths


# -- model facts --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _shipped(model: str) -> Optional[tuple[bool, str]]:
    m = SHIPPED.get(model)
    return (m.unsloth_fast_path, m.config_dict().get("model_type", "")) if m else None


def model_fast_path(model: str) -> Optional[bool]:
    """True where Unsloth ships a hand-written model file for the architecture (bench.config.models.SHIPPED)."""
    facts = _shipped(model)
    return facts[0] if facts else None


def model_family(model: str) -> Optional[str]:
    """The shipped config's model_type, or None for a model the suite does not ship."""
    facts = _shipped(model)
    return facts[1] if facts else None


def base_params(entries: Sequence) -> dict[str, int]:
    """Base-model parameter count per model, from the records (total_params - trainable_params).

    The runner counts 4-bit weights as their unpacked element count, so this is the model's
    size as its config defines it; used only to class models (e.g. "7-8B").
    """
    cells = records_frame(entries)
    known = cells[(cells["total_params"].fillna(0) != 0) & cells["trainable_params"].notna()]
    base = (known["total_params"] - known["trainable_params"]).groupby(known["model"]).max()
    return {model: int(n) for model, n in base.items()}


def ran_unsloth_kernels(fast_paths: Optional[dict]) -> Optional[tuple[int, int]]:
    """(k, n) from a record's fast_paths: of the n fast paths Unsloth has a kernel for, k ran it.

    Counted by kernels_check (the module that fills fast_paths); None without a summary.
    """
    if not fast_paths:
        return None
    return count_unsloth_paths(fast_paths)


def fell_back(fast_paths: Optional[dict]) -> Optional[bool]:
    """True when some fast path with an Unsloth kernel ran another origin (kernels_check's reading of F2)."""
    counts = ran_unsloth_kernels(fast_paths)
    if counts is None or counts[1] == 0:
        return None
    return counts[0] < counts[1]


# -- conditions ------------------------------------------------------------------------------------
def describe(key: str, value: Any) -> list[Span]:
    """A condition as the end of 'none of the 4 cells ...': 'is on tier t4', 'has 6.5-8.5B parameters'."""
    if key == "models":
        return ["is of " + " / ".join(value)]
    if key == "families":
        return ["is of architecture family " + " / ".join(value)]
    if key == "fast_path":
        return ["is of an architecture " + ("with" if value else "without") + " an Unsloth fast path"]
    if key == "param_range":
        return ["has ", Figure(value[0], "billions"), "-", Figure(value[1], "billions"), "B parameters"]
    if key == "precision":
        return ["is of a " + {"nf4": "QLoRA (NF4)", "16bit": "16-bit LoRA"}.get(value, str(value)) + " recipe"]
    if key == "tiers":
        return ["is on tier " + " / ".join(value)]
    if key == "modes":
        if list(value) == ["native"]:
            return ["was measured natively (an emulated tier runs at the host GPU's speed)"]
        return ["was measured on a GPU (" + " or ".join(value) + ")"]
    if key == "target_modules":
        return ["targets " + ",".join(value)]
    return [f"has {key.replace('_', '-')} {value}"]


def meets(record, key: str, value: Any, params: dict[str, int]) -> bool:
    """Whether `record` meets the condition `key: value` (params: base parameters per model)."""
    if key == "models":
        return record.model in value
    if key == "families":
        return model_family(record.model) in value
    if key == "fast_path":
        return model_fast_path(record.model) is value
    if key == "param_range":
        n = params.get(record.model)
        return n is not None and value[0] <= n <= value[1]
    if key == "precision":
        recipe = RECIPES.get(record.recipe)
        return recipe is not None and recipe.precision == value
    if key == "tiers":
        return record.tier in value
    if key == "modes":
        return record.mode in value
    if key == "target_modules":
        return sorted(record.target_modules) == sorted(value)
    return getattr(record, key) == value


def select(items: Sequence, where: dict, record_of: Callable, noun: str, params: Optional[dict[str, int]] = None
           ) -> tuple[list, list[Span]]:
    """Items whose record meets every condition; with no item left, the first condition none met.

    `params`: base-model parameter counts per model (base_params), for the param_range condition.
    The reason is empty when items are left.
    """
    params = params or {}
    kept = list(items)
    if not kept:
        return [], [f"no {noun} measured"]
    for key in WHERE_KEYS:
        if key not in where:
            continue
        before = len(kept)
        kept = [it for it in kept if meets(record_of(it), key, where[key], params)]
        if not kept:
            return [], [f"none of the {before} {noun} ", *describe(key, where[key])]
    return kept, []

"""Verdicts against a tier's memory and the largest sizes predicted to fit (bytes; sizes in tokens
and sequences). Every function takes a recipe name, or a library family as `model.estimate` reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional

from bench.analysis.estimate.model import Estimate, estimate
from bench.analysis.estimate.shapes import model_shape

@dataclass(frozen=True)
class Verdict:
    fits: bool
    usable_bytes: int  # the tier's device memory as the driver reports it (context included)
    margin_bytes: int  # usable - predicted; negative when it does not fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(total_bytes: int, usable_bytes: int) -> Verdict:
    """Whether a predicted total (bytes) fits a tier's usable memory (bytes), and by how much."""
    return Verdict(total_bytes <= usable_bytes, int(usable_bytes), int(usable_bytes - total_bytes))


def largest_true(pred: Callable[[int], bool], lo: int, hi: int) -> Optional[int]:
    """Largest x in [lo, hi] with pred(x) True for a predicate that is True then False (monotone);
    None when pred(lo) is False. Bisection over integers: O(log(hi - lo)) calls."""
    if lo > hi or not pred(lo):
        return None
    if pred(hi):
        return hi
    ok, bad = lo, hi
    while bad - ok > 1:
        mid = (ok + bad) // 2
        if pred(mid):
            ok = mid
        else:
            bad = mid
    return ok


def max_fit_seq_len(config: dict[str, Any], recipe: str, batch_size: int, usable_bytes: int,
                    multiple_of: int = 1, max_seq_len: Optional[int] = None, **kwargs) -> Optional[int]:
    """Largest seq_len (a multiple of `multiple_of`) predicted to fit `usable_bytes` at `batch_size`;
    capped at the model's max positions (or `max_seq_len`). None if even the smallest does not fit.
    `recipe`: a recipe, or a library family as `estimate` reads it; `kwargs`: the training settings
    `estimate` takes (driver included)."""
    shape = model_shape(config)
    cap = max_seq_len or shape.max_positions or 1 << 20
    hi = cap // multiple_of

    def fits(k: int) -> bool:
        return estimate(config, recipe, k * multiple_of, batch_size, **kwargs).total_bytes <= usable_bytes

    k = largest_true(fits, 1, hi)
    return None if k is None else k * multiple_of


def max_fit_batch_size(config: dict[str, Any], recipe: str, seq_len: int, usable_bytes: int,
                       max_batch_size: int = 4096, **kwargs) -> Optional[int]:
    """Largest batch_size predicted to fit `usable_bytes` at `seq_len` (None if batch 1 does not)."""
    def fits(b: int) -> bool:
        return estimate(config, recipe, seq_len, b, **kwargs).total_bytes <= usable_bytes

    return largest_true(fits, 1, max_batch_size)


def estimate_grid(config: dict[str, Any], recipes: Iterable[str], seq_lens: Iterable[int],
                  batch_sizes: Iterable[int], usable_bytes: int, **kwargs) -> list[tuple[Estimate, Verdict]]:
    """`estimate` and its `verdict` against `usable_bytes` for every seq_len x batch_size x recipe,
    in that order. `kwargs`: what `estimate` takes besides the sizes (model_name, driver, training settings)."""
    recipes, batch_sizes = list(recipes), list(batch_sizes)
    out = []
    for s in seq_lens:
        for b in batch_sizes:
            for name in recipes:
                e = estimate(config, name, s, b, **kwargs)
                out.append((e, verdict(e.total_bytes, usable_bytes)))
    return out


def predicted_limits(config: dict[str, Any], recipes: Iterable[str], seq_lens: Iterable[int],
                     batch_sizes: Iterable[int], usable_bytes: int, seq_multiple: int = 64,
                     **kwargs) -> list[dict[str, Any]]:
    """Per recipe: the largest seq_len (multiples of `seq_multiple`) predicted to fit at each batch
    size ({"recipe", "kind": "max_seq_len", "batch_size", "max_seq_len"}) and the largest batch at
    each seq_len ({"recipe", "kind": "max_batch_size", "seq_len", "max_batch_size"}); None where
    nothing fits."""
    seq_lens, batch_sizes = list(seq_lens), list(batch_sizes)
    rows: list[dict[str, Any]] = []
    for name in recipes:
        for b in batch_sizes:
            rows.append({"recipe": name, "kind": "max_seq_len", "batch_size": b,
                         "max_seq_len": max_fit_seq_len(config, name, b, usable_bytes, multiple_of=seq_multiple,
                                                        **kwargs)})
        for s in seq_lens:
            rows.append({"recipe": name, "kind": "max_batch_size", "seq_len": s,
                         "max_batch_size": max_fit_batch_size(config, name, s, usable_bytes, **kwargs)})
    return rows

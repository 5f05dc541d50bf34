"""The "longest context and largest batch per tier" table, read from recorded max-fit probes.

`bench fit` (bench.run.fit) records one training cell per probe; `max_fit_rows` reads the largest
fitting and smallest failing sizes off those records (monotone reading; a largest fitting size whose
cell is borderline, bench.analysis.borderline, is flagged so), and `estimator_seeds`
gives the estimator's answer for the same settings: the search's starting points and the
table's "predicted" columns. Memory is bytes, sizes are tokens (seq_len) and sequences (batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from bench.analysis.borderline import is_borderline
from bench.analysis.estimate import EstimateError, compute_capability_of, max_fit_batch_size, max_fit_seq_len
from bench.config.models import ModelError, resolve_model
from bench.config.settings import FIT_SEQ_MULTIPLE
from bench.config.tiers import TierError, get_tier
from bench.schema.record import ResultRecord

#: Largest sizes the table's predictions consider: sequence lengths up to a model's positions
#: (this when it names none), batches up to PREDICT_MAX_BATCH.
PREDICT_MAX_SEQ = 131072
PREDICT_MAX_BATCH = 4096


def estimator_seeds(config_dict: dict, recipe: str, usable_bytes: int, batch_size: int, seq_len: int,
                    max_seq_len: int, max_batch_size: int, **estimate_kw) -> tuple[Optional[int], Optional[int]]:
    """The estimator's largest seq (at batch_size, on the search's grid of FIT_SEQ_MULTIPLE tokens)
    and batch (at seq_len) under usable_bytes for `recipe`; None where even the smallest does not fit.

    `estimate_kw`: the settings `bench.analysis.estimate.estimate_recipe` takes (driver, lora_r,
    target_modules, optimizer, gradient_checkpointing, dtype, compute_capability)."""
    seq = max_fit_seq_len(config_dict, recipe, batch_size, usable_bytes, multiple_of=FIT_SEQ_MULTIPLE,
                          max_seq_len=max_seq_len, **estimate_kw)
    batch = max_fit_batch_size(config_dict, recipe, seq_len, usable_bytes, max_batch_size=max_batch_size,
                               **estimate_kw)
    return seq, batch


@dataclass
class MaxFitRow:
    tier: str
    mode: str
    host_gpu_name: Optional[str]
    recipe: str
    driver: str
    model: str
    batch_size: int
    max_seq_len: Optional[int]
    seq_fail: Optional[int]
    seq_fail_status: Optional[str]
    seq_len: int
    max_batch_size: Optional[int]
    batch_fail: Optional[int]
    batch_fail_status: Optional[str]
    probes: int
    predicted_max_seq_len: Optional[int] = None
    predicted_max_batch_size: Optional[int] = None
    max_seq_borderline: bool = False  # the max_seq_len cell is borderline (emulated, peak within the margin)
    max_batch_borderline: bool = False


def _bracket(points: list[tuple[int, bool, str]]) -> tuple[Optional[int], Optional[int], Optional[str]]:
    """(largest fitting x below the smallest failure, smallest failure, its status) of (x, fits, status)."""
    fails = sorted((x, st) for x, ok, st in points if not ok)
    min_fail, status = (fails[0] if fails else (None, None))
    fitting = [x for x, ok, _ in points if ok and (min_fail is None or x < min_fail)]
    return (max(fitting) if fitting else None), min_fail, status


def max_fit_rows(records: list[ResultRecord], batch_size_for: Callable[[str], int],
                 seq_len_for: Callable[[str], int], predict: bool = True) -> list[MaxFitRow]:
    """One row per (tier, mode, recipe, driver, model) from probe records (latest per cell).

    The seq search is read from the records at batch `batch_size_for(tier)`, the batch search
    from those at seq `seq_len_for(tier)`. Monotone reading: the largest fitting value below the
    smallest failing one. With `predict`, the estimator's answers for the same settings (those of
    the group's records, on the host GPU they ran on) are filled in beside.
    """
    groups: dict[tuple, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((r.tier, r.mode, r.recipe, r.driver, r.model), []).append(r)
    rows = []
    for (tier, mode, recipe, driver, model), recs in sorted(groups.items()):
        b0, s0 = batch_size_for(tier), seq_len_for(tier)
        seq_pts = [(r.seq_len, r.fits_tier, r.fit_outcome) for r in recs if r.batch_size == b0]
        batch_pts = [(r.batch_size, r.fits_tier, r.fit_outcome) for r in recs if r.seq_len == s0]
        ms, sf, sst = _bracket(seq_pts)
        mb, bf, bst = _bracket(batch_pts)
        host = next(((r.env or {}).get("gpu_name") for r in recs if (r.env or {}).get("gpu_name")), None)
        row = MaxFitRow(tier, mode, host, recipe, driver, model, b0, ms, sf, sst, s0, mb, bf, bst, len(recs))
        row.max_seq_borderline = any(is_borderline(r) for r in recs if (r.seq_len, r.batch_size) == (ms, b0))
        row.max_batch_borderline = any(is_borderline(r) for r in recs if (r.seq_len, r.batch_size) == (s0, mb))
        if predict and mode != "cpu":  # the estimator predicts GPU memory; cpu smoke runs have none
            row.predicted_max_seq_len, row.predicted_max_batch_size = _predict_for(recs[0], host, b0, s0)
        rows.append(row)
    return rows


def _predict_for(template: ResultRecord, host_gpu_name: Optional[str], batch_size: int, seq_len: int):
    """The estimator's max seq / batch for a record's settings on its tier (None, None if unknown)."""
    try:
        tier = get_tier(template.tier)
        ref = resolve_model(template.model)
        max_seq = ref.max_positions or PREDICT_MAX_SEQ
        cc = compute_capability_of(host_gpu_name) or tier.compute_capability
        return estimator_seeds(ref.config, template.recipe, tier.memory_cap_bytes, batch_size, seq_len,
                               max_seq, PREDICT_MAX_BATCH, driver=template.driver, lora_r=template.lora_r,
                               target_modules=template.target_modules, optimizer=template.optimizer,
                               gradient_checkpointing=template.gradient_checkpointing, compute_capability=cc,
                               dtype=template.dtype)
    except (EstimateError, ModelError, TierError):
        return None, None

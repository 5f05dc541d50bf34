"""What the measured cells say to do: which cells fit, which a recommendation may rest on, the best
configuration, what fits per backend. Structured values (entries, pairs, figures); the report's
summary bullets and decision matrix (bench.render.report) put them in words.

A cell *fits* when it ran ok within the tier's memory (`ResultRecord.fits_tier`). A *candidate*
fits and is not part of a pair whose sides both ran but did not match (the one comparable rule,
bench.schema.pairs); a cell whose partner did not finish has no parity verdict and still counts.
Selections are frame operations over `bench.analysis.frame.records_frame`; among equal keys the
first cell in report order wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bench.analysis.frame import items_at, pairs_frame, records_frame
from bench.analysis.results import Entry, Group
from bench.config.tiers import TIERS
from bench.schema.pairs import Pair
from bench.schema.record import ResultRecord

BACKENDS = ("hf", "unsloth")
#: A cell's size, as sort columns: tokens per micro-batch, then seq_len, then batch size.
SIZE_COLUMNS = ["size", "seq_len", "batch_size"]
#: A fitting cell whose device peak is at least this share of the tier's memory has little headroom.
HEADROOM_FRACTION = 0.9


def cost_per_million_tokens(price_per_hour_usd: float, tokens_per_s: Optional[float]) -> Optional[float]:
    """USD per 1M trained tokens at `tokens_per_s`: price_per_hour / (tokens_per_s * 3600) * 1e6."""
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return price_per_hour_usd / (tokens_per_s * 3600.0) * 1e6


def fits(r: ResultRecord) -> bool:
    """The cell ran and stayed within the tier's memory (`ResultRecord.fits_tier`)."""
    return r.fits_tier


def _first(frame: pd.DataFrame, by: list[str], ascending: bool) -> Optional[int]:
    """Index of the first row after a stable sort on `by` (ties keep report order), or None."""
    if frame.empty:
        return None
    return frame.sort_values(by, ascending=ascending, kind="stable").index[0]


def _tokens(frame: pd.DataFrame) -> pd.Series:
    """tokens/s with a missing figure as 0 (a cell without one ranks last)."""
    return pd.to_numeric(frame["tokens_per_s"]).fillna(0)


def _model_cells(group: Group, model: str) -> pd.DataFrame:
    cells = records_frame(group.entries)
    return cells[cells["model"] == model]


def unmatched_pair_keys(group: Group) -> set[str]:
    """Pairs where both sides ran but the parity check failed (or never ran): not comparable."""
    pairs = pairs_frame(group.pairs)
    return set(pairs.loc[pairs["not_matched"].astype(bool), "pair_key"])


def fitting_cells(group: Group, model: str) -> pd.DataFrame:
    """Cells of `model` that ran within the tier's memory (the fit verdict; parity aside), as
    records_frame(group.entries) rows."""
    cells = _model_cells(group, model)
    return cells[cells["fits"]]


def candidate_cells(group: Group, model: str) -> pd.DataFrame:
    """Cells a recommendation may rest on: fitting, and not part of a pair that is not matched."""
    cells = fitting_cells(group, model)
    return cells[~cells["pair_key"].isin(unmatched_pair_keys(group))]


def pair_of(group: Group, e: Entry) -> Optional[Pair[Entry]]:
    return next((p for p in group.pairs if p.pair_key == e.record.pair_key), None)


def partner(group: Group, e: Entry) -> Optional[Entry]:
    """The other backend's cell of `e`'s configuration, if measured."""
    p = pair_of(group, e)
    if p is None:
        return None
    return p.unsloth if e.record.backend == "hf" else p.hf


def memory_saving(p: Pair) -> Optional[float]:
    """The memory reduction a comparable pair is cited with: on device memory, else allocated."""
    red = p.memory_reduction("peak_device_bytes")
    return p.memory_reduction("peak_allocated_bytes") if red is None else red


def headroom_left(r: ResultRecord, tier_name: str, fraction: float = HEADROOM_FRACTION) -> Optional[int]:
    """Bytes of the tier's memory left above the device peak, when the peak is at least `fraction`
    of it (little headroom); None otherwise or when unknown."""
    tier = TIERS.get(tier_name)
    if tier is None or r.peak_device_bytes is None or r.peak_device_bytes < fraction * tier.usable_vram_bytes:
        return None
    return tier.usable_vram_bytes - r.peak_device_bytes


# -- what fits per backend (the summary) ---------------------------------------------------------
@dataclass
class BackendFit:
    """One backend's cells of one model in a group, read for fit."""

    backend: str
    cells: list[Entry]  # measured cells, report order
    largest: Optional[Entry]  # the largest size that fits
    largest_measured: bool  # `largest` is also the largest size measured (larger ones not tried)
    first_failure: Optional[Entry]  # the smallest that did not fit (over memory, OOM, or skipped)
    errors: list[Entry]  # cells that failed with an error or timed out


def backend_fit(group: Group, model: str, backend: str) -> BackendFit:
    cells = _model_cells(group, model)
    mine = cells[cells["backend"] == backend]
    fit = mine[mine["fits"]]
    top = _first(fit, SIZE_COLUMNS, ascending=False)
    largest_measured = top is not None and \
        tuple(mine.loc[top, SIZE_COLUMNS]) == max(mine[SIZE_COLUMNS].itertuples(index=False, name=None))
    failed = mine[~mine["fits"] & mine["status"].isin(("ok", "oom", "skipped"))]
    first_failure = _first(failed, SIZE_COLUMNS, ascending=True)
    entries = group.entries
    return BackendFit(backend, items_at(entries, mine), None if top is None else entries[top], largest_measured,
                      None if first_failure is None else entries[first_failure],
                      items_at(entries, mine[mine["status"].isin(("error", "timeout"))]))


@dataclass
class PairFigures:
    """A model's pairs in a group: the comparable ones' speed-ups and memory savings, and the
    pairs that are not matched (named, never compared)."""

    comparable: list[Pair[Entry]]
    speedups: list[float]  # Unsloth tokens/s over HF's
    savings: list[float]  # fractions of HF's peak memory saved, on `saving_field`
    saving_field: str  # "peak_device_bytes", or "peak_allocated_bytes" where no device figure exists
    unmatched: list[Pair[Entry]]
    any_both_sides: bool  # some pair of the model has both sides measured


def pair_figures(group: Group, model: str) -> PairFigures:
    pairs = pairs_frame(group.pairs)
    mine = pairs[pairs["model"] == model]
    comparable = mine[mine["comparable"].astype(bool)]
    field_name, savings = "peak_device_bytes", comparable["memory_reduction_device"].dropna()
    if savings.empty:
        field_name, savings = "peak_allocated_bytes", comparable["memory_reduction_allocated"].dropna()
    return PairFigures(items_at(group.pairs, comparable), comparable["speedup"].dropna().tolist(), savings.tolist(),
                       field_name, items_at(group.pairs, mine[mine["not_matched"].astype(bool)]),
                       bool((mine["hf_status"].notna() & mine["unsloth_status"].notna()).any()))


def best_configuration(group: Group, model: str) -> Optional[Entry]:
    """The candidate with the highest tokens/s (Unsloth on a tie); None without a candidate."""
    cands = candidate_cells(group, model).assign(tokens=_tokens, unsloth=lambda f: f["backend"] == "unsloth")
    best = _first(cands, ["tokens", "unsloth"], ascending=False)
    return None if best is None else group.entries[best]


# -- the decision matrix ---------------------------------------------------------------------------
@dataclass
class Shortfall:
    """No candidate among `cells`: either all fitting ones are in unmatched pairs, or none fits."""

    cells: list[Entry]  # measured
    fitting: list[Entry]  # fitting, all in unmatched pairs (empty: nothing fits)
    smallest: Entry  # the smallest size tried (HF first on a tie)
    sizes_tried: int  # distinct (seq_len, batch) among `cells`


def _shortfall(group: Group, cells: pd.DataFrame, fit: pd.DataFrame) -> Shortfall:
    smallest = _first(cells, SIZE_COLUMNS + ["backend"], ascending=True)
    return Shortfall(items_at(group.entries, cells), items_at(group.entries, fit), group.entries[smallest],
                     len(cells[["seq_len", "batch_size"]].drop_duplicates()))


@dataclass
class LargestFit:
    """The largest measured size that fits, over both backends."""

    top: Entry  # the largest candidate (by size, then tokens/s, then Unsloth)
    per_backend: dict[str, Entry]  # each backend's largest candidate, by backend name
    unfit_backends: list[str]  # backends measured but with no candidate


@dataclass
class SeqLenChoice:
    """The best candidate at one seq_len: highest tokens/s (Unsloth on a tie), or why there is none."""

    seq_len: int
    best: Optional[Entry]
    shortfall: Optional[Shortfall] = None


@dataclass
class ModelDecision:
    """The decision matrix's reading of one model (one recipe view) in a group."""

    model: str
    largest: Optional[LargestFit]  # None: no candidate at any measured size (see `shortfall`)
    shortfall: Optional[Shortfall] = None
    per_seq_len: list[SeqLenChoice] = field(default_factory=list)


def model_decision(group: Group, model: str) -> ModelDecision:
    cells = _model_cells(group, model)
    fit = cells[cells["fits"]]
    cands = candidate_cells(group, model).assign(tokens=_tokens, unsloth=lambda f: f["backend"] == "unsloth")
    if cands.empty:
        return ModelDecision(model, None, _shortfall(group, cells, fit))
    entries = group.entries
    ranked = cands.sort_values(SIZE_COLUMNS + ["tokens"], ascending=False, kind="stable")
    heads = ranked.groupby("backend").head(1)  # each backend's largest candidate
    top = _first(heads, SIZE_COLUMNS + ["tokens", "unsloth"], ascending=False)
    per_backend = {b: entries[i] for i, b in sorted(heads["backend"].items(), key=lambda kv: kv[1])}
    unfit = [b for b in BACKENDS if b not in per_backend and (cells["backend"] == b).any()]
    largest = LargestFit(entries[top], per_backend, unfit)
    choices = []
    for seq in sorted(set(cells["seq_len"])):
        at = cands[(cands["seq_len"] == seq) & (cands["tokens"] > 0)]
        best = _first(at, ["tokens", "unsloth"], ascending=False)
        if best is None:
            choices.append(SeqLenChoice(int(seq), None, _shortfall(group, cells[cells["seq_len"] == seq],
                                                                   fit[fit["seq_len"] == seq])))
        else:
            choices.append(SeqLenChoice(int(seq), entries[best]))
    return ModelDecision(model, largest, None, choices)

"""What the measured cells say to do: which cells fit, which a recommendation may rest on, the best
measured recipe per size, what fits per recipe. Structured values (entries, pairs, figures); the
report's summary bullets and decision matrix (bench.render.report) put them in words.

A cell *fits* when it ran ok within the tier's memory and is not *borderline* (an emulated cell whose
peak is within BORDERLINE_MARGIN of the cap: bench.analysis.borderline). A borderline cell is tried, but
neither fits nor is known not to fit: no recommendation rests on it and no "does not fit" either. A *candidate*
fits and is not a side of a pair whose sides both ran but did not match (the one comparable rule,
bench.schema.pairs); a cell whose partner did not finish has no parity verdict and still counts.

Untried is untried. At a size (seq_len x batch) a recipe of the view is *tried* when a cell of it
was measured there; *known not to fit* when a cell of it at a size no larger in both seq_len and
batch did not fit (not borderline) (out of memory, skipped, or over the tier's memory: what `bench run
--skip-dominated` concludes itself); *untried* otherwise. A recipe is preferred at a size only when
no recipe of the view is untried there, and the best measured configuration is read only from such
sizes. Among equal keys the first cell in report order (the reference first) wins.

Cost per token is only for native runs (`measured_cost_per_million_tokens`): an emulated cell's tokens/s
are the host GPU's, so at the tier's price they would be neither the tier's cost nor the host's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bench.analysis.borderline import fits_clearly, is_borderline, memory_cap_bytes
from bench.analysis.frame import items_at, pairs_frame, records_frame
from bench.analysis.results import Entry, Group, ordered_recipes
from bench.analysis.speed import median_tokens_per_s
from bench.config.tiers import TIERS
from bench.schema.pairs import Pair, record_of
from bench.schema.record import ResultRecord

#: A cell's size, as sort columns: tokens per micro-batch, then seq_len, then batch size.
SIZE_COLUMNS = ["size", "seq_len", "batch_size"]
#: A fitting cell whose device peak is at least this share of the tier's memory has little headroom.
HEADROOM_FRACTION = 0.9


def cost_per_million_tokens(price_per_hour_usd: float, tokens_per_s: Optional[float]) -> Optional[float]:
    """USD per 1M trained tokens at `tokens_per_s`: price_per_hour / (tokens_per_s * 3600) * 1e6."""
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return price_per_hour_usd / (tokens_per_s * 3600.0) * 1e6


def measured_cost_per_million_tokens(side) -> Optional[float]:
    """USD per 1M trained tokens of a native cell (a record, or an entry with its repeats) at its tier's
    indicative price and its speed (median_tokens_per_s, the figure every table shows); None for an emulated
    or CPU cell (its tokens/s are not the tier's), an unknown tier, or no tokens/s."""
    r = record_of(side)
    tier = TIERS.get(r.tier)
    if r.mode != "native" or tier is None:
        return None
    return cost_per_million_tokens(tier.price_per_hour_usd, median_tokens_per_s(side))


def fits(r: ResultRecord) -> bool:
    """The cell ran within the tier's memory and is not borderline (bench.analysis.borderline.fits_clearly)."""
    return fits_clearly(r)


def borderline(r: ResultRecord) -> bool:
    """An emulated cell that ran within its cap but with a peak within the margin of it (bench.analysis.borderline)."""
    return is_borderline(r)


def _first(frame: pd.DataFrame, by: list[str], ascending) -> Optional[int]:
    """Index of the first row after a stable sort on `by` (ties keep report order), or None."""
    if frame.empty:
        return None
    return frame.sort_values(by, ascending=ascending, kind="stable").index[0]


def _tokens(frame: pd.DataFrame) -> pd.Series:
    """A cell's speed (median per-step tokens/s over its repeats, bench.analysis.speed) with a missing figure
    as 0 (a cell without one ranks last)."""
    return pd.to_numeric(frame["median_tokens_per_s"]).fillna(0)


def _model_cells(group: Group, model: str) -> pd.DataFrame:
    cells = records_frame(group.entries)
    return cells[cells["model"] == model]


def unmatched_cell_ids(group: Group) -> set[str]:
    """Both sides of every pair whose sides ran but whose parity check failed (or never ran)."""
    return {s.record.cell_id for p in group.pairs if p.not_matched for s in p.sides}


def fitting_cells(group: Group, model: str) -> pd.DataFrame:
    """Cells of `model` that fit (within the tier's memory, not borderline; parity aside), as
    records_frame(group.entries) rows."""
    cells = _model_cells(group, model)
    return cells[cells["fits"]]


def candidate_cells(group: Group, model: str) -> pd.DataFrame:
    """Cells a recommendation may rest on: fitting, and not a side of a pair that is not matched."""
    cells = fitting_cells(group, model)
    return cells[~cells["cell_id"].isin(unmatched_cell_ids(group))]


def memory_saving(p: Pair) -> Optional[float]:
    """The memory reduction a comparable pair is cited with: on device memory, else allocated."""
    red = p.memory_reduction("peak_device_bytes")
    return p.memory_reduction("peak_allocated_bytes") if red is None else red


def headroom_left(r: ResultRecord, fraction: float = HEADROOM_FRACTION) -> Optional[int]:
    """Bytes of the cell's memory cap (bench.analysis.borderline.memory_cap_bytes) left above its device
    peak, when the peak is at least `fraction` of the cap (little headroom); None otherwise or when unknown."""
    cap = memory_cap_bytes(r)
    if cap is None or r.peak_device_bytes is None or r.peak_device_bytes < fraction * cap:
        return None
    return cap - r.peak_device_bytes


# -- what fits per recipe (the summary) ---------------------------------------------------------
@dataclass
class RecipeFit:
    """One recipe's cells of one model in a group, read for fit."""

    recipe: str
    cells: list[Entry]  # measured cells, report order
    largest: Optional[Entry]  # the largest size that fits
    largest_measured: bool  # `largest` is also the largest size measured (larger ones not tried)
    first_failure: Optional[Entry]  # the smallest that did not fit (over memory, OOM, or skipped)
    errors: list[Entry]  # cells that failed with an error, a NaN loss, or timed out
    borderline: list[Entry] = field(default_factory=list)  # ran within the cap, peak within the margin of it


def recipe_fit(group: Group, model: str, recipe: str) -> RecipeFit:
    cells = _model_cells(group, model)
    mine = cells[cells["recipe"] == recipe]
    fit = mine[mine["fits"]]
    top = _first(fit, SIZE_COLUMNS, ascending=False)
    largest_measured = top is not None and \
        tuple(mine.loc[top, SIZE_COLUMNS]) == max(mine[SIZE_COLUMNS].itertuples(index=False, name=None))
    failed = mine[~mine["fits"] & ~mine["borderline"] & mine["status"].isin(("ok", "oom", "skipped"))]
    first_failure = _first(failed, SIZE_COLUMNS, ascending=True)
    entries = group.entries
    return RecipeFit(recipe, items_at(entries, mine), None if top is None else entries[top], largest_measured,
                     None if first_failure is None else entries[first_failure],
                     items_at(entries, mine[mine["status"].isin(("error", "timeout", "nan_loss"))]),
                     items_at(entries, mine[mine["borderline"]].sort_values(SIZE_COLUMNS, kind="stable")))


def model_recipes(group: Group, model: str) -> list[str]:
    """The recipes measured for `model` in the group, the group's reference first."""
    return ordered_recipes((e.record.recipe for e in group.entries if e.record.model == model),
                           group.group_reference)


@dataclass
class PairFigures:
    """One candidate recipe's pairs against one reference, for a model in a group: the comparable ones (their
    speed-ups and memory savings with intervals: bench.analysis.speed), and the pairs that are not matched
    (named, never compared)."""

    reference: str
    candidate: str
    comparable: list[Pair[Entry]]
    saving_field: str  # "peak_device_bytes", or "peak_allocated_bytes" where no device figure exists
    unmatched: list[Pair[Entry]]
    any_both_sides: bool  # some pair has both sides measured


def pair_figures(group: Group, model: str) -> list[PairFigures]:
    """Per (reference, candidate) recipe of the model's pairs in the group, the candidates in recipe order."""
    pairs = pairs_frame(group.pairs)
    mine = pairs[(pairs["model"] == model) & pairs["reference_recipe"].notna() & pairs["candidate_recipe"].notna()]
    out = []
    combos = {(r, c) for r, c in zip(mine["reference_recipe"], mine["candidate_recipe"])}
    order = model_recipes(group, model)
    for ref, cand in sorted(combos, key=lambda rc: (order.index(rc[0]), order.index(rc[1]))):
        these = mine[(mine["reference_recipe"] == ref) & (mine["candidate_recipe"] == cand)]
        comparable = these[these["comparable"].astype(bool)]
        has_device = comparable["memory_reduction_device"].notna().any()
        field_name = "peak_device_bytes" if has_device else "peak_allocated_bytes"
        out.append(PairFigures(ref, cand, items_at(group.pairs, comparable), field_name,
                               items_at(group.pairs, these[these["not_matched"].astype(bool)]),
                               bool((these["reference_status"].notna() & these["candidate_status"].notna()).any())))
    return out


# -- the best measured recipe per size -----------------------------------------------------------
@dataclass
class SizeChoice:
    """What was measured at one size (seq_len x batch) of a model's view, and the best recipe there."""

    seq_len: int
    batch_size: int
    cells: list[Entry]  # measured at this size, report order
    known_unfit: dict[str, Entry]  # recipe -> its smaller cell that did not fit (not run at this size)
    untried: list[str]  # recipes of the view neither measured here nor known not to fit
    fitting: list[Entry]  # cells that fit (parity aside)
    candidates: list[Entry]  # fitting and not in a pair that is not matched; highest tokens/s first
    borderline: list[Entry] = field(default_factory=list)  # cells here within the margin of the cap

    @property
    def best(self) -> Optional[Entry]:
        """The best measured recipe here: the fastest candidate, only when no recipe is untried."""
        return self.candidates[0] if self.candidates and not self.untried else None

    @property
    def tried(self) -> list[str]:
        return list(dict.fromkeys(e.record.recipe for e in self.cells))


def _known_unfit(cells: pd.DataFrame, recipe: str, seq_len: int, batch: int) -> Optional[int]:
    """Index of the smallest cell of `recipe` at a size no larger than (seq_len, batch) that did not fit."""
    failed = cells[(cells["recipe"] == recipe) & ~cells["fits"] & ~cells["borderline"]
                   & cells["status"].isin(("ok", "oom", "skipped"))
                   & (cells["seq_len"] <= seq_len) & (cells["batch_size"] <= batch)]
    return _first(failed, SIZE_COLUMNS, ascending=True)


def size_choices(group: Group, model: str) -> list[SizeChoice]:
    """One SizeChoice per measured size of `model` in the group (a settings view), by seq_len then batch."""
    cells = _model_cells(group, model).assign(tokens=_tokens)
    cands = candidate_cells(group, model).assign(tokens=_tokens)
    recipes = model_recipes(group, model)
    entries = group.entries
    out = []
    sizes = cells[["seq_len", "batch_size"]].drop_duplicates().sort_values(["seq_len", "batch_size"], kind="stable")
    for seq, batch in sizes.itertuples(index=False, name=None):
        here = cells[(cells["seq_len"] == seq) & (cells["batch_size"] == batch)]
        tried = set(here["recipe"])
        unfit = {r: entries[i] for r in recipes if r not in tried
                 and (i := _known_unfit(cells, r, seq, batch)) is not None}
        at = cands[(cands["seq_len"] == seq) & (cands["batch_size"] == batch)]
        ranked = at.sort_values("tokens", ascending=False, kind="stable")
        out.append(SizeChoice(int(seq), int(batch), items_at(entries, here), unfit,
                              [r for r in recipes if r not in tried and r not in unfit],
                              items_at(entries, here[here["fits"]]), items_at(entries, ranked),
                              items_at(entries, here[here["borderline"]])))
    return out


def best_configuration(group: Group, model: str) -> Optional[Entry]:
    """The fastest candidate over the sizes where no recipe is untried; None without one."""
    bests = [c.best for c in size_choices(group, model) if c.best is not None]
    if not bests:
        return None
    return max(bests, key=lambda e: median_tokens_per_s(e) or 0.0)  # max keeps the first of equals


# -- the decision matrix ---------------------------------------------------------------------------
@dataclass
class Shortfall:
    """No candidate among `cells`: either all fitting ones are in unmatched pairs, or none fits."""

    cells: list[Entry]  # measured
    fitting: list[Entry]  # fitting, all in unmatched pairs (empty: nothing fits)
    smallest: Entry  # the smallest size tried (the reference first on a tie)
    sizes_tried: int  # distinct (seq_len, batch) among `cells`
    borderline: list[Entry] = field(default_factory=list)  # cells within the margin of the cap (none fits)


@dataclass
class ModelDecision:
    """The decision matrix's reading of one model (one settings view) in a group."""

    model: str
    largest: Optional[SizeChoice]  # the largest size where some candidate fits; None: none anywhere
    per_recipe: dict[str, Entry] = field(default_factory=dict)  # each recipe's largest candidate
    unfit_recipes: list[str] = field(default_factory=list)  # measured, but never a candidate
    sizes: list[SizeChoice] = field(default_factory=list)
    shortfall: Optional[Shortfall] = None


def shortfall_of(group: Group, cells: list[Entry]) -> Shortfall:
    frame = records_frame(cells)
    smallest = _first(frame, SIZE_COLUMNS, ascending=True)
    return Shortfall(cells, [e for e in cells if fits(e.record)], cells[smallest],
                     len(frame[["seq_len", "batch_size"]].drop_duplicates()), [e for e in cells if borderline(e.record)])


def _size_key(c: SizeChoice) -> tuple[int, int, int]:
    """Tokens per micro-batch, then seq_len, then batch (SIZE_COLUMNS)."""
    return (c.seq_len * c.batch_size, c.seq_len, c.batch_size)


def model_decision(group: Group, model: str) -> ModelDecision:
    sizes = size_choices(group, model)
    cells = [e for c in sizes for e in c.cells]
    with_candidates = sorted((c for c in sizes if c.candidates), key=_size_key)
    if not with_candidates:
        return ModelDecision(model, None, sizes=sizes, shortfall=shortfall_of(group, cells))
    per_recipe: dict[str, Entry] = {}
    for choice in with_candidates:  # smallest first: a larger size replaces a smaller one
        for e in choice.candidates:
            per_recipe[e.record.recipe] = e
    order = model_recipes(group, model)
    unfit = [r for r in order if r not in per_recipe]
    per_recipe = {r: per_recipe[r] for r in order if r in per_recipe}
    return ModelDecision(model, with_candidates[-1], per_recipe, unfit, sizes)

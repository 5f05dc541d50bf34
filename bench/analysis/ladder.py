"""Where the difference comes from: the ladder hf-kbit -> hf-trl -> hf-liger -> unsloth at one cell.

At each configuration (pair_key) of a group where at least two ladder recipes were measured, the
rungs are those recipes in LADDER order (only the ones measured) and each step goes from one rung to
the next: its change in peak memory (bytes, and as a fraction of the step's first rung) and in
tokens/s (a fraction). A step's figures are read only when the step is comparable: both cells ok and
parity-matched with each other (bench.analysis.against.pair_between: the verdict between exactly
these two cells). Memory is the device peak (NVML) where every ok rung of the group has one, else
the allocated peak, else (CPU smoke cells) the process's peak RSS.

Beside each rung, the estimator's per-component breakdown of the predicted peak
(bytes per component: fp32 upcasts, logits and loss, checkpointed activations and offload, kernels)
comes from `bench.analysis.estimate.estimate_recipe` (`estimated_breakdown`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bench.analysis import estimate as estimator
from bench.analysis.against import Side, pair_between
from bench.analysis.results import Entry, Group
from bench.analysis.speed import pair_speedup
from bench.config.models import SHIPPED
from bench.schema.pairs import Pair
from bench.schema.record import ResultRecord

LADDER = ("hf-kbit", "hf-trl", "hf-liger", "unsloth")
MEMORY_FIELDS = ("peak_device_bytes", "peak_allocated_bytes", "peak_rss_bytes")


def estimated_breakdown(r: ResultRecord) -> Optional[dict[str, int]]:
    """The estimator's predicted peak for the record's recipe, driver, model and settings, by component
    (bench.analysis.estimate.breakdown_by_component: bytes); None where the model is not a shipped
    architecture, the cell ran on the CPU, or the estimator cannot model it."""
    shipped = SHIPPED.get(r.model)
    if shipped is None or r.mode == "cpu":
        return None
    try:
        est = estimator.estimate_recipe(
            shipped.config_dict(), r.recipe, r.seq_len, r.batch_size, driver=r.driver, model_name=r.model,
            lora_r=r.lora_r, target_modules=r.target_modules, optimizer=r.optimizer,
            gradient_checkpointing=r.gradient_checkpointing, dtype=r.dtype,
            compute_capability=estimator.compute_capability_of((r.env or {}).get("gpu_name")))
    except estimator.EstimateError:
        return None
    return estimator.breakdown_by_component(est)


@dataclass
class LadderStep:
    """One step of the ladder at one cell: from `pair.reference` to `pair.candidate`."""

    pair: Pair[Side]
    memory_field: str
    estimate_before: Optional[dict[str, int]] = None  # the estimator's breakdown by component of each rung
    estimate_after: Optional[dict[str, int]] = None

    @property
    def before(self) -> Side:
        return self.pair.reference  # type: ignore[return-value]

    @property
    def after(self) -> Side:
        return self.pair.candidate  # type: ignore[return-value]

    def _figures(self, name: str) -> Optional[tuple[float, float]]:
        if not self.pair.comparable:
            return None
        a, b = getattr(self.before.record, name), getattr(self.after.record, name)
        return None if a is None or b is None or a <= 0 else (a, b)

    @property
    def memory_change_bytes(self) -> Optional[int]:
        """After minus before, bytes (negative: the step saves memory); comparable steps only."""
        f = self._figures(self.memory_field)
        return None if f is None else int(f[1] - f[0])

    @property
    def memory_change(self) -> Optional[float]:
        """The memory change as a fraction of the step's first rung (-0.25: a quarter less)."""
        f = self._figures(self.memory_field)
        return None if f is None else f[1] / f[0] - 1.0

    @property
    def speed_change(self) -> Optional[float]:
        """The tokens/s change as a fraction of the step's first rung (+0.3: 30 % faster): the pair's speed-up
        (bench.analysis.speed: median per-step tokens/s over every repeat) less one; comparable steps only."""
        ratio = pair_speedup(self.pair)
        return None if ratio is None or ratio.estimate is None else ratio.estimate - 1.0

    @property
    def estimate_change(self) -> Optional[dict[str, int]]:
        """The estimator's predicted change per component (after minus before, bytes); None without both."""
        if self.estimate_before is None or self.estimate_after is None:
            return None
        names = list(dict.fromkeys([*self.estimate_before, *self.estimate_after]))
        return {n: self.estimate_after.get(n, 0) - self.estimate_before.get(n, 0) for n in names}


@dataclass
class LadderCell:
    """The ladder recipes measured at one configuration, and the steps between them."""

    pair_key: str
    rungs: list[Entry]  # LADDER order, only the recipes measured here
    steps: list[LadderStep]

    @property
    def record(self) -> ResultRecord:
        return self.rungs[0].record


@dataclass
class Ladder:
    group: Group
    memory_field: str
    cells: list[LadderCell] = field(default_factory=list)

    @property
    def has_estimates(self) -> bool:
        return any(s.estimate_change is not None for c in self.cells for s in c.steps)


def memory_field_of(entries: list[Any]) -> str:
    """The first of MEMORY_FIELDS every ok entry has a figure for (the last one when none qualifies)."""
    ok = [e.record for e in entries if e.record.ok]
    return next((f for f in MEMORY_FIELDS if ok and all(getattr(r, f) is not None for r in ok)), MEMORY_FIELDS[-1])


def group_ladder(group: Group) -> Optional[Ladder]:
    """The group's ladder: every configuration with at least two ladder recipes measured; None without one."""
    by_key: dict[str, dict[str, Entry]] = {}
    for e in group.entries:
        if e.record.recipe in LADDER:
            by_key.setdefault(e.record.pair_key, {})[e.record.recipe] = e
    rung_lists = [(key, [cells[r] for r in LADDER if r in cells]) for key, cells in by_key.items() if len(cells) >= 2]
    if not rung_lists:
        return None
    memory = memory_field_of([e for _, rungs in rung_lists for e in rungs])
    cache: dict[int, Optional[dict[str, int]]] = {}

    def predicted(e: Entry) -> Optional[dict[str, int]]:
        if id(e) not in cache:
            cache[id(e)] = estimated_breakdown(e.record)
        return cache[id(e)]

    cells = []
    for key, rungs in rung_lists:
        steps = [LadderStep(pair_between(key, a, b), memory, predicted(a), predicted(b))
                 for a, b in zip(rungs, rungs[1:])]
        cells.append(LadderCell(key, rungs, steps))
    return Ladder(group, memory, cells)

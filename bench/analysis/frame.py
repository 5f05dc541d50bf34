"""Records as pandas DataFrames: the table the analysis layer selects, groups and pairs on.

- `records_frame`: one row per record (or per entry carrying one as `.record`), indexed by the
  item's position, so a selection maps back to the items with `items_at`.
- `pairs_frame`: one row per pair (the one `Pair` of bench.schema.pairs): the reference and candidate
  recipes, their figures side by side (`reference_*`, `candidate_*` columns) and, for comparable pairs
  only, speed-up and memory reduction, read through the one comparable rule.

Memory columns are bytes, time columns seconds, throughput tokens per second; a missing figure
is NaN (None in object columns).
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from bench.analysis.borderline import fits_clearly, is_borderline
from bench.analysis.speed import median_tokens_per_s
from bench.schema.key import IDENTITY_FIELDS, CellKey
from bench.schema.pairs import Pair, record_of
from bench.schema.store import hosts_of

#: Per-record figures copied into the frame (bytes, seconds, tokens/s, MFU and HFU 0..1, joules per 1,000 tokens).
METRIC_FIELDS = ("peak_allocated_bytes", "peak_device_bytes", "peak_rss_bytes", "tokens_per_s", "tokens_per_s_padded",
                 "first_step_s", "mfu", "hfu", "joules_per_1k_tokens")
RECORD_COLUMNS = IDENTITY_FIELDS + ("cell_id", "pair_key", "run_id", "status", "ok", "fits", "borderline",
                                    "over_tier_memory", "matched", "total_params", "trainable_params") + METRIC_FIELDS \
    + ("median_tokens_per_s", "size", "host", "ref")
#: The columns of each side in `pairs_frame` (prefixed reference_ / candidate_).
SIDE_COLUMNS = ("recipe", "ref", "status") + METRIC_FIELDS
SIDES = ("reference", "candidate")
PAIR_COLUMNS = ("tier", "mode", "host_gpu", "model", "seq_len", "batch_size", "pair_key") \
    + tuple(f"{side}_{c}" for side in SIDES for c in SIDE_COLUMNS) \
    + ("both_ok", "matched", "comparable", "not_matched", "speedup", "memory_reduction_device",
       "memory_reduction_allocated")


def records_frame(items: Sequence[Any]) -> pd.DataFrame:
    """One row per item (a ResultRecord, or an entry with `.record` and optionally `.host`, `.ref`).

    Columns: the identity fields (target_modules as a tuple), cell_id, pair_key, run_id, status,
    ok, fits (ok within the tier's memory and not borderline: bench.analysis.borderline.fits_clearly),
    borderline (bench.analysis.borderline.is_borderline), over_tier_memory, matched
    (the parity verdict), parameter counts, METRIC_FIELDS, median_tokens_per_s (a cell's speed over every
    repeat, bench.analysis.speed), size (seq_len x batch_size, tokens per
    micro-batch), host (the entry's host GPU, else bench.schema.store.hosts_of) and ref.
    """
    records = [record_of(it) for it in items]
    hosts = [getattr(it, "host", None) for it in items]
    if any(h is None for h in hosts):
        derived = hosts_of(records)
        hosts = [h if h is not None else d for h, d in zip(hosts, derived)]
    rows = []
    for it, r, host in zip(items, records, hosts):
        row = dict(zip(IDENTITY_FIELDS, CellKey.of(r).values(IDENTITY_FIELDS)))
        row.update(cell_id=r.cell_id, pair_key=r.pair_key, run_id=r.run_id, status=r.status, ok=r.ok,
                   fits=fits_clearly(r), borderline=is_borderline(r), over_tier_memory=r.over_tier_memory, matched=r.matched,
                   total_params=r.total_params, trainable_params=r.trainable_params,
                   median_tokens_per_s=median_tokens_per_s(it), size=r.seq_len * r.batch_size, host=host,
                   ref=getattr(it, "ref", None))
        row.update({f: getattr(r, f) for f in METRIC_FIELDS})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS), index=pd.RangeIndex(len(rows)))


def items_at(items: Sequence[Any], frame: pd.DataFrame) -> list:
    """The items behind the rows of `frame` (a selection of `records_frame(items)`), in row order."""
    return [items[i] for i in frame.index]


def pairs_frame(pairs: Sequence[Pair]) -> pd.DataFrame:
    """One row per pair: where it was measured, its size, each side's recipe, ref, status and figures
    (reference_* / candidate_*, None or NaN for a side not measured), the parity verdict and the
    comparable rule's flags, and speed-up (candidate tokens/s over the reference's) and memory
    reduction (1 - candidate peak / reference peak, on device and allocated memory) for comparable
    pairs only (None otherwise)."""
    sides = [s for p in pairs for s in p.sides]
    cells = records_frame(sides) if sides else records_frame([])
    where_of, rows, n = {}, [], 0
    for i, p in enumerate(pairs):
        row: dict = {}
        for side_name, side in zip(SIDES, (p.reference, p.candidate)):
            if side is None:
                row.update({f"{side_name}_{c}": None for c in SIDE_COLUMNS})
                continue
            cell = cells.iloc[n]
            n += 1
            where_of.setdefault(i, cell)
            row.update({f"{side_name}_{c}": cell[c] for c in SIDE_COLUMNS})
        where = where_of[i]
        row.update(tier=where["tier"], mode=where["mode"], host_gpu=where["host"], model=where["model"],
                   seq_len=where["seq_len"], batch_size=where["batch_size"], pair_key=p.pair_key,
                   both_ok=p.both_ok, matched=p.matched, comparable=p.comparable, not_matched=p.not_matched,
                   speedup=p.speedup, memory_reduction_device=p.memory_reduction("peak_device_bytes"),
                   memory_reduction_allocated=p.memory_reduction("peak_allocated_bytes"))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PAIR_COLUMNS), index=pd.RangeIndex(len(rows), name="pair"))
    for name in ("matched", "speedup", "memory_reduction_device", "memory_reduction_allocated"):
        frame[name] = pd.Series([row[name] for row in rows], dtype=object, index=frame.index)
    return frame

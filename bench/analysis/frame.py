"""Records as pandas DataFrames: the table the analysis layer selects, groups and pairs on.

- `records_frame`: one row per record (or per entry carrying one as `.record`), indexed by the
  item's position, so a selection maps back to the items with `items_at`.
- `pairs_frame`: one row per pair (the one `Pair` of bench.schema.pairs): the two sides' figures
  side by side (`hf_*`, `unsloth_*` columns) and, for comparable pairs only, speed-up and memory
  reduction, read through the one comparable rule.

Memory columns are bytes, time columns seconds, throughput tokens per second; a missing figure
is NaN (None in object columns).
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from bench.schema.key import IDENTITY_FIELDS, CellKey
from bench.schema.pairs import Pair, record_of
from bench.schema.store import hosts_of

#: Per-record figures copied into the frame (bytes, seconds, tokens/s, MFU 0..1).
METRIC_FIELDS = ("peak_allocated_bytes", "peak_device_bytes", "peak_rss_bytes", "tokens_per_s", "first_step_s", "mfu")
RECORD_COLUMNS = IDENTITY_FIELDS + ("cell_id", "pair_key", "run_id", "status", "ok", "fits", "over_tier_memory",
                                    "matched", "total_params", "trainable_params") + METRIC_FIELDS \
    + ("size", "host", "ref")
#: The columns of each side in `pairs_frame` (prefixed hf_ / unsloth_).
SIDE_COLUMNS = ("ref", "status") + METRIC_FIELDS
PAIR_COLUMNS = ("tier", "mode", "host_gpu", "model", "seq_len", "batch_size", "pair_key") \
    + tuple(f"{b}_{c}" for b in ("hf", "unsloth") for c in SIDE_COLUMNS) \
    + ("both_ok", "matched", "comparable", "not_matched", "speedup", "memory_reduction_device",
       "memory_reduction_allocated")


def records_frame(items: Sequence[Any]) -> pd.DataFrame:
    """One row per item (a ResultRecord, or an entry with `.record` and optionally `.host`, `.ref`).

    Columns: the identity fields (target_modules as a tuple), cell_id, pair_key, run_id, status,
    ok, fits (ok and within the tier's memory: ResultRecord.fits_tier), over_tier_memory, matched
    (the parity verdict), parameter counts, METRIC_FIELDS, size (seq_len x batch_size, tokens per
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
                   fits=r.fits_tier, over_tier_memory=r.over_tier_memory, matched=r.matched,
                   total_params=r.total_params, trainable_params=r.trainable_params,
                   size=r.seq_len * r.batch_size, host=host, ref=getattr(it, "ref", None))
        row.update({f: getattr(r, f) for f in METRIC_FIELDS})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS), index=pd.RangeIndex(len(rows)))


def items_at(items: Sequence[Any], frame: pd.DataFrame) -> list:
    """The items behind the rows of `frame` (a selection of `records_frame(items)`), in row order."""
    return [items[i] for i in frame.index]


def pairs_frame(pairs: Sequence[Pair]) -> pd.DataFrame:
    """One row per pair: where it was measured, its size, each side's ref, status and figures
    (hf_* / unsloth_*, NaN for a side not measured), the parity verdict and the comparable rule's
    flags, and speed-up (Unsloth tokens/s over HF) and memory reduction (1 - Unsloth peak / HF
    peak, on device and allocated memory) for comparable pairs only (None otherwise)."""
    sides = [s for p in pairs for s in p.sides]
    cells = records_frame(sides)
    cells["pair"] = [i for i, p in enumerate(pairs) for _ in p.sides]
    wide = cells.pivot(index="pair", columns="backend", values=list(SIDE_COLUMNS))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([SIDE_COLUMNS, ("hf", "unsloth")]))
    wide.columns = [f"{backend}_{column}" for column, backend in wide.columns]
    where = cells.groupby("pair").first()[["tier", "mode", "host", "model", "seq_len", "batch_size", "pair_key"]]
    verdicts = pd.DataFrame({
        "both_ok": [p.both_ok for p in pairs],
        "matched": pd.Series([p.matched for p in pairs], dtype=object),
        "comparable": [p.comparable for p in pairs],
        "not_matched": [p.not_matched for p in pairs],
        "speedup": pd.Series([p.speedup for p in pairs], dtype=object),
        "memory_reduction_device": pd.Series([p.memory_reduction("peak_device_bytes") for p in pairs], dtype=object),
        "memory_reduction_allocated": pd.Series([p.memory_reduction("peak_allocated_bytes") for p in pairs],
                                                dtype=object),
    }, index=pd.RangeIndex(len(pairs), name="pair"))
    frame = where.rename(columns={"host": "host_gpu"}).join(wide).join(verdicts, how="right")
    return frame.reindex(columns=list(PAIR_COLUMNS))

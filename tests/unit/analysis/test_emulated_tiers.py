"""Emulated tiers that do not flatter: fit read against torch's total on a real card, the borderline margin,
no cost per token from host-GPU speed, and no recommendation where a recipe was not tried.

Records are the real GPU records frozen in tests/golden (a T4 emulated on an H100, an H100 native run);
scenarios they did not produce are made by moving one real record's peak or size, so every other figure
is one the suite measured."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.analysis.borderline import BORDERLINE_MARGIN, fit_state, fits_clearly, is_borderline, memory_cap_bytes
from bench.analysis.decisions import (cost_per_million_tokens, measured_cost_per_million_tokens, model_decision,
                                      recipe_fit, size_choices)
from bench.analysis.results import load_results
from bench.analysis.speed import median_tokens_per_s
from bench.analysis.verdict import tier_verdict
from bench.config.tiers import TIERS
from bench.render.report.matrix import decision_rows
from bench.render.report.phrases import EMULATED_COST, cost_text, status_text
from bench.schema.store import append_record, read_records
from tests.helpers import REPO

T4 = REPO / "tests" / "golden" / "t4-emulated.jsonl"
H100 = REPO / "tests" / "golden" / "h100-native.jsonl"
MODEL = "llama-3.1-8b"


def _group(tmp_path: Path, records, name: str = "r.jsonl"):
    path = tmp_path / name
    for r in records:
        append_record(path, r)
    return load_results([path]).groups[0]


def _cell(records, recipe: str, seq_len: int, batch_size: int):
    return next(r for r in records if r.recipe == recipe and (r.seq_len, r.batch_size) == (seq_len, batch_size))


def _at(record, seq_len: int, batch_size: int):
    """A real record relabelled as measured at another size (its own cell)."""
    key = f"{record.pair_key}-s{seq_len}b{batch_size}"
    return dataclasses.replace(record, seq_len=seq_len, batch_size=batch_size, pair_key=key,
                               cell_id=f"{key}-{record.recipe}", parity=None, matched=None)


# -- the cap --------------------------------------------------------------------------------------
def test_cap_is_the_real_cards_torch_total_even_for_records_run_under_a_larger_one():
    """These T4 records ran capped at the driver total (before the table had torch's figure): they are
    read against the smaller torch total of a real T4; a native cell against its tier's torch total."""
    t4 = read_records(T4)[0]
    assert t4.memory_limit_bytes == TIERS["t4"].usable_vram_bytes > TIERS["t4"].memory_cap_bytes
    assert memory_cap_bytes(t4) == TIERS["t4"].memory_cap_bytes
    capped_lower = dataclasses.replace(t4, memory_limit_bytes=TIERS["t4"].memory_cap_bytes - 1)
    assert memory_cap_bytes(capped_lower) == TIERS["t4"].memory_cap_bytes - 1
    native = read_records(H100)[0]
    assert native.memory_limit_bytes is None and memory_cap_bytes(native) == TIERS["h100"].memory_cap_bytes


# -- borderline -----------------------------------------------------------------------------------
def test_borderline_starts_at_the_margin():
    fitting = _cell(read_records(T4), "unsloth", 1024, 1)
    cap = memory_cap_bytes(fitting)
    edge = int((1 - BORDERLINE_MARGIN) * cap) + 1
    at_margin = dataclasses.replace(fitting, peak_device_bytes=edge)
    below = dataclasses.replace(fitting, peak_device_bytes=edge - 2)
    assert is_borderline(at_margin) and not fits_clearly(at_margin) and fit_state(at_margin) == "borderline"
    assert not is_borderline(below) and fits_clearly(below) and fit_state(below) == "fits"
    assert "borderline" in status_text(at_margin) and status_text(below) == "ok"
    # above the real card's total but under the run's own (larger) cap: borderline, not fits
    above = dataclasses.replace(fitting, peak_device_bytes=cap + 1)
    assert not above.over_tier_memory and is_borderline(above)
    # without an NVML figure the allocator's reserved peak is read
    no_nvml = dataclasses.replace(fitting, peak_device_bytes=None, peak_reserved_bytes=edge)
    assert is_borderline(no_nvml)


def test_borderline_is_for_emulated_cells_that_ran_only():
    recs = read_records(T4)
    oom = _cell(recs, "hf-kbit", 2048, 2)
    assert oom.status == "oom" and not is_borderline(oom) and fit_state(oom) == "oom"
    over = dataclasses.replace(_cell(recs, "unsloth", 1024, 1), over_tier_memory=True)
    assert not is_borderline(over) and fit_state(over) == "over tier memory"
    native = read_records(H100)[0]
    near = dataclasses.replace(native, peak_device_bytes=memory_cap_bytes(native) - 1)
    assert native.mode == "native" and not is_borderline(near) and fits_clearly(near)


def test_borderline_cells_are_neither_recommended_nor_read_as_not_fitting(tmp_path):
    """hf-kbit's s1024 b2 cell, 95 %+ of a real T4's torch total, reads borderline: the size's best is the
    recipe that fits clearly, hf-kbit's largest fit is its smaller cell, its first failure the OOM, and the
    tier verdict does not count the size as one where only the candidate fits."""
    recs = read_records(T4)
    hf = _cell(recs, "hf-kbit", 1024, 2)
    near = dataclasses.replace(hf, peak_device_bytes=int(memory_cap_bytes(hf) * (1 - BORDERLINE_MARGIN / 2)))
    group = _group(tmp_path, [near if r is hf else r for r in recs])
    size = next(c for c in size_choices(group, MODEL) if (c.seq_len, c.batch_size) == (1024, 2))
    assert [e.record.recipe for e in size.borderline] == ["hf-kbit"] and size.untried == []
    assert size.best.record.recipe == "unsloth" and [e.record.recipe for e in size.fitting] == ["unsloth"]
    fit = recipe_fit(group, MODEL, "hf-kbit")
    assert (1024, 2) in [(e.record.seq_len, e.record.batch_size) for e in fit.borderline]
    assert (fit.largest.record.seq_len, fit.largest.record.batch_size) == (1024, 1)
    assert fit.first_failure.record.status == "oom"
    verdict = tier_verdict(group, baseline="hf-kbit", candidate="unsloth")
    only = [(p.candidate.record.seq_len, p.candidate.record.batch_size) for p in verdict.only_candidate_fits]
    assert (1024, 2) not in only and (2048, 2) in only


def test_a_size_where_every_cell_is_borderline_has_no_recommendation(tmp_path):
    recs = read_records(T4)
    moved = []
    for r in recs:
        if (r.seq_len, r.batch_size) == (1024, 1):
            r = dataclasses.replace(r, peak_device_bytes=memory_cap_bytes(r) - 1)
        moved.append(r)
    group = _group(tmp_path, moved)
    row = next(row for row in decision_rows(group) if "seq_len 1024 x batch 1" in row[0])
    assert row[1].startswith("**Borderline**") and row[3] == "-"


# -- cost -----------------------------------------------------------------------------------------
def test_an_emulated_tier_has_no_measured_cost(tmp_path):
    emulated = _group(tmp_path, read_records(T4), "t4.jsonl")
    native = _group(tmp_path, read_records(H100), "h100.jsonl")
    for e in emulated.entries:
        assert measured_cost_per_million_tokens(e.record) is None
        assert cost_text(emulated, e.record) == EMULATED_COST and "$" not in cost_text(emulated, e.record)
    for row in decision_rows(emulated):
        assert "$" not in row[3] and "per 1M" not in " ".join(row)
    r = native.entries[0].record
    assert measured_cost_per_million_tokens(r) == pytest.approx(
        cost_per_million_tokens(TIERS["h100"].price_per_hour_usd, median_tokens_per_s(r)))
    assert "per 1M training tokens" in cost_text(native, r)


# -- untried is untried ---------------------------------------------------------------------------
def test_matrix_never_prefers_a_recipe_at_a_size_the_other_was_not_tried(tmp_path):
    """unsloth measured at s8192 b1 (relabelled), hf-kbit never tried there nor known not to fit (its
    OOM is at s2048 b2, not smaller in both): the matrix names no preference and says hf-kbit was not tried."""
    recs = read_records(T4)
    group = _group(tmp_path, recs + [_at(_cell(recs, "unsloth", 2048, 2), 8192, 1)])
    decision = model_decision(group, MODEL)
    untried = next(c for c in decision.sizes if (c.seq_len, c.batch_size) == (8192, 1))
    assert untried.untried == ["hf-kbit"] and untried.best is None
    rows = decision_rows(group)
    row = next(row for row in rows if "seq_len 8192 x batch 1" in row[0])
    assert row[1].startswith("**No preference**") and "hf-kbit not tried at this size" in row[2]
    assert "unsloth" not in row[1]
    largest = next(row for row in rows if "largest measured size that fits" in row[0])
    assert "No preference" in largest[1] and "fits at most" not in " ".join(largest)


def test_max_fit_table_flags_a_borderline_maximum():
    """Real T4 max-fit probes (emulated, run under the 15.00 GiB driver total): unsloth's largest batch at
    s1024 ran, but above a real T4's torch total, so the table's maximum reads borderline."""
    from bench.analysis.fit import max_fit_rows
    from bench.render.fit import render_max_fit_markdown

    recs = read_records(REPO / "tests" / "fixtures" / "results" / "fit-t4-emulated.jsonl")
    rows = {r.recipe: r for r in max_fit_rows(recs, lambda tier: 1, lambda tier: 1024, predict=False)}
    top = next(r for r in recs if r.recipe == "unsloth" and (r.seq_len, r.batch_size) == (1024, rows["unsloth"].max_batch_size))
    assert is_borderline(top) == rows["unsloth"].max_batch_borderline is True
    clear = next(r for r in recs if r.recipe == "unsloth" and (r.seq_len, r.batch_size) == (rows["unsloth"].max_seq_len, 1))
    assert is_borderline(clear) == rows["unsloth"].max_seq_borderline
    md = render_max_fit_markdown(list(rows.values()), ["fit-t4-emulated.jsonl"])
    assert f"{rows['unsloth'].max_batch_size:,} (borderline)" in md

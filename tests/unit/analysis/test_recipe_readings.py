"""Recipe-aware readings of real GPU records (tests/golden, frozen): the best measured recipe per size
and the untried-is-untried rule, pairs against a named baseline, and the ladder's step figures.

Scenarios the GPU runs did not produce (a size only one recipe was tried at) are made by relabelling
real records: every figure is still one the suite measured."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.analysis.against import pairs_against, verdict_between
from bench.analysis.decisions import best_configuration, model_decision, size_choices
from bench.analysis.fallback import model_pairs
from bench.analysis.ladder import LADDER, group_ladder
from bench.analysis.results import load_results
from bench.analysis.stats import median
from bench.schema.store import append_record, read_records
from tests.helpers import REPO

T4 = REPO / "tests" / "golden" / "t4-emulated.jsonl"
MODEL = "llama-3.1-8b"


def _at(record, seq_len: int, batch_size: int):
    """A real record relabelled as measured at another size (its own cell)."""
    key = f"{record.pair_key}-s{seq_len}b{batch_size}"
    return dataclasses.replace(record, seq_len=seq_len, batch_size=batch_size, pair_key=key,
                               cell_id=f"{key}-{record.recipe}", parity=None, matched=None)


def _group(tmp_path: Path, records):
    path = tmp_path / "r.jsonl"
    for r in records:
        append_record(path, r)
    return load_results([path]).groups[0]


def test_untried_is_untried(tmp_path):
    """At a size where only unsloth was tried, no recipe is preferred; where hf-kbit is known not to fit
    (a smaller size ran out of memory), unsloth is the best measured recipe."""
    recs = read_records(T4)
    unsloth = next(r for r in recs if r.recipe == "unsloth" and (r.seq_len, r.batch_size) == (2048, 2))
    group = _group(tmp_path, recs + [_at(unsloth, 2048, 4), _at(unsloth, 8192, 1)])
    sizes = {(c.seq_len, c.batch_size): c for c in size_choices(group, MODEL)}
    oom = next(e for e in group.entries if e.record.recipe == "hf-kbit" and e.record.status == "oom")
    # hf-kbit ran out of memory at s2048 b2, so s2048 b4 is settled
    assert sizes[(2048, 4)].known_unfit == {"hf-kbit": oom} and sizes[(2048, 4)].untried == []
    assert sizes[(2048, 4)].best.record.recipe == "unsloth"
    # s8192 b1 is not at least as large as s2048 b2 in both: hf-kbit is untried there
    assert sizes[(8192, 1)].untried == ["hf-kbit"] and sizes[(8192, 1)].best is None
    assert [e.record.recipe for e in sizes[(8192, 1)].candidates] == ["unsloth"]
    # a measured size with both recipes: the faster one that fits
    both = sizes[(1024, 1)]
    assert both.untried == [] and both.best.record.tokens_per_s == max(e.record.tokens_per_s for e in both.cells)
    # the best configuration comes from settled sizes only; the largest size that fits names no preference
    best = best_configuration(group, MODEL)
    assert (best.record.seq_len, best.record.batch_size) != (8192, 1)
    decision = model_decision(group, MODEL)
    assert (decision.largest.seq_len, decision.largest.batch_size) == (8192, 1) and decision.largest.best is None


def test_pairs_against_a_named_baseline_never_fall_back(tmp_path):
    group = _group(tmp_path, read_records(T4))
    before = [(e.record.matched, e.record.parity) for e in group.entries]
    pairs = pairs_against(group.entries, "hf-kbit", "unsloth")
    assert len(pairs) == 4 and all(p.reference.record.recipe == "hf-kbit" for p in pairs)
    assert pairs_against(group.entries, "hf-trl", "unsloth") == []  # not measured: no stand-in
    assert pairs_against(group.entries, "hf-kbit", "hf-lora16") == []
    # the verdict each pair reads is the one carried for exactly these two cells
    for p in pairs:
        if p.both_ok:
            a, b = (e.entry.record for e in (p.reference, p.candidate))
            assert p.matched == verdict_between(a, b)["matched"] == b.matched
    # a verdict travels on copies: the entries' own records are never changed
    assert all(p.candidate.record is not p.candidate.entry.record for p in pairs if p.both_ok)
    assert [(e.record.matched, e.record.parity) for e in group.entries] == before


def test_ladder_steps_read_the_records(tmp_path):
    group = _group(tmp_path, read_records(T4))
    lad = group_ladder(group)
    assert lad.memory_field == "peak_device_bytes" and LADDER[0] == "hf-kbit" and LADDER[-1] == "unsloth"
    assert len(lad.cells) == 4
    for cell in lad.cells:
        (step,) = cell.steps
        a, b = step.before.record, step.after.record
        if step.pair.comparable:
            assert step.memory_change_bytes == b.peak_device_bytes - a.peak_device_bytes
            assert step.memory_change == pytest.approx(b.peak_device_bytes / a.peak_device_bytes - 1)
            # the median per-step tokens/s of each side's timed steps (bench.analysis.speed), as the tables show
            assert step.speed_change == pytest.approx(median(b.timed_rates()) / median(a.timed_rates()) - 1)
        else:
            assert step.memory_change is None and step.speed_change is None
        change = step.estimate_change  # the estimator's prediction, component by component
        assert change is not None and set(change) >= {"fp32_upcasts", "logits_and_loss", "weights"}
        if (a.recipe, b.recipe) == ("hf-kbit", "unsloth"):
            assert change["fp32_upcasts"] < 0  # prepare_model_for_kbit_training's fp32 copies are gone


def test_f2_rows_pair_unsloth_against_the_reference(tmp_path):
    group = _group(tmp_path, read_records(T4))
    records = [e.record for e in group.entries]
    rows = model_pairs(records, MODEL)
    assert len(rows) == 3  # the pair whose hf-kbit side ran out of memory is left out
    assert {(r["reference"], r["candidate"]) for r in rows} == {("hf-kbit", "unsloth")}  # hf-trl not measured
    for row in rows:
        pair = next(p for p in group.pairs if (p.candidate.record.seq_len, p.candidate.record.batch_size)
                    == (row["seq_len"], row["batch_size"]))
        assert row["speedup"] == pair.speedup and row["memory_reduction"] == pair.memory_reduction("peak_allocated_bytes")
    assert model_pairs(records, MODEL, candidate="hf-liger") == []

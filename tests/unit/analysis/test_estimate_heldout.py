"""The estimator validated out of sample (bench.analysis.estimate.heldout), on the frozen GPU records:
the split is deterministic and rule-driven, held-out cells never reach the fit, cap-pinned and OOM
cells are left out, low errors are counted apart from high ones, and the coverage gaps are said."""

from __future__ import annotations

import dataclasses

import pytest

from bench.analysis import estimate as E
from bench.analysis.calibration import CAP_PINNED_PRESSURE, calibration_from_records
from bench.config.models import resolve_model
from bench.schema.store import load
from tests.helpers import FROZEN_RESULTS

FILES = sorted(FROZEN_RESULTS.glob("*.jsonl"))


def resolve(name: str) -> dict:
    return resolve_model(name).config


@pytest.fixture(scope="module")
def records():
    return load(FILES)


def _pinned_by_fields(r) -> bool:
    """Cap-pinned or OOM, read from the record's own fields (not through the code under test)."""
    if r.status == "oom":
        return True
    cap = r.torch_memory_fraction * r.env["gpu_memory_bytes"] if r.torch_memory_fraction else None
    return bool(cap) and r.status == "ok" and r.peak_reserved_bytes >= CAP_PINNED_PRESSURE * cap


def test_split_follows_the_rule_and_not_the_order(records):
    rules = [E.parse_split_rule("tier=a10g"), E.parse_split_rule("seq_len>=30000")]
    split = E.split_records(records, [], rules, E.architecture_resolver(resolve))
    again = E.split_records(list(reversed(records)), [], rules, E.architecture_resolver(resolve))
    ids = lambda rs: sorted(r.cell_id for r in rs)  # noqa: E731
    assert ids(split.calibration) == ids(again.calibration) and ids(split.held_out) == ids(again.held_out)
    assert split.held_out and split.calibration
    assert all(r.tier == "a10g" or r.seq_len >= 30000 for r in split.held_out)
    assert all(r.tier != "a10g" and r.seq_len < 30000 for r in split.calibration)
    # Files given as held out are held out whole (less what is left out).
    by_file = E.split_records(load(FILES[1:]), load(FILES[:1]))
    held_ids = {r.cell_id for r in load(FILES[:1])}
    assert {r.cell_id for r in by_file.held_out} <= held_ids
    assert not held_ids & {r.cell_id for r in by_file.calibration}


def test_held_out_cells_never_reach_the_fit(records):
    split = E.split_records(records, [], [E.parse_split_rule("tier=t4")])
    result = E.out_of_sample(split, resolve)
    held = {r.cell_id for r in split.held_out}
    used = {c for ids in result.fitted["cells"]["non_torch"].values() for c in ids}
    assert held and not held & used and not held & set(result.fitted["cells"]["unsloth_backward"])
    # Tripling every held-out peak changes the held-out errors and nothing of the calibration.
    tripled = [dataclasses.replace(r, peak_device_bytes=3 * r.peak_device_bytes,
                                   peak_reserved_bytes=3 * r.peak_reserved_bytes,
                                   peak_allocated_bytes=3 * r.peak_allocated_bytes) for r in split.held_out]
    other = E.out_of_sample(dataclasses.replace(split, held_out=tripled), resolve)
    assert other.calibration == result.calibration and other.fitted == result.fitted
    assert [r.error_bytes for r in other.in_sample] == [r.error_bytes for r in result.in_sample]
    assert all(a.error_bytes != b.error_bytes for a, b in zip(other.held_out, result.held_out))
    # The in-sample rows are exactly the calibration set; the held-out rows exactly the held-out set.
    assert {r.cell_id for r in result.held_out} == held
    assert {r.cell_id for r in result.in_sample} == {r.cell_id for r in split.calibration}


def test_cap_pinned_and_oom_cells_are_left_out_of_fit_and_errors(records):
    split = E.split_records(records, [], [E.parse_split_rule("tier=a10g")])
    pinned = {r.cell_id for r in records if _pinned_by_fields(r)}
    assert pinned and any(r.status == "oom" for r in records)  # the fixtures hold both kinds
    assert {x.cell_id for x in split.left_out} == pinned
    counts = split.left_out_counts()
    assert counts["oom"] == sum(r.status == "oom" for r in records)
    assert counts["cap"] == len(pinned) - counts["oom"]
    assert not pinned & {r.cell_id for r in split.calibration + split.held_out}
    fitted = calibration_from_records(records, E.calibration_predictor(resolve))
    assert set(fitted["left_out"]) == pinned
    for ids in (*fitted["cells"]["non_torch"].values(), *fitted["cells"]["allocator_slack"].values(),
                fitted["cells"]["unsloth_backward"]):
        assert not pinned & set(ids)


def test_a_held_out_configuration_also_in_the_calibration_set_is_not_out_of_sample():
    split = E.split_records(load(FILES), load(FILES[-1:]))
    assert not split.held_out
    assert {x.kind for x in split.left_out if x.set == "held-out"} <= {"in calibration set", "oom", "cap"}
    assert any(x.kind == "in calibration set" for x in split.left_out)


def test_low_errors_are_counted_apart_from_high_ones(records):
    rows, _ = E.validate_records([r for r in records if r.status == "ok"], resolve)
    low = [r for r in rows if r.predicted_bytes < r.measured_bytes]
    high = [r for r in rows if r.predicted_bytes > r.measured_bytes]
    stats = E.error_stats(rows)
    assert stats["low"]["cells"] == len(low) and stats["high"]["cells"] == len(high)
    worst = min(low, key=lambda r: (r.predicted_bytes - r.measured_bytes) / r.measured_bytes)
    assert stats["low"]["worst_cell"] == worst.cell_id and stats["low"]["worst_error_pct"] < 0
    assert stats["high"]["worst_error_pct"] > 0
    # One prediction moved far below its measured peak: the worst low error, beyond the bound.
    bad = dataclasses.replace(rows[0], predicted_bytes=rows[0].measured_bytes // 2)
    stats = E.error_stats([bad, *rows[1:]])
    assert stats["low"]["worst_cell"] == bad.cell_id and stats["low"]["beyond_bound"] >= 1
    assert stats["low"]["worst_error_pct"] == pytest.approx(-50, abs=0.01) and bad.errs_low and not bad.within
    assert stats["median_abs_error_pct"] <= stats["max_abs_error_pct"] == pytest.approx(50, abs=0.01)


def test_coverage_says_what_the_requirement_lacks(records):
    result = E.out_of_sample(E.split_records(records, [], [E.parse_split_rule("seq_len>=30000")]), resolve)
    gaps = E.coverage_gaps(result)
    assert "not covered: 3 architectures (measured 1: llama)" in gaps
    # Unsloth's long sequences are held out, its short ones calibrate: out of sample lacks the short end.
    assert any(g.startswith("not covered out of sample: unsloth on llama at seq_len <= 2048") for g in gaps)
    assert "not covered out of sample: hf-kbit (no held-out cell)" in gaps
    cov = E.coverage(result.held_out)
    assert cov["architectures"] == {"llama": ["llama-3.1-8b"]}
    assert cov["recipes"]["unsloth"]["seq_len"][0] >= 30000


@pytest.mark.parametrize("text, message", [
    ("seq_len", "write KEY=V1,V2"), ("foo=1", "unknown key"), ("model=", "no value"),
    ("seq_len>=abc", "whole numbers"), ("model>=3", "takes one number"), ("seq_len>=1,2", "takes one number"),
])
def test_bad_hold_out_rules_are_refused(text, message):
    with pytest.raises(E.SplitRuleError, match=message):
        E.parse_split_rule(text)


def test_hold_out_rules_read_as_written(records):
    r = next(x for x in records if x.status == "ok" and x.seq_len == 2048 and x.batch_size == 2)
    assert E.parse_split_rule("tokens>=4096").holds_out(r, "llama")
    assert not E.parse_split_rule("tokens<=4095").holds_out(r, "llama")
    assert E.parse_split_rule("architecture=phi3,llama").holds_out(r, "llama")
    assert E.parse_split_rule(f"family={r.backend}").holds_out(r, "llama")
    assert str(E.parse_split_rule("seq_len = 1024, 2048")) == "seq_len=1024,2048"


def _row(model: str, arch: str, seq_len: int, context: int, recipe: str = "unsloth") -> E.ValidationRow:
    return E.ValidationRow(cell_id=f"{model}-{recipe}-s{seq_len}", recipe=recipe, driver="trainer", model=model,
                           architecture=arch, tier="h200", mode="native", gpu_name="NVIDIA H200", seq_len=seq_len,
                           batch_size=1, dtype="bfloat16", gradient_checkpointing="unsloth", predicted_bytes=2**30,
                           measured_bytes=2**30, peak_phase="layer", context_tokens=context)


def test_unsloth_span_ends_at_the_architecture_context_when_shorter():
    long = [_row(m, a, s, 32768) for m, a in (("llama-3.1-8b", "llama"), ("mistral-7b-v0.3", "mistral"))
            for s in (2048, 32768)]
    phi_at_2k = [_row("phi-3-mini", "phi3", 2048, 4096)]
    result = E.OutOfSample(split=None, calibration=None, fitted={}, in_sample=[], held_out=long + phi_at_2k)
    gaps = E.coverage_gaps(result)
    # Phi-3-mini is trained at 4k: its span ends there, not at 30k ...
    assert "not covered: unsloth on phi3 at seq_len >= 4,096 (its context) (measured 2048..2048)" in gaps
    assert not any("llama" in g or "mistral" in g for g in gaps)
    # ... and a cell at its context covers it; three architectures are then covered in and out of sample.
    result = E.OutOfSample(split=None, calibration=None, fitted={}, in_sample=[],
                           held_out=long + phi_at_2k + [_row("phi-3-mini", "phi3", 4096, 4096)])
    assert E.coverage_gaps(result) == []
    # A long-context architecture measured only to 8k still lacks the 30k end.
    short = [_row("qwen2.5-7b", "qwen2", s, 131072) for s in (2048, 8192)]
    result = E.OutOfSample(split=None, calibration=None, fitted={}, in_sample=[], held_out=long + short)
    assert "not covered: unsloth on qwen2 at seq_len >= 30,000 (measured 2048..8192)" in E.coverage_gaps(result)

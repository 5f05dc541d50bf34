"""bench.analysis.speed (a cell's speed, a pair's speed-up and saving, with intervals), store.latest_repeats,
and the speed gate's interval rule, on records built here from ResultRecord.

The step times below are constructed inputs (a noisy run, the same run 1.5x slower), not measurements:
each test states the property it checks, not a figure.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.analysis import gate, speed, stats
from bench.schema import baseline as baseline_file
from bench.schema.pairs import pair_records
from bench.schema.record import SCHEMA_VERSION, ResultRecord, rate_groups
from bench.schema.store import latest_repeats

TOKENS = 1000  # tokens a step (synthetic data: every row full length)
NOISY_BASE = [[0.80, 1.00, 1.25, 0.90], [1.10, 0.85, 1.00, 1.20]]  # seconds per timed step, per repeat
NOISY_AGAIN = [[1.05, 1.35, 1.00, 1.20], [0.95, 1.30, 1.15, 1.10]]  # the same recipe, another noisy run


def record(step_s, recipe="hf-trl", repeat=0, run_id="run-a", warmup=1, status="ok", **fields) -> ResultRecord:
    """A cell of tiny-llama at s32 b1 whose timed steps took `step_s` seconds (after `warmup` steps of 9 s)."""
    steps = [9.0] * warmup + list(step_s)
    base = dict(schema_version=SCHEMA_VERSION, run_id=run_id, cell_id=f"t4-cpu-tiny-llama-s32-b1-00000000-{recipe}",
                pair_key="t4-cpu-tiny-llama-s32-b1-00000000", backend="hf", recipe=recipe, driver="trainer",
                model="tiny-llama", model_source="synthetic", tier="t4", mode="cpu", seq_len=32, batch_size=1,
                grad_accum=1, lora_r=16, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj"],
                optimizer="adamw_torch", learning_rate=2e-4, gradient_checkpointing="standard", dtype="float32",
                attn_implementation="sdpa", steps=len(step_s), warmup_steps=warmup, seed=0, status=status,
                repeat=repeat, step_s=steps if status == "ok" else [], tokens_per_step=TOKENS,
                tokens_per_s=TOKENS * len(step_s) / sum(step_s) if status == "ok" and step_s else None,
                peak_rss_bytes=1 << 30, matched=True)
    base.update(fields)
    return ResultRecord(**base)


def repeats(step_groups, **kw) -> list[ResultRecord]:
    return [record(steps, repeat=i, repeats=len(step_groups), **kw) for i, steps in enumerate(step_groups)]


# -- latest_repeats ---------------------------------------------------------------------------------
def test_latest_repeats_keeps_every_repeat_of_the_latest_run_only():
    old = repeats([[1.0], [1.0]], run_id="run-a")
    new = repeats([[2.0], [2.0], [2.0]], run_id="run-b")
    redo = record([3.0], repeat=1, repeats=3, run_id="run-b")  # repeat 1 of run-b measured again (a resumed run)
    other = record([1.0], recipe="hf-kbit")
    out = latest_repeats([*old, *new, other, redo])
    cell = new[0].cell_id
    assert set(out) == {cell, other.cell_id}
    assert [(r.run_id, r.repeat) for r in out[cell]] == [("run-b", 0), ("run-b", 1), ("run-b", 2)]
    assert out[cell][1] is redo and out[other.cell_id] == [other]


# -- a record's timed rates and a cell's speed ------------------------------------------------------
def test_timed_rates_leave_out_warmup_and_fall_back_to_tokens_per_step():
    r = record([0.5, 0.25], warmup=2)
    assert r.timed_step_tokens() == [TOKENS, TOKENS]  # no step_tokens stored: synthetic rows, full length
    assert r.timed_rates() == [TOKENS / 0.5, TOKENS / 0.25]
    padded = dataclasses.replace(r, step_tokens=[1, 1, 300, 400])
    assert padded.timed_rates() == [300 / 0.5, 400 / 0.25]
    failed = record([], status="error")
    assert rate_groups([failed, r]) == [r.timed_rates()]


def test_cell_speed_is_the_median_of_every_repeat_with_an_interval_around_it():
    cell = repeats(NOISY_BASE)
    s = speed.cell_speed(cell)
    pooled = [TOKENS / t for g in NOISY_BASE for t in g]
    assert s.tokens_per_s.estimate == pytest.approx(stats.median(pooled))
    assert s.tokens_per_s.known and s.tokens_per_s.low <= s.tokens_per_s.estimate <= s.tokens_per_s.high
    assert (s.repeats, s.steps) == (2, 8)
    assert s.cv == pytest.approx(stats.coefficient_of_variation(pooled)) and s.noisy  # well above 5 %
    steady = speed.cell_speed(repeats([[1.0, 1.0, 1.01, 0.99]]))
    assert not steady.noisy and steady.tokens_per_s.known


def test_a_single_timed_step_gives_a_speed_without_interval():
    s = speed.cell_speed([record([0.5])])
    assert s.tokens_per_s.estimate == TOKENS / 0.5 and not s.tokens_per_s.known and s.cv is None


# -- pairs ------------------------------------------------------------------------------------------
def _pair(ref_steps, cand_steps):
    return pair_records([*repeats(ref_steps, recipe="hf-trl"), *repeats(cand_steps, recipe="unsloth")])


def test_speedup_interval_and_verdict():
    class Side:  # a report entry: its record and the records of every repeat
        def __init__(self, records):
            self.record, self.repeat_records = records[-1], records

    ref, fast = repeats(NOISY_BASE), repeats([[t / 2 for t in g] for g in NOISY_BASE], recipe="unsloth")
    p = pair_records([Side(ref), Side(fast)])[0]
    ratio = speed.pair_speedup(p)
    assert ratio.estimate == pytest.approx(2.0) and ratio.low <= 2.0 <= ratio.high
    assert speed.speedup_verdict(ratio) == speed.FASTER
    same = speed.pair_speedup(_pair(NOISY_BASE, NOISY_AGAIN)[0])
    assert same.low < 1.0 < same.high and speed.speedup_verdict(same) == speed.INCONCLUSIVE
    assert speed.speedup_verdict(speed.pair_speedup(_pair([[0.5]], [[0.25]])[0])) == speed.INCONCLUSIVE  # no interval
    unmatched = pair_records([record([1.0, 1.0]), record([0.5, 0.5], recipe="unsloth", matched=False)])[0]
    assert speed.pair_speedup(unmatched) is None


def test_memory_saving_has_an_interval_only_with_several_peaks_a_side():
    one = pair_records([record([1.0]), record([1.0], recipe="unsloth", peak_rss_bytes=1 << 29)])[0]
    saving = speed.pair_memory_saving(one, "peak_rss_bytes")
    assert saving.estimate == pytest.approx(0.5) and not saving.known
    ref = [record([1.0], repeat=i, peak_rss_bytes=(1 << 30) + i * (1 << 20)) for i in range(3)]
    cand = [record([1.0], recipe="unsloth", repeat=i, peak_rss_bytes=(1 << 29) + i * (1 << 20)) for i in range(3)]

    class Side:
        def __init__(self, records):
            self.record, self.repeat_records = records[-1], records

    several = speed.pair_memory_saving(pair_records([Side(ref), Side(cand)])[0], "peak_rss_bytes")
    assert several.known and several.low <= several.estimate <= several.high


# -- the gate's interval rule -----------------------------------------------------------------------
SETTINGS = gate.GateSettings(metric="rss", max_vram_increase=None, max_slowdown=0.10, budget=None, ignore_key=(),
                             only={}, allow_env_mismatch=False, reference="hf-trl")


def _snapshot(records):
    return baseline_file.snapshot_from_records(records[-1:], ["new.jsonl"], repeats=latest_repeats(records))


def _baseline(records, version=baseline_file.BASELINE_VERSION):
    """A baseline file's content as saved from `records` (every repeat), read back; version 2: no samples."""
    snap = baseline_file.baseline_from_records(records[-1:], ["base.jsonl"], created_at="2026-01-01T00:00:00+00:00",
                                               repeats=latest_repeats(records))
    data = json.loads(json.dumps(baseline_file.baseline_to_dict(snap)))
    if version == 2:
        data["version"] = 2
        for c in data["cells"]:
            c.pop("step_rates")
    return baseline_file.baseline_from_dict(data, "base.json")


def test_gate_passes_a_noisy_unchanged_run_that_the_point_rule_would_fail():
    base, again = repeats(NOISY_BASE), repeats(NOISY_AGAIN, run_id="run-b")
    report = gate.run_gate(_snapshot(again), _baseline(base), SETTINGS)
    row = report.rows[0]
    assert row.speed_rule == "interval" and row.speed_change < -SETTINGS.max_slowdown  # past it as a point figure
    assert report.passed and not any("without an interval" in w for w in report.warnings)
    low, high = row.speed_change_interval
    assert low < -SETTINGS.max_slowdown < high
    assert [(f.severity, f.kind) for f in row.findings] == [("info", "slowdown")]


def test_gate_fails_a_real_slowdown_on_its_interval():
    base = repeats(NOISY_BASE)
    slower = repeats([[t * 1.5 for t in g] for g in NOISY_BASE], run_id="run-b")
    report = gate.run_gate(_snapshot(slower), _baseline(base), SETTINGS)
    (finding,) = report.regressions
    assert finding.kind == "slowdown" and finding.facts["rule"] == "interval"
    assert finding.facts["high"] < -SETTINGS.max_slowdown and finding.facts["change"] == pytest.approx(1 / 1.5 - 1)


def test_old_baseline_without_samples_uses_the_point_rule_and_says_so():
    base, again = repeats(NOISY_BASE[:1]), repeats(NOISY_AGAIN[:1], run_id="run-b")
    assert gate.run_gate(_snapshot(again), _baseline(base), SETTINGS).passed  # with samples: noise, passes
    old = _baseline(base, version=2)
    assert old.version == 2 and all(c.step_rates is None for c in old.cells)
    report = gate.run_gate(_snapshot(again), old, SETTINGS)
    (finding,) = report.regressions  # the same noisy re-run fails the point rule
    assert finding.facts["rule"] == "point" and "no per-step samples" in finding.facts["why_point"]
    assert any("version 2" in w and "without an interval" in w for w in report.warnings)
    from bench.render.gate import finding_message, render_markdown
    assert "point figures, no interval" in finding_message(finding)
    assert "without an interval" in render_markdown(report)


def test_baseline_refuses_malformed_step_rates():
    data = baseline_file.baseline_to_dict(_baseline(repeats(NOISY_BASE)))
    data["cells"][0]["step_rates"] = [[1.0, -2.0]]
    with pytest.raises(baseline_file.BaselineError, match="step_rates"):
        baseline_file.baseline_from_dict(data, "bad.json")


def test_report_entries_carry_every_repeat_and_repeats_are_not_superseded(tmp_path):
    from bench.analysis.results import load_results
    from bench.schema.store import append_record

    path = tmp_path / "r.jsonl"
    for r in [record([2.0, 2.0]), *repeats(NOISY_BASE, run_id="run-b"), *repeats(NOISY_AGAIN, recipe="hf-kbit")]:
        append_record(path, r)
    loaded = load_results([path])
    assert loaded.superseded == 1  # run-a's record; run-b's repeats are the cell's measurement
    entry = next(e for e in loaded.entries if e.record.recipe == "hf-trl")
    assert [r.repeat for r in entry.repeat_records] == [0, 1]
    assert speed.side_speed(entry) == speed.cell_speed(repeats(NOISY_BASE))

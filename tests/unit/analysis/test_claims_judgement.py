"""One verdict per claim over all the evidence (bench.analysis.claims.judge_claims), on frozen GPU records.

Records are the frozen fixtures' (real measurements); where a test needs another recipe name, repeat
number or file split, it relabels real records (a constructed label, never a typed figure). Thresholds
of test-only claims files are derived from the measured values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.analysis.claims import (CLAIMS_PATH, FAILS, HOLDS, INCONCLUSIVE, MIN_UNITS, NOT_MEASURED, ClaimsInputs,
                                   judge_claims, load_claims, load_claims_inputs)
from bench.analysis.claims.base import Inputs
from bench.analysis.claims.checks import CHECKS
from bench.analysis.results import load_results
from bench.render.blocks import render_markdown
from bench.render.claims import claims_document, measured_markdown
from bench.render.report import build_report
from bench.schema.store import append_record, read_records
from tests.helpers import FROZEN_RESULTS, REPO, run_bench

T4 = FROZEN_RESULTS / "t4-emulated.jsonl"
H100 = FROZEN_RESULTS / "h100-native.jsonl"
KERNELS = REPO / "tests" / "fixtures" / "kernels"
BENCHMARK = KERNELS / "benchmark.json"


def _write(path: Path, records) -> Path:
    for r in records:
        append_record(path, r)
    return path


def _verdicts(paths, claims_path: Path = CLAIMS_PATH) -> dict:
    j = judge_claims(load_claims_inputs(paths), claims_path)
    return {c.claim.id: (c.verdict, measured_markdown(c.evidence)) for c in j.checked}


def _relabel(records, old: str, new: str):
    """Real records of recipe `old` relabelled as `new` (cell id too), the others as they are."""
    return [dataclasses.replace(r, recipe=new, cell_id=r.cell_id[:-len(old)] + new) if r.recipe == old else r
            for r in records]


def _memory_rule_file(tmp_path: Path, threshold: float) -> Path:
    """A claims file of one memory claim: unsloth saves at least `threshold` of hf-kbit's device peak."""
    claim = {"id": "X-memory", "text": "t", "source": "s", "checked_as": "c",
             "rule": {"kind": "pair_metric", "metric": "memory_reduction", "memory": "peak_device_bytes",
                      "baseline": "hf-kbit", "candidate": "unsloth", "where": {"modes": ["native", "emulated"]},
                      "aggregate": "median", "op": "at_least", "threshold": threshold}}
    path = tmp_path / f"claims-{threshold:.4f}.json"
    path.write_text(json.dumps({"claims": [claim]}), encoding="utf-8")
    return path


def _pairs_by_reduction(paths) -> list[tuple[float, list]]:
    """(device-memory reduction, [its two records]) of every matched pair, smallest saving first."""
    out = []
    for g in load_results(paths).groups:
        for p in g.pairs:
            if p.comparable:
                out.append((p.memory_reduction("peak_device_bytes"), [p.reference.record, p.candidate.record]))
    return sorted(out, key=lambda x: x[0])


def test_too_little_evidence_is_inconclusive():
    res = _verdicts([H100])  # one matched pair, one repeat
    verdict, text = res["S3-speed"]
    assert verdict == INCONCLUSIVE and f"a verdict needs at least {MIN_UNITS}" in text


def test_enough_evidence_holds_or_does_not_hold(tmp_path):
    pairs = _pairs_by_reduction([T4, H100])
    values = [v for v, _ in pairs]
    assert len(values) >= 2
    below, above = min(values) * 0.9, max(values) * 1.1  # thresholds clear of every measured pair
    assert _verdicts([T4, H100], _memory_rule_file(tmp_path, below))["X-memory"][0] == HOLDS
    verdict, text = _verdicts([T4, H100], _memory_rule_file(tmp_path, above))["X-memory"]
    assert verdict == FAILS and f"over {len(values)} matched pairs" in text and "h100 native" in text \
        and "t4 emulated" in text


def test_contradicting_files_get_one_verdict_explained(tmp_path):
    """Two files, one of pairs below a threshold, one above: each alone holds or fails; together one verdict."""
    pairs = _pairs_by_reduction([T4, H100])
    half = len(pairs) // 2
    low = _write(tmp_path / "low.jsonl", [r for _, rs in pairs[:half] for r in rs])
    high = _write(tmp_path / "high.jsonl", [r for _, rs in pairs[half:] for r in rs])
    threshold = (pairs[half - 1][0] + pairs[half][0]) / 2
    rule = _memory_rule_file(tmp_path, threshold)
    assert _verdicts([low], rule)["X-memory"][0] == FAILS
    assert _verdicts([high], rule)["X-memory"][0] == HOLDS
    judgement = judge_claims(load_claims_inputs([low, high]), rule)
    (both,) = judgement.checked
    text = measured_markdown(both.evidence)
    assert both.verdict == INCONCLUSIVE and "not clear of the rule's bounds" in text
    assert {e.path.name for e in judgement.cited(both)} == {"low.jsonl", "high.jsonl"}
    # each file's report, given the other as claims evidence, shows that one verdict, never its own
    for mine, other in ((low, high), (high, low)):
        inputs = load_claims_inputs([mine, other])
        report = build_report(load_results([mine]), tmp_path / f"{mine.stem}.md", judge_claims(inputs, rule),
                              tmp_path / "claims.md")
        md = render_markdown(report.blocks)
        assert "| inconclusive |" in md and "[claims.md](claims.md)" in md
        assert f"`{other.name}:" in md  # the other file's cells are named by file and cell id
    doc = render_markdown(claims_document(judgement, tmp_path / "claims.md"))
    assert "| inconclusive |" in doc and "low.jsonl" in doc and "high.jsonl" in doc


def test_wrong_baseline_or_model_is_not_measured():
    res = _verdicts([T4, H100])
    # S1 is against 16-bit LoRA: the QLoRA recipes measured here never stand in for it
    verdict, text = res["S1-memory"]
    assert verdict == NOT_MEASURED and "no GPU cell of hf-lora16 was measured" in text
    # S2/S6 are about the Mistral-7B architecture: Llama-3.1-8B cells at seq 2048 batch 1 are not read
    verdict, text = res["S2/S6"]
    assert verdict == NOT_MEASURED and "mistral-7b-v0.3" in text
    judgement = judge_claims(load_claims_inputs([T4]))
    s26 = next(c for c in judgement.checked if c.claim.id == "S2/S6")
    assert s26.claim.rule["field"] == "peak_allocated_bytes" and "mistral-7b-v0.3" in s26.claim.needs


def test_the_articles_baseline_is_read_when_measured(tmp_path):
    """hf-kbit cells relabelled as hf-lora16 (constructed labels): S1-memory reads them, judged on intervals."""
    path = _write(tmp_path / "t4.jsonl", _relabel(read_records(T4), "hf-kbit", "hf-lora16"))
    verdict, text = _verdicts([path])["S1-memory"]
    reductions = [v for v, _ in _pairs_by_reduction([T4])]
    expected = HOLDS if min(reductions) >= 0.595 else FAILS if max(reductions) < 0.595 else INCONCLUSIVE
    assert verdict == expected and "against hf-lora16" in text


def test_f2_with_only_fast_path_pairs_is_inconclusive():
    verdict, text = _verdicts([T4, H100])["F2"]
    assert verdict == INCONCLUSIVE and "Only fast-path pairs were measured" in text


def test_f1_from_kernels_check_results_and_m4_from_the_micro_benchmark():
    res = _verdicts([T4, KERNELS, BENCHMARK])
    verdict, text = res["F1"]
    assert verdict == HOLDS and "kernels-check pythia-1b.json" in text and "not listed" in text
    only_listed = _verdicts([T4, KERNELS / "llama-3.2-1b.json"])["F1"]
    assert only_listed[0] == INCONCLUSIVE and "other half of the claim is untested" in only_listed[1]
    data = json.loads(BENCHMARK.read_text(encoding="utf-8"))
    rope = {}
    for b in data["benchmarks"]:
        if b["group"].startswith("rope"):
            rope.setdefault(b["group"], {})[b["params"]["impl"]] = b["stats"]["median"]
    ratios = [g["torch"] / g["unsloth"] for g in rope.values()]
    verdict, text = res["M4"]
    assert "rope" in text and verdict in (HOLDS, FAILS, INCONCLUSIVE)
    if max(ratios) < 0.5 * 4.25:  # far below the bound: every interval is clear of it
        assert verdict == FAILS
    assert _verdicts([T4])["M4"][0] == NOT_MEASURED


def test_repeats_count_as_evidence():
    """One matched pair measured twice (repeat 1 relabels the same real records): two independent
    measurements, so the verdict is judged on the interval rather than refused."""
    loaded = load_results([H100])
    entries = loaded.entries
    group = loaded.groups[0]
    # as load_results gives a cell measured twice: one entry carrying the records of both repeats
    twice = [dataclasses.replace(e, repeat_records=[dataclasses.replace(e.record, repeats=2),
                                                    dataclasses.replace(e.record, repeat=1, repeats=2)])
             for e in entries]
    claims, _ = load_claims()
    # S3-speed's own rule asks for two pairs (a median over pairs); without that, two repeats are enough
    rule = dict(next(c for c in claims if c.id == "S3-speed").rule, min_pairs=1)
    one = CHECKS["pair_metric"](rule, Inputs(entries, [group.entries], [], {}))
    two = CHECKS["pair_metric"](rule, Inputs(twice, [twice], [], {}))
    assert one[0] == INCONCLUSIVE and "too little evidence" in measured_markdown(one[1])
    assert "too little evidence" not in measured_markdown(two[1]) and "2 repeats" in measured_markdown(two[1])


def test_repeats_in_a_results_file_reach_the_claims(tmp_path):
    """The same, through a results file: each cell's second repeat (relabelled real records) is read with the
    cell, and the claim counts it (claims once read only one record per cell)."""
    records = read_records(H100)
    path = _write(tmp_path / "twice.jsonl", [dataclasses.replace(r, repeats=2) for r in records]
                  + [dataclasses.replace(r, repeat=1, repeats=2) for r in records])
    claims, _ = load_claims()
    rule = dict(next(c for c in claims if c.id == "S3-speed").rule, min_pairs=1)
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(json.dumps({"claims": [{"id": "X-speed", "text": "t", "source": "s", "checked_as": "c",
                                                   "rule": rule}]}), encoding="utf-8")
    once = _verdicts([H100], claims_file)["X-speed"][1]
    twice = _verdicts([path], claims_file)["X-speed"][1]
    assert "too little evidence" in once
    assert "too little evidence" not in twice and "2 repeats" in twice


def test_claims_command_and_report_agree(tmp_path):
    out = tmp_path / "claims.md"
    proc = run_bench("claims", str(T4), str(H100), str(KERNELS), str(BENCHMARK), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = out.read_text(encoding="utf-8")
    assert doc.startswith("<!-- Generated by `bench claims`") and "## Cells cited" in doc
    lines = {line.split(":")[0]: line.split(": ", 1)[1] for line in proc.stdout.splitlines() if ": " in line}
    judgement = judge_claims(load_claims_inputs([T4, H100, KERNELS, BENCHMARK]))
    assert {c.claim.id: c.verdict for c in judgement.checked} == {k: v for k, v in lines.items() if k != "claims"}
    report = build_report(load_results([T4]), tmp_path / "t4.md", judgement, out)
    md = render_markdown(report.blocks)
    for c in judgement.checked:
        if any(e.path == T4 for e in judgement.cited(c)):
            assert f"| {c.claim.id}: " in md
    assert run_bench("claims", str(tmp_path / "missing.jsonl")).returncode == 2


def test_inputs_of_each_kind_are_told_apart(tmp_path):
    inputs = load_claims_inputs([T4, KERNELS, BENCHMARK])
    assert isinstance(inputs, ClaimsInputs) and inputs.results is not None and inputs.benchmark is not None
    assert {name for name, _ in inputs.kernels} == {p.name for p in KERNELS.glob("*.json") if p != BENCHMARK}


def test_a_fit_claim_on_one_reading_is_inconclusive(tmp_path):
    """A fit verdict, like every other, needs two independent measurements (cells or repeats)."""
    def fits_rule(seq_len: int) -> Path:
        claim = {"id": "X-fit", "text": "t", "source": "s", "checked_as": "c",
                 "rule": {"kind": "fits", "recipe": "hf-kbit", "where": {"models": ["llama-3.1-8b"], "tiers": ["t4"],
                          "modes": ["native", "emulated"], "seq_len": seq_len, "batch_size": 1}, "expect": "fits"}}
        path = tmp_path / f"fits-{seq_len}.json"
        path.write_text(json.dumps({"claims": [claim]}), encoding="utf-8")
        return path

    verdict, text = _verdicts([T4], fits_rule(1024))["X-fit"]  # one hf-kbit cell at seq 1024 batch 1
    assert verdict == INCONCLUSIVE and "too little evidence: 1 measurement (cells or repeats)" in text
    # the cell measured twice (repeat 1 relabels the same real records): now a verdict
    records = read_records(T4)
    twice = _write(tmp_path / "twice.jsonl", [dataclasses.replace(r, repeats=2) for r in records]
                   + [dataclasses.replace(r, repeat=1, repeats=2) for r in records])
    verdict, text = _verdicts([twice], fits_rule(1024))["X-fit"]
    assert verdict == HOLDS and "too little evidence" not in text


def test_a_fit_claim_reads_every_repeat_and_the_worst_stands(tmp_path):
    """A cell measured several times fits as its worst repeat does: the highest device peak is the one judged
    and shown, and one repeat that ran out of memory makes the cell not fit."""
    claim = {"id": "X-fit", "text": "t", "source": "s", "checked_as": "c",
             "rule": {"kind": "fits", "recipe": "hf-kbit", "where": {"models": ["llama-3.1-8b"], "tiers": ["t4"],
                      "modes": ["native", "emulated"], "seq_len": 1024, "batch_size": 1}, "expect": "fits"}}
    rule_file = tmp_path / "fits.json"
    rule_file.write_text(json.dumps({"claims": [claim]}), encoding="utf-8")
    records = [r for r in read_records(T4) if r.backend == "hf" and r.seq_len == 1024 and r.batch_size == 1]
    (r,) = records
    higher = dataclasses.replace(r, repeat=1, repeats=2, peak_device_bytes=r.peak_device_bytes + 2**30)
    path = _write(tmp_path / "twice.jsonl", [dataclasses.replace(r, repeats=2), higher])
    verdict, text = _verdicts([path], rule_file)["X-fit"]
    assert verdict == HOLDS and f"{higher.peak_device_bytes / 2**30:.2f}" in text and "the highest of 2 repeats" in text
    oom = dataclasses.replace(r, repeat=1, repeats=2, status="oom", error="OOM")
    path = _write(tmp_path / "oom.jsonl", [dataclasses.replace(r, repeats=2), oom])
    verdict, text = _verdicts([path], rule_file)["X-fit"]
    assert verdict == FAILS and "out of memory" in text and "1 of 2 repeats" in text

"""`bench doctor`: known-good library combinations, tier detection, and advice backed by estimates."""

from __future__ import annotations

import json

import pytest

from bench.analysis.doctor import check_combo, diagnose, known_good_combos
from bench.analysis.estimate import estimate, max_fit_seq_len
from bench.config.models import SHIPPED
from bench.config.tiers import HostGpu, get_tier
from bench.units import GiB
from tests.helpers import run_bench

GOOD = {"torch": "2.11.0+cu130", "cuda": "13.0", "transformers": "5.17.0", "peft": "0.21.0",
        "bitsandbytes": "0.50.2", "unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9", "trl": "1.15.0",
        "accelerate": "1.15.0"}


def test_known_good_combination_matches_by_prefix():
    c = check_combo(GOOD)
    assert c.ok and c.matches == known_good_combos()[0]["label"] and not c.mismatches and not c.missing


def test_a_different_version_is_a_mismatch_and_missing_gpu_packages_are_listed():
    c = check_combo(dict(GOOD, transformers="5.18.0", peft="0.211"))
    assert not c.ok and set(c.mismatches) == {"transformers", "peft"}
    assert c.mismatches["transformers"] == ("5.18.0", "5.17.0")
    cpu = check_combo({k: v for k, v in GOOD.items() if k not in ("unsloth", "unsloth_zoo", "trl", "cuda")})
    assert not cpu.ok and not cpu.mismatches and sorted(cpu.missing) == ["cuda", "trl", "unsloth", "unsloth_zoo"]


def test_without_a_gpu_or_tier_it_says_so_and_gives_no_advice():
    r = diagnose(None, GOOD)
    assert r.gpu is None and r.tier is None and r.advice == []
    assert "no NVIDIA GPU found" in r.notes[0] and "--gpu-tier" in r.notes[0]


def test_detected_gpu_picks_its_tier():
    t4 = HostGpu("Tesla T4", 15 * GiB, (7, 5), "535.1")
    r = diagnose(t4, GOOD)
    assert r.tier == "t4" and r.tier_source == "detected" and r.gpu["compute_capability"] == "7.5"
    assert r.capabilities["bf16"] is False and r.capabilities["fp8"] is False
    unknown = diagnose(HostGpu("NVIDIA RTX A2000", 6 * GiB, (8, 6)), GOOD)
    assert unknown.tier is None and "matches no known tier" in unknown.notes[0]


def _by_topic(report):
    return {a.topic: a for a in report.advice}


def test_t4_advice_is_fp16_no_fp8_and_backed_by_estimates():
    tier = get_tier("t4")
    r = diagnose(None, GOOD, tier=tier, tier_source="--gpu-tier", model="llama-3.1-8b", seq_len=1024)
    advice = _by_topic(r)
    assert "fp16" in advice["precision"].text and "7.5" in advice["precision"].evidence
    assert "No FP8" in advice["fp8"].text
    cfg = SHIPPED["llama-3.1-8b"].config_dict()
    for backend in ("hf", "unsloth"):
        e = estimate(cfg, backend, 1024, 1, dtype="float16", compute_capability=(7, 5))
        line = advice[f"fit ({backend})"]
        assert f"{e.total_bytes / GiB:.1f} GiB" in line.text and "fits" in line.text
        assert f"--backend {backend} --seq-len 1024" in line.evidence
    hf_max = max_fit_seq_len(cfg, "hf", 1, tier.usable_vram_bytes, multiple_of=256, dtype="float16",
                             compute_capability=(7, 5))
    assert f"hf {hf_max}" in advice["sequence length"].text
    for a in r.advice:
        assert a.evidence  # every line says what it rests on


def test_h100_and_24gb_advice():
    h100 = _by_topic(diagnose(None, GOOD, tier=get_tier("h100")))
    assert "bf16" in h100["precision"].text and "FP8 is available" in h100["fp8"].text
    a10g = _by_topic(diagnose(None, GOOD, tier=get_tier("a10g")))
    row = a10g["decision matrix: 7B LoRA on a 24 GB GPU"]
    assert "paged AdamW" in row.text and "GiB" in row.text
    assert "No FP8" in a10g["fp8"].text  # Ampere


def test_fallback_architecture_is_named():
    r = _by_topic(diagnose(None, GOOD, tier=get_tier("t4"), model="pythia-1b", seq_len=1024))
    assert "no hand-written Unsloth path" in r["backend"].text


def test_cli_doctor_without_gpu_and_for_a_tier():
    plain = run_bench("doctor")
    assert plain.returncode == 0, plain.stderr
    assert "no NVIDIA GPU found" in plain.stdout
    proc = run_bench("doctor", "--gpu-tier", "t4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tier"] == "t4" and data["capabilities"]["bf16"] is False
    assert data["versions"]["transformers"] and {"topic", "text", "evidence"} <= set(data["advice"][0])


@pytest.mark.parametrize("args, message", [
    (["--gpu-tier", "p100"], "unknown GPU tier"),
    (["--gpu-tier", "t4", "--model", "gpt-9"], "unknown model"),
    (["--gpu-tier", "t4", "--seq-len", "0"], "must be > 0"),
    (["--gpu-tier", "t4", "--batch-size", "0"], "must be > 0"),
])
def test_cli_doctor_bad_input_exits_2(args, message):
    proc = run_bench("doctor", *args)
    assert proc.returncode == 2 and message in proc.stderr

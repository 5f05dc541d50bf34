"""`bench doctor`: known-good library combinations, tier detection, and advice backed by estimates."""

from __future__ import annotations

import json

import pytest

from bench.analysis.doctor import EXTRA_MODULES, check_combo, diagnose, known_good_combos, recipe_availability
from bench.analysis.estimate import estimate_recipe, max_fit_seq_len
from bench.config.models import SHIPPED
from bench.config.recipes import DEFAULT_RECIPES, RECIPES
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
    fit = []
    for recipe in RECIPES:  # which recipes fit this card, one line each, from estimates
        e = estimate_recipe(cfg, recipe, 1024, 1, dtype="float16", compute_capability=(7, 5))
        line = advice[f"fit ({recipe})"]
        fits = e.total_bytes <= tier.usable_vram_bytes
        fit += [recipe] if fits else []
        assert f"{e.total_bytes / GiB:.1f} GiB" in line.text and ("- fits" if fits else "does NOT fit") in line.text
        assert f"--recipe {recipe} --seq-len 1024" in line.evidence
    assert fit and f"Predicted to fit at seq 1024, batch 1: {', '.join(fit)}." in advice["recipes"].text
    assert "hf-lora16" not in fit  # 16-bit weights of an 8B model do not fit a T4
    for recipe in DEFAULT_RECIPES:
        longest = max_fit_seq_len(cfg, recipe, 1, tier.usable_vram_bytes, multiple_of=64, dtype="float16",
                                  compute_capability=(7, 5))
        assert f"{recipe} {longest}" in advice["sequence length"].text
    for a in r.advice:
        assert a.evidence  # every line says what it rests on


def test_fp16_tier_warns_that_trl_casts_lora_to_bf16():
    t4 = _by_topic(diagnose(None, GOOD, tier=get_tier("t4"), seq_len=1024))
    warning = t4["precision (TRL recipes)"]
    assert "bf16" in warning.text and "hf-trl" in warning.text and "hf-liger" in warning.text
    assert "fp32" in warning.text and "no bf16 tensor cores" in warning.text and "float16" in warning.evidence
    assert "unsloth" not in warning.text  # Unsloth's trainer keeps the adapters in fp32
    assert "precision (TRL recipes)" not in _by_topic(diagnose(None, GOOD, tier=get_tier("a10g")))


def test_missing_recipe_libraries_name_their_extra():
    versions = dict(GOOD, unsloth=None, liger_kernel=None)
    by = {r["recipe"]: r for r in diagnose(None, versions).recipes}  # no tier needed
    assert set(by) == set(RECIPES)
    assert by["hf-liger"]["installed"] is False and by["hf-liger"]["install"] == 'pip install -e ".[liger]"'
    assert by["unsloth"]["install"] == by["unsloth-lora16"]["install"] == 'pip install -e ".[gpu]"'
    assert by["hf-kbit"]["installed"] is True and by["hf-kbit"]["install"] is None
    assert by["unsloth"]["needs_gpu"] and not by["hf-trl"]["needs_gpu"]  # no GPU on this host
    # A package doctor was not told about is unknown, not missing.
    assert {r["recipe"]: r["installed"] for r in recipe_availability(GOOD, True)}["hf-liger"] is None


def test_extra_modules_are_what_the_runner_checks():
    from bench.run.recipes import REQUIRES

    for extra, (module, pip_extra) in REQUIRES.items():
        assert EXTRA_MODULES[extra] == module and pip_extra == extra


def test_h100_and_24gb_advice():
    h100 = _by_topic(diagnose(None, GOOD, tier=get_tier("h100")))
    assert "bf16" in h100["precision"].text and "FP8 is available" in h100["fp8"].text
    a10g = _by_topic(diagnose(None, GOOD, tier=get_tier("a10g")))
    row = a10g["decision matrix: 7B LoRA on a 24 GB GPU"]
    assert "paged AdamW" in row.text and "GiB" in row.text
    assert "No FP8" in a10g["fp8"].text  # Ampere


def test_fallback_architecture_is_named():
    r = _by_topic(diagnose(None, GOOD, tier=get_tier("t4"), model="pythia-1b", seq_len=1024))
    assert "no hand-written Unsloth path" in r["recipe"].text


def test_cli_doctor_without_gpu_and_for_a_tier():
    plain = run_bench("doctor")
    assert plain.returncode == 0, plain.stderr
    assert "no NVIDIA GPU found" in plain.stdout
    proc = run_bench("doctor", "--gpu-tier", "t4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tier"] == "t4" and data["capabilities"]["bf16"] is False
    assert data["versions"]["transformers"] and {"topic", "text", "evidence"} <= set(data["advice"][0])
    assert [r["recipe"] for r in data["recipes"]] == list(RECIPES)
    assert "liger_kernel" in data["versions"]  # doctor reads the recipes' optional libraries too
    assert "fit (hf-trl)" in {a["topic"] for a in data["advice"]}


@pytest.mark.parametrize("args, message", [
    (["--gpu-tier", "p100"], "unknown GPU tier"),
    (["--gpu-tier", "t4", "--model", "gpt-9"], "unknown model"),
    (["--gpu-tier", "t4", "--seq-len", "0"], "must be > 0"),
    (["--gpu-tier", "t4", "--batch-size", "0"], "must be > 0"),
])
def test_cli_doctor_bad_input_exits_2(args, message):
    proc = run_bench("doctor", *args)
    assert proc.returncode == 2 and message in proc.stderr

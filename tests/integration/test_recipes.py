"""Recipes and drivers on the CPU, for real: tiny models built from a config, real bitsandbytes NF4, TRL's real
SFTTrainer and the suite's loop, through `bench run` subprocesses; data files in each form."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import pandas as pd
import pytest

from bench.config.models import SHIPPED
from bench.run.checkpoint import build_tokenizer
from bench.run.dataset import DataError, detect_form, format_example, load_tokenized
from bench.run.recipes import RecipeUnavailable, check_available
from bench.schema.pairs import pair_records, parity_for
from bench.schema.store import load
from tests.helpers import run_bench

CPU_RECIPES = "hf-trl,hf-kbit,hf-lora16"


def _run(tmp_path_factory, cache_dir, name, *args):
    out = tmp_path_factory.mktemp(name) / "r.jsonl"
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--out", str(out),
                     "--cache-dir", str(cache_dir), "--steps", "2", "--warmup-steps", "1", *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def trainer_run(three_recipe_run):
    """Every CPU recipe through TRL's SFTTrainer (the default driver), s32 at batch 1 and 2 (conftest)."""
    return three_recipe_run


@pytest.fixture(scope="session")
def loop_run(tmp_path_factory, cache_dir):
    """The same through the suite's plain loop."""
    return _run(tmp_path_factory, cache_dir, "loop", "--recipe", CPU_RECIPES, "--driver", "loop", "--seq-len", "32",
                "--batch-size", "1,2")


@pytest.mark.parametrize("which", ["trainer_run", "loop_run"])
def test_every_cpu_recipe_trains_and_the_recipes_match(which, request):
    out, proc = request.getfixturevalue(which)
    records = load([out], reference="hf-trl")
    assert sorted(r.recipe for r in records) == sorted(CPU_RECIPES.split(",") * 2)  # batch 1 and 2
    driver = "trainer" if which == "trainer_run" else "loop"
    for r in records:
        assert r.ok and r.driver == driver and len(r.losses) == len(r.step_s) == 3, (r.recipe, r.error)
        assert r.tokens_per_s > 0 and r.step_tokens == [32 * r.batch_size] * 3  # rows x 32 tokens, no padding
        fp = r.training_fingerprint
        assert fp["lora_scaling"] == 1.0 and fp["optimizer"]["bits"] == 8 and fp["lr_per_step"] == [2e-4] * 3
        assert fp["first_update_rms"] > 0
    by = {r.recipe: r for r in records}
    assert by["hf-trl"].quantization["bnb_4bit_quant_type"] == "nf4" and not by["hf-lora16"].quantization
    for p in pair_records(records, "hf-trl"):
        assert p.reference.recipe == "hf-trl" and p.comparable, p.parity_reasons()
    # the same weights and batches give the same first-step loss in every 4-bit recipe
    assert by["hf-kbit"].parity["loss_rel_diff"] <= 1e-3
    assert by["hf-lora16"].parity.get("precision_differs") is True  # 16-bit against NF4: no loss check
    assert "hf-trl" in proc.stdout and "against hf-trl" in proc.stdout


def test_trl_casts_lora_to_bf16_and_the_classic_recipe_keeps_fp32(trainer_run):
    by = {r.recipe: r for r in load([trainer_run[0]])}
    assert by["hf-trl"].backend_info["lora_dtype"] == "bfloat16"  # TRL 1.15 sft_trainer.py 871-880
    assert by["hf-trl"].backend_info["embedding_dtype"] == "float32"  # the load dtype on the CPU: no upcast
    assert by["hf-lora16"].backend_info["lora_dtype"] == "float32"  # not quantised: peft's fp32 adapters
    assert by["hf-kbit"].backend_info["gradient_checkpointing"].startswith("transformers")


def test_parity_sees_what_the_first_step_loss_cannot(trainer_run):
    """LoRA B starts at zero, so alpha, dropout, optimizer and lr leave step one's loss unchanged: the
    fingerprint read back from the live model and optimizer does not."""
    by = {r.recipe: r for r in load([trainer_run[0]])}
    ref, cand = by["hf-trl"], by["hf-kbit"]
    assert parity_for(ref, cand)["matched"]
    for change in ({"lora_scaling": 2.0}, {"lr_per_step": [1e-4] * 3}, {"first_update_rms": 10 * ref.training_fingerprint["first_update_rms"]},
                   {"optimizer": dict(ref.training_fingerprint["optimizer"], bits=32)}):
        other = replace(cand, training_fingerprint=dict(cand.training_fingerprint, **change))
        verdict = parity_for(ref, other)
        assert not verdict["matched"] and verdict["loss_rel_diff"] <= 1e-3, change


def test_loop_and_trainer_cells_are_not_compared(trainer_run, loop_run):
    records = load([trainer_run[0], loop_run[0]])
    for p in pair_records(records):
        assert p.reference is None or p.candidate is None or p.reference.driver == p.candidate.driver


# -- data -------------------------------------------------------------------------------------------------
def _alpaca(n=12):
    return [{"instruction": f"Add {i} and {i + 1}." + " More words." * (i % 5), "input": "",
             "output": f"The sum is {2 * i + 1}."} for i in range(n)]


def test_each_data_form_is_read_formatted_and_tokenized(tmp_path):
    tok = build_tokenizer(SHIPPED["tiny-llama"].config_dict())
    (tmp_path / "a.json").write_text(json.dumps(_alpaca()))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                                      {"role": "assistant", "content": "hello"}]})
                                                for i in range(6)))
    pd.DataFrame({"text": [f"plain text number {i}" for i in range(6)]}).to_parquet(tmp_path / "t.parquet")
    for name, form in (("a.json", "alpaca"), ("c.jsonl", "chat"), ("t.parquet", "text")):
        data = load_tokenized(tmp_path / name, tok, synthetic=True, vocab_size=512, seq_len=64, packing=False)
        assert data.info.form == form and data.info.examples == len(data.input_ids) > 0
        assert all(ids[-1] == tok.eos_token_id for ids, n in zip(data.input_ids, data.lengths) if n <= 64)
        assert max(max(ids) for ids in data.input_ids) < 512 and data.info.tokenizer.startswith("bpe-")
        assert data.info.token_length_p50 <= data.info.token_length_p90 <= data.info.token_length_max
    text = format_example(_alpaca()[0], "alpaca", "</s>")
    assert text.startswith("Below is an instruction") and "### Response:\nThe sum is 1.</s>" in text
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "?"}]))
    with pytest.raises(DataError, match="Alpaca"):
        detect_form(json.loads((tmp_path / "bad.json").read_text()))


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "alpaca.json"
    path.write_text(json.dumps(_alpaca(40)))
    return path


def test_data_runs_count_non_padding_tokens_and_packing_fills_rows(tmp_path_factory, cache_dir, data_file):
    padded, _ = _run(tmp_path_factory, cache_dir, "data", "--recipe", "hf-trl", "--data", str(data_file),
                     "--seq-len", "256", "--batch-size", "4")
    packed, _ = _run(tmp_path_factory, cache_dir, "packed", "--recipe", "hf-trl", "--data", str(data_file),
                     "--seq-len", "256", "--batch-size", "1", "--packing")
    r = load([padded])[0]
    assert r.data["form"] == "alpaca" and r.data["packing"] is False and r.data["sha256"]
    assert r.tokens_per_s < r.tokens_per_s_padded  # examples of different lengths are padded in a batch
    assert all(real <= 4 * 256 for real in r.step_tokens)
    p = load([packed])[0]
    assert p.data["packing"] is True and p.tokens_per_s == pytest.approx(p.tokens_per_s_padded)  # no padding
    assert min(p.step_tokens) > max(r.step_tokens) / 4  # a packed row holds several examples
    assert r.pair_key != p.pair_key  # packing is part of the configuration


def test_data_needs_the_trainer_driver_and_a_readable_file(tmp_path, data_file):
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--driver", "loop",
                     "--data", str(data_file), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "trainer driver" in proc.stderr
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama",
                     "--data", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


# -- recipes that cannot run here --------------------------------------------------------------------------
@pytest.mark.parametrize("recipe,extra", [("unsloth", "gpu"), ("hf-liger", "liger")])
def test_missing_library_names_the_extra(recipe, extra, tmp_path):
    module = {"gpu": "unsloth", "liger": "liger_kernel"}[extra]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(RecipeUnavailable, match=rf'pip install -e "\.\[{extra}\]"'):
        check_available(recipe, "cuda")
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--recipe", recipe,
                     "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "CUDA GPU" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3


def test_recipes_command_lists_every_recipe():
    proc = run_bench("recipes")
    assert proc.returncode == 0
    for name in ("hf-trl", "hf-kbit", "hf-liger", "unsloth", "hf-lora16", "unsloth-lora16"):
        assert name in proc.stdout

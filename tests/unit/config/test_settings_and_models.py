import json

import pytest

from bench.config.settings import Cell, ConfigError, RunConfig, TrainSettings, dominates, order_cells, parse_int_list
from bench.config.models import SHIPPED, ModelError, config_hash, resolve_model
from bench.run.checkpoint import build_tokenizer, ensure_synthetic_checkpoint, parameter_counts


def cell(recipe="hf-trl", seq=1024, bs=1, **train):
    return Cell(recipe, "llama-3.1-8b", "t4", "emulated", seq, bs, TrainSettings(**train), "float16",
                ("q_proj", "v_proj"))


def test_pair_key_shared_across_recipes_and_cell_id_differs():
    a, b, c = cell("hf-trl"), cell("unsloth"), cell("hf-kbit")
    assert a.pair_key == b.pair_key == c.pair_key and len({a.cell_id, b.cell_id, c.cell_id}) == 3
    assert cell(lora_r=64).pair_key != a.pair_key  # any training setting changes the key
    assert cell(driver="loop").pair_key != a.pair_key  # so do the driver and the data
    assert cell(data_path="x.json", data_sha256="ab", packing=True).pair_key != a.pair_key
    assert Cell.from_dict(a.to_dict()) == a
    assert (a.backend, b.backend) == ("hf", "unsloth")


def test_checkpointing_auto_per_recipe():
    assert cell("hf-trl").gradient_checkpointing == "standard"
    assert cell("hf-kbit").gradient_checkpointing == "standard"
    assert cell("unsloth").gradient_checkpointing == "unsloth"
    assert cell("unsloth", gradient_checkpointing="none").gradient_checkpointing == "none"


def test_order_smallest_memory_first_and_domination():
    cells = [cell(seq=2048, bs=2), cell(seq=1024, bs=2), cell(seq=2048, bs=1), cell(seq=1024, bs=1)]
    ordered = order_cells(cells)
    assert [(c.seq_len, c.batch_size) for c in ordered] == [(1024, 1), (1024, 2), (2048, 1), (2048, 2)]
    assert dominates(cell(seq=2048, bs=2), cell(seq=2048, bs=1))
    assert not dominates(cell(seq=1024, bs=2), cell(seq=2048, bs=1))
    assert not dominates(cell("unsloth", seq=4096), cell("hf-trl", seq=1024))


@pytest.mark.parametrize("changes,message", [
    ({"steps": 0}, "steps must be > 0"), ({"lora_r": -1}, "lora-r"), ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"warmup_steps": 0}, "warmup"), ({"lora_dropout": 1.5}, "dropout"),
])
def test_bad_train_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**changes).validate()


def test_bad_matrix():
    with pytest.raises(ConfigError, match="seq-len must be > 0"):
        RunConfig("t4", ["tiny-llama"], seq_lens=[0]).validate()
    with pytest.raises(ConfigError, match="unknown recipe"):
        RunConfig("t4", ["tiny-llama"], recipes=["vllm"]).validate()
    with pytest.raises(ConfigError, match="cannot train"):
        RunConfig("t4", ["tiny-llama"], seq_lens=[32, 1]).validate()
    with pytest.raises(ConfigError, match="not a whole number"):
        parse_int_list("1024,abc", "--seq-len")


def test_shipped_architectures_and_parameter_counts():
    names = set(SHIPPED)
    for required in ("llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b-v0.3", "qwen2.5-7b", "gemma-2-9b",
                     "phi-3-mini", "pythia-1b"):
        assert required in names
    assert not SHIPPED["pythia-1b"].unsloth_fast_path
    # the published sizes of the architectures the configs copy (in billions, rounded)
    assert round(parameter_counts(SHIPPED["llama-3.1-8b"].config_dict())["total"] / 1e9, 2) == 8.03
    assert round(parameter_counts(SHIPPED["mistral-7b-v0.3"].config_dict())["total"] / 1e9, 2) == 7.25


def test_resolve_model_kinds(tmp_path):
    assert resolve_model("tiny-llama").source == "synthetic"
    cfg = tmp_path / "my-arch.json"
    cfg.write_text(json.dumps(SHIPPED["tiny-llama"].config_dict()))
    assert resolve_model(str(cfg)).name == "my-arch"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(ckpt))
    (ckpt / "config.json").write_text(json.dumps(SHIPPED["tiny-llama"].config_dict()))
    assert resolve_model(str(ckpt)).source == "local"
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("no-such-model")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ModelError, match="not a transformers config"):
        resolve_model(str(tmp_path / "x.json"))


def test_synthetic_checkpoint_is_deterministic_cached_and_loadable(tmp_path):
    ref = resolve_model("tiny-llama")
    # what a build killed by the OS half-way leaves: a hidden temp folder, removed by the next build
    stale = tmp_path / "a" / "checkpoints" / f".tiny-llama-{config_hash(ref.config)}-killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    a, build_s = ensure_synthetic_checkpoint(ref, tmp_path / "a")
    b, _ = ensure_synthetic_checkpoint(ref, tmp_path / "b")
    assert build_s > 0 and a.name.endswith(config_hash(ref.config))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    again, again_s = ensure_synthetic_checkpoint(ref, tmp_path / "a")
    assert again == a and again_s == 0.0
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # no temp dir left

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a)
    assert len(tok) == model.config.vocab_size
    assert tok.pad_token_id not in (tok.eos_token_id, None)
    norm = model.model.norm.weight
    assert torch.all(norm == 1)
    std = model.model.layers[0].mlp.up_proj.weight.float().std().item()
    assert std == pytest.approx(0.02, rel=0.1)


def test_tokenizer_places_special_tokens_at_config_ids():
    tok = build_tokenizer(SHIPPED["llama-3.1-8b"].config_dict())
    assert len(tok) == 128256 and tok.bos_token_id == 128000 and tok.eos_token_id == 128001


def test_timed_window_settings_are_not_the_cells_identity():
    """--min-seconds and --max-steps say how long a cell is measured, not what it is: same pair_key; the
    minimum step count is identity (it was `steps`)."""
    a = cell()
    assert cell(min_seconds=0.0, max_steps=50).pair_key == a.pair_key
    assert cell(steps=a.train.steps + 1).pair_key != a.pair_key
    assert Cell.from_dict(cell(min_seconds=2.5, max_steps=40).to_dict()).train.min_seconds == 2.5
    assert TrainSettings(steps=3).max_timed_steps >= 3 and TrainSettings(steps=3, max_steps=3).max_timed_steps == 3
    assert TrainSettings(steps=10_000).max_timed_steps == 10_000  # a larger minimum raises the default bound
    for changes, match in (({"min_seconds": -1.0}, "min-seconds"), ({"steps": 5, "max_steps": 4}, "max-steps"),
                           ({"steps": 0}, "min-steps must be > 0")):
        with pytest.raises(ConfigError, match=match):
            TrainSettings(**changes).validate()
    with pytest.raises(ConfigError, match="repeats"):
        RunConfig("t4", ["tiny-llama"], repeats=0).validate()


def test_cpu_runs_keep_a_short_window_and_gpu_runs_the_default():
    from bench.config.request import CPU_TIMED_WINDOW, RunRequest, to_config

    cpu = to_config(RunRequest(tier="t4", device="cpu")).train
    gpu = to_config(RunRequest(tier="t4")).train
    assert (cpu.steps, cpu.min_seconds) == (CPU_TIMED_WINDOW["steps"], 0.0)
    assert (gpu.steps, gpu.min_seconds) == (TrainSettings().steps, TrainSettings().min_seconds)
    assert gpu.min_seconds > 0 and gpu.steps > cpu.steps
    given = to_config(RunRequest(tier="t4", device="cpu", train={"steps": 7, "min_seconds": 1.5})).train
    assert (given.steps, given.min_seconds) == (7, 1.5)  # what the user gives wins on either device

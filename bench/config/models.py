"""Shipped architectures, model resolution, and synthetic random-weight checkpoints.

Speed and memory depend on shapes, not weight values, so by default the suite builds a
checkpoint with random weights from a shipped `config.json` (fixed seed, cached on disk keyed
by the config's hash) with a generated word-level tokenizer. `--model` also takes a local
checkpoint directory, a path to a config.json (synthetic weights for a custom shape), or a hub id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

CONFIG_DIR = Path(__file__).parent / "architectures"
SYNTHETIC_SEED = 20261123
SHARD_BYTES = 4 * 1024**3

# LoRA targets per model_type: every attention and MLP projection, as the articles' recipes use.
TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


#: model_types Unsloth has a hand-written model file for (unsloth 2026.10.9: unsloth/models/llama.py,
#: mistral.py, qwen2.py, qwen3.py, gemma.py, gemma2.py, cohere.py, granite.py, falcon_h1.py, llama4.py,
#: qwen3_moe.py, glm4_moe.py). Any other architecture (phi3, gpt_neox, ...) takes Unsloth's generic
#: compiled path (`FastModel`), with fewer of its fused kernels: kernels_check shows which ran.
UNSLOTH_FAST_PATH_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "cohere",
                                           "granite", "falcon_h1", "llama4", "qwen3_moe", "glm4_moe"})


def unsloth_fast_path(model_type: str) -> bool:
    """True where Unsloth ships a hand-written model file for `model_type` (UNSLOTH_FAST_PATH_MODEL_TYPES)."""
    return model_type in UNSLOTH_FAST_PATH_MODEL_TYPES


class ModelError(ValueError):
    """An unknown or unusable model (CLI exit code 2)."""


@dataclass(frozen=True)
class ShippedModel:
    name: str
    mirrors: str  # the public checkpoint whose architecture the config copies
    note: str = ""

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.name}.json"

    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    @property
    def unsloth_fast_path(self) -> bool:
        """Unsloth has a hand-written model file for this architecture (`unsloth_fast_path`)."""
        return unsloth_fast_path(self.config_dict().get("model_type", ""))


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in [
        ShippedModel("llama-3.1-8b", "meta-llama/Llama-3.1-8B"),
        ShippedModel("llama-3.2-1b", "meta-llama/Llama-3.2-1B"),
        ShippedModel("llama-3.2-3b", "meta-llama/Llama-3.2-3B"),
        ShippedModel("mistral-7b-v0.3", "mistralai/Mistral-7B-v0.3"),
        ShippedModel("qwen2.5-7b", "Qwen/Qwen2.5-7B"),
        ShippedModel("gemma-2-9b", "google/gemma-2-9b"),
        ShippedModel("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct",
                     "fused qkv_proj / gate_up_proj as Microsoft ships it: no hand-written Unsloth model file "
                     "for phi3, so Unsloth takes its generic compiled path (see reports/kernels.md)"),
        ShippedModel("pythia-1b", "EleutherAI/pythia-1b",
                     "GPT-NeoX: no hand-written Unsloth path (fallback architecture)"),
        ShippedModel("tiny-llama", "(test model: 2 layers, hidden 64)", "for CPU smoke runs and tests"),
    ]
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model` argument."""

    name: str  # what records call it
    source: str  # "synthetic" | "local" | "hub"
    config: dict[str, Any]  # config.json contents (for hub ids, fetched lazily; may be {})
    path: Optional[str] = None  # local checkpoint dir, or None until the synthetic one is built

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def max_positions(self) -> Optional[int]:
        return self.config.get("max_position_embeddings")

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def target_modules(self) -> tuple[str, ...]:
        try:
            return TARGET_MODULES[self.model_type]
        except KeyError:
            raise ModelError(
                f"no default LoRA target modules for model_type {self.model_type!r}; pass --target-modules"
            ) from None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def resolve_model(spec: str, trust_remote_code: bool = False) -> ModelRef:
    """Turn a `--model` value into a ModelRef (shipped name, config file, local dir or hub id)."""
    if spec in SHIPPED:
        return ModelRef(spec, "synthetic", SHIPPED[spec].config_dict())
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model config {path}: {exc}") from exc
        if "model_type" not in config or "vocab_size" not in config:
            raise ModelError(f"{path} is not a transformers config.json (needs model_type and vocab_size)")
        return ModelRef(path.stem, "synthetic", config)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ModelError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
        return ModelRef(str(path), "local", json.loads(cfg_file.read_text()), str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
            return ModelRef(spec, "hub", cfg.to_dict(), spec)
        except Exception as exc:  # offline, gated, misspelt
            raise ModelError(
                f"cannot load hub model {spec!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                f"Offline? Shipped architectures: {', '.join(SHIPPED)}"
            ) from exc
    raise ModelError(
        f"unknown model {spec!r}: not a shipped architecture ({', '.join(SHIPPED)}), "
        f"a config .json, a checkpoint directory or a hub id (org/name)"
    )


def default_cache_dir() -> Path:
    env = os.environ.get("QLORA_BENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qlora-bench"


def synthetic_checkpoint_dir(ref: ModelRef, cache_dir: Optional[Path] = None) -> Path:
    return (cache_dir or default_cache_dir()) / "checkpoints" / f"{ref.name}-{config_hash(ref.config)}"


def _is_ones_param(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 1 and ("norm" in name or name.endswith("ln_f.weight") or "layernorm" in name)


def ensure_synthetic_checkpoint(
    ref: ModelRef,
    cache_dir: Optional[Path] = None,
    device: str = "cpu",
    progress: Optional[Callable[[str], None]] = None,
) -> tuple[Path, float]:
    """Build (once) the random-weight checkpoint for `ref`; return its directory and build seconds.

    Weights are N(0, initializer_range) for matrices, ones for norm scales, zeros for biases,
    drawn per tensor from a generator seeded by the tensor name. Generation runs on `device`
    (a GPU makes an 8B checkpoint in seconds; writing it dominates). The directory appears
    atomically, so a crash mid-write leaves no half checkpoint behind.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    target = synthetic_checkpoint_dir(ref, cache_dir)
    if (target / "config.json").is_file():
        return target, 0.0
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        cfg_dict = dict(ref.config)
        model_type = cfg_dict.pop("model_type")
        config = AutoConfig.for_model(model_type, **cfg_dict)
        with torch.device("meta"):
            meta_model = AutoModelForCausalLM.from_config(config)
        params = list(meta_model.named_parameters())  # tied weights appear once
        std = float(getattr(config, "initializer_range", 0.02))
        dtype = torch.bfloat16
        shards: list[dict[str, Any]] = [{}]
        shard_bytes = 0
        weight_map = {}
        total = 0
        for i, (name, p) in enumerate(params):
            shape = tuple(p.shape)
            if _is_ones_param(name, shape):
                t = torch.ones(shape, dtype=dtype)
            elif name.endswith("bias"):
                t = torch.zeros(shape, dtype=dtype)
            else:
                gen = torch.Generator(device=device).manual_seed(SYNTHETIC_SEED + zlib.crc32(name.encode()))
                t = torch.empty(shape, dtype=torch.float32 if device == "cpu" else dtype, device=device)
                t.normal_(0.0, std, generator=gen)
                t = t.to(dtype).cpu()
            nbytes = t.numel() * t.element_size()
            if shard_bytes and shard_bytes + nbytes > SHARD_BYTES:
                shards.append({})
                shard_bytes = 0
            shards[-1][name] = t.contiguous()
            shard_bytes += nbytes
            total += nbytes
            if progress and i % 16 == 0:
                progress(f"synthetic weights {i + 1}/{len(params)}")
        n = len(shards)
        for k, shard in enumerate(shards, 1):
            fname = "model.safetensors" if n == 1 else f"model-{k:05d}-of-{n:05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            for name in shard:
                weight_map[name] = fname
            if progress:
                progress(f"wrote shard {k}/{n}")
        if n > 1:
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
            )
        config.dtype = "bfloat16"
        config.save_pretrained(tmp)
        build_tokenizer(ref.config).save_pretrained(tmp)
        (tmp / "SYNTHETIC.json").write_text(
            json.dumps(
                {"synthetic": True, "seed": SYNTHETIC_SEED, "config_hash": config_hash(ref.config),
                 "generator_device": device, "source_config": ref.name},
                indent=1,
            )
        )
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, time.perf_counter() - started


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def build_tokenizer(config: dict[str, Any]):
    """A word-level fast tokenizer whose vocabulary matches `config` exactly.

    Token i is "<t{i}>" except the config's bos / eos / pad ids, which carry the special tokens.
    Training batches are token ids, so only the tokenizer's shape and special tokens matter.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_size = int(config["vocab_size"])
    bos = _as_int(config.get("bos_token_id"))
    eos = _as_int(config.get("eos_token_id"))
    pad = _as_int(config.get("pad_token_id"))
    bos = 1 if bos is None else bos
    eos = 2 if eos is None else eos
    if pad is None or pad == eos or pad == bos:
        pad = vocab_size - 1
    unk = 0 if 0 not in (bos, eos, pad) else 3
    special = {bos: "<s>", eos: "</s>", pad: "<pad>", unk: "<unk>"}
    vocab = {special.get(i, f"<t{i}>"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=int(config.get("max_position_embeddings") or 4096),
    )
    return fast


def parameter_counts(config: dict[str, Any]) -> dict[str, int]:
    """Parameter counts of an architecture, from a meta-device instance (no memory used).

    `matmul` counts the weights that take part in a matrix product per token: every Linear in
    the decoder plus lm_head (the embedding lookup is not a product; a tied lm_head counts once).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(config)
    config_obj = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_obj)
    total = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return {"total": int(total), "matmul": int(matmul)}

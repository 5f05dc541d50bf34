"""Synthetic random-weight checkpoints built from a config (cached on disk, keyed by the config's
hash), their generated tokenizer, and parameter counts of a real transformers instance.

Speed and memory depend on shapes, not weight values: the checkpoint has N(0, initializer_range)
matrices from a fixed seed and a word-level tokenizer of the config's vocabulary.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Optional

from bench.config.models import ModelRef, config_hash
from bench.units import GiB

SYNTHETIC_SEED = 20261123
SHARD_BYTES = 4 * GiB


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
    (a GPU makes an 8B checkpoint in seconds; writing it dominates). The checkpoint is written into
    a hidden folder and renamed into place, under a lock: a build killed half-way (out of host
    memory, say) leaves no half checkpoint, the next build removes its leftovers, and two processes
    never write the same checkpoint at once (the second waits, then finds it built).
    """
    target = synthetic_checkpoint_dir(ref, cache_dir)
    if (target / "config.json").is_file():
        return target, 0.0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():  # built by another process while this one waited
            return target, 0.0
        for stale in target.parent.glob(f".{target.name}-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _write_checkpoint(ref, tmp, device, progress)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target, time.perf_counter() - started


def _write_checkpoint(ref: ModelRef, folder: Path, device: str, progress: Optional[Callable[[str], None]]) -> None:
    """The checkpoint's files (sharded safetensors, config, tokenizer, SYNTHETIC.json) into `folder`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(ref.config)
    config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    with torch.device("meta"):
        params = list(AutoModelForCausalLM.from_config(config).named_parameters())  # tied weights appear once
    std = float(getattr(config, "initializer_range", 0.02))
    shards: list[dict[str, Any]] = [{}]
    shard_bytes = total = 0
    for i, (name, p) in enumerate(params):
        t = _synthetic_tensor(name, tuple(p.shape), std, device)
        nbytes = t.numel() * t.element_size()
        if shard_bytes and shard_bytes + nbytes > SHARD_BYTES:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = t.contiguous()
        shard_bytes += nbytes
        total += nbytes
        if progress and i % 16 == 0:
            progress(f"synthetic weights {i + 1}/{len(params)}")
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
        if progress:
            progress(f"wrote shard {k}/{len(shards)}")
    if len(shards) > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.dtype = "bfloat16"
    config.save_pretrained(folder)
    build_tokenizer(ref.config).save_pretrained(folder)
    (folder / "SYNTHETIC.json").write_text(json.dumps(
        {"synthetic": True, "seed": SYNTHETIC_SEED, "config_hash": config_hash(ref.config),
         "generator_device": device, "source_config": ref.name}, indent=1))


def _synthetic_tensor(name: str, shape: tuple[int, ...], std: float, device: str):
    """One bf16 tensor: ones for norm scales, zeros for biases, else N(0, std) from a per-name seed."""
    import torch

    dtype = torch.bfloat16
    if _is_ones_param(name, shape):
        return torch.ones(shape, dtype=dtype)
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(SYNTHETIC_SEED + zlib.crc32(name.encode()))
    t = torch.empty(shape, dtype=torch.float32 if device == "cpu" else dtype, device=device)
    t.normal_(0.0, std, generator=gen)
    return t.to(dtype).cpu()


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
    the decoder plus lm_head (the embedding lookup is not a product; a tied lm_head counts once);
    `head` is lm_head's share of it (not recomputed by gradient checkpointing).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(config)
    config_obj = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_obj)
    total = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head = model.get_output_embeddings()
    head_params = head.weight.numel() if isinstance(head, torch.nn.Linear) else 0
    return {"total": int(total), "matmul": int(matmul), "head": int(head_params)}

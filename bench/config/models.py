"""Shipped architectures (configs under bench/config/architectures/) and model resolution.

Speed and memory depend on shapes, not weight values, so by default the suite builds a checkpoint
with random weights from a shipped `config.json` (bench.run.checkpoint). `--model` also takes a
local checkpoint directory, a path to a config.json (synthetic weights for a custom shape), or a
hub id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CONFIG_DIR = Path(__file__).parent / "architectures"

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

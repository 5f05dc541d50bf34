"""What every recipe shares: its settings, what it hands back, and what is read back from a loaded model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RecipeSettings:
    """Everything a recipe needs to load; identical across the recipes of one configuration except
    `checkpointing` (the recipe's own under "auto")."""

    dtype: str  # "bfloat16" | "float16" | "float32"
    device: str  # "cuda" | "cpu"
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    checkpointing: str  # "none" | "standard" | "unsloth"
    max_seq_len: int
    seed: int
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    trainable_params: int
    total_params: int
    quantization: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model, tokenizer, info: dict[str, Any]) -> "LoadedModel":
        """A recipe's built model, its parameters counted and its quantization read back (every recipe's
        last step); `info` is what the recipe reports besides (4-bit modules, dtypes, checkpointing)."""
        trainable, total = count_params(model)
        return cls(model=model, tokenizer=tokenizer, trainable_params=trainable, total_params=total,
                   quantization=quantization_summary(model), info=info)


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if hasattr(p, "quant_state") or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored uint8
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def quantization_summary(model) -> dict[str, Any]:
    """The bitsandbytes settings read back from the loaded model, for the parity check."""
    q = getattr(getattr(model, "config", None), "quantization_config", None)
    if q is None:
        return {}
    d = q.to_dict() if hasattr(q, "to_dict") else dict(q)
    keys = ("quant_method", "load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
            "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "llm_int8_skip_modules")
    return {k: d.get(k) for k in keys if k in d}


def count_4bit_linears(model) -> int:
    """bitsandbytes 4-bit linears (peft's LoRA wrapper of the same class name is not counted)."""
    return sum(1 for m in model.modules()
               if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes"))

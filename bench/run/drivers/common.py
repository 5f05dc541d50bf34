"""What both drivers share: what to train, what comes back, the synthetic batches, and the training
fingerprint read back from the live model and optimizer (parity beyond the first-step loss)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


@dataclass(frozen=True)
class TrainSpec:
    """One cell's training: sizes, steps and optimizer (the recipe's model is loaded already)."""

    device: str  # "cuda" | "cpu"
    dtype: str  # "bfloat16" | "float16" | "float32"
    optimizer: str  # bench.config.settings.OPTIMIZERS
    learning_rate: float
    seed: int
    batch_size: int
    seq_len: int
    grad_accum: int
    total_steps: int  # warm-up + the timed window's minimum optimizer steps
    vocab_size: int
    checkpointing: str  # "none" | "standard" | "unsloth"
    recipe: str
    rows: Optional[list[list[int]]] = None  # --data token ids (one list per example); None: synthetic batches
    packing: bool = False
    # the timed window (see `window_done`): it starts after `warmup_steps` and runs on past total_steps
    # until its steps took `min_seconds`, but never past `max_steps` in all (None: total_steps)
    warmup_steps: int = 0
    min_seconds: float = 0.0
    max_steps: Optional[int] = None

    @property
    def step_limit(self) -> int:
        """The most optimizer steps the cell runs, warm-up included."""
        return max(self.total_steps, self.max_steps or 0)

    def window_done(self, step_s: list[float]) -> bool:
        """True once the steps timed so far (`step_s`, warm-up first) close the window: at least
        `total_steps` and `min_seconds` of timed steps, or `step_limit` steps whatever their time."""
        if len(step_s) >= self.step_limit:
            return True
        return len(step_s) >= self.total_steps and sum(step_s[self.warmup_steps:]) >= self.min_seconds


@dataclass
class TrainResult:
    step_s: list[float] = field(default_factory=list)  # every optimizer step, synchronised with the device
    losses: list[float] = field(default_factory=list)  # one per optimizer step (mean over its micro-batches)
    step_tokens: list[int] = field(default_factory=list)  # non-padding tokens per optimizer step
    step_tokens_padded: list[int] = field(default_factory=list)  # tokens per step, padding included
    fingerprint: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


StepCallback = Callable[[int, float, float], None]  # (step index, seconds, loss)


def synthetic_batch(seed: int, step: int, micro: int, batch_size: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """Token ids for one micro-batch, identical in every process for the same arguments (CPU RNG)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + micro)
    return torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)


def synthetic_rows(spec: TrainSpec) -> list[list[int]]:
    """The synthetic batches of every step as dataset rows, in the order a sequential sampler reads them:
    step by step, micro-batch by micro-batch (the same ids the loop driver trains on)."""
    rows: list[list[int]] = []
    for step in range(spec.total_steps):
        for micro in range(spec.grad_accum):
            rows += synthetic_batch(spec.seed, step, micro, spec.batch_size, spec.seq_len, spec.vocab_size).tolist()
    return rows


def snapshot_trainable(model) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable (LoRA) weights, so every cell starts from the same adapter."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in snapshot:
                p.copy_(snapshot[n])


def update_rms(model, before: dict[str, torch.Tensor]) -> Optional[float]:
    """Root mean square of (trainable weights now - `before`), over every trainable element, computed on
    the CPU one tensor at a time (no device memory). After Adam's first step it is about the learning
    rate times the share of weights that had a gradient: it sees lr and optimizer differences."""
    total, count = 0.0, 0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in before:
                diff = p.detach().float().cpu() - before[n].float()
                total += float(diff.pow(2).sum())
                count += diff.numel()
    return math.sqrt(total / count) if count else None


def lora_fingerprint(model) -> dict[str, Any]:
    """LoRA scaling (alpha / r) and dropout as the peft layers hold them."""
    for module in model.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and scaling and hasattr(module, "lora_dropout"):
            adapter = next(iter(scaling))
            dropout = module.lora_dropout[adapter]
            return {"lora_scaling": float(scaling[adapter]),
                    "lora_dropout": float(getattr(dropout, "p", 0.0))}
    return {}


def optimizer_fingerprint(optimizer) -> dict[str, Any]:
    """The optimizer that really ran: kind, state bits and hyperparameters of its first group."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch / bnb optimizer
    group = inner.param_groups[0]
    bits = getattr(getattr(inner, "args", None), "optim_bits", None) or 32
    kind = "adamw" if "adam" in type(inner).__name__.lower() else type(inner).__name__.lower()
    betas = group.get("betas")
    return {"optimizer": {"kind": kind, "bits": int(bits), "library": type(inner).__module__.split(".")[0],
                          "betas": [float(b) for b in betas] if betas else None, "eps": float(group.get("eps", 0)),
                          "weight_decay": float(group.get("weight_decay", 0.0))}}


def tokens_of(batch: dict) -> tuple[int, int]:
    """(non-padding tokens, tokens including padding) of one collated micro-batch."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    real = int(mask.sum()) if mask is not None else int(ids.numel())
    return real, int(ids.numel())

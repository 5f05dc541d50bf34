"""The training loop both backends run, read top to bottom: same batches, same optimizer, same steps."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from bench.run.device import StepTimer


def synthetic_batch(seed: int, step: int, micro: int, batch_size: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """Token ids for one micro-batch, identical in every process for the same arguments (CPU RNG)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + micro)
    return torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)


def make_optimizer(name: str, params, lr: float):
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    import bitsandbytes as bnb

    cls = {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
           "paged_adamw_32bit": bnb.optim.PagedAdamW32bit}[name]
    return cls(params, lr=lr, weight_decay=0.0)


def attach_scaler(model, scaler) -> None:
    """Hand the GradScaler to every wrapper level, as the HF/Unsloth trainers do.

    Unsloth's fused cross-entropy computes d(loss)/d(hidden) inside the forward and reads
    `accelerator_scaler` there; without it fp16 gradients underflow. Plain HF ignores it.
    """
    current, seen = model, set()
    while isinstance(current, torch.nn.Module) and id(current) not in seen:
        seen.add(id(current))
        current.accelerator_scaler = scaler
        current = next((getattr(current, a) for a in ("base_model", "model")
                        if isinstance(getattr(current, a, None), torch.nn.Module)), None)


@dataclass
class TrainResult:
    step_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def snapshot_trainable(model) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable (LoRA) weights, so every cell starts from the same adapter."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in snapshot:
                p.copy_(snapshot[n])


def train_steps(
    model,
    *,
    device: str,
    dtype: str,
    optimizer_name: str,
    learning_rate: float,
    seed: int,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    total_steps: int,
    vocab_size: int,
    on_step: Optional[Callable[[int, float, float], None]] = None,
) -> TrainResult:
    """Run `total_steps` optimizer steps; time each one, synchronised with the device."""
    torch_dtype = getattr(torch, dtype)
    on_cuda = device == "cuda"
    autocast = (
        torch.autocast(device_type=device, dtype=torch_dtype)
        if torch_dtype in (torch.float16, torch.bfloat16)
        else contextlib.nullcontext()
    )
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler("cuda") if on_cuda and torch_dtype == torch.float16 else None
    if scaler is not None:
        for p in params:  # fp16 gradients cannot be unscaled; LoRA weights train in fp32, as peft does
            if p.dtype != torch.float32:
                p.data = p.data.float()
        attach_scaler(model, scaler)
    optimizer = make_optimizer(optimizer_name, params, learning_rate)
    sync = torch.cuda.synchronize if on_cuda else None
    result = TrainResult()
    model.train()
    try:
        for step in range(total_steps):
            with StepTimer(sync) as timer:
                step_loss = torch.zeros((), device=device)
                for micro in range(grad_accum):
                    ids = synthetic_batch(seed, step, micro, batch_size, seq_len, vocab_size).to(device)
                    with autocast:
                        loss = model(input_ids=ids, labels=ids).loss / grad_accum
                    (scaler.scale(loss) if scaler else loss).backward()
                    step_loss += loss.detach().float()
                    del loss, ids
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_value = float(step_loss.item())
            result.step_s.append(timer.seconds)
            result.losses.append(loss_value)
            if on_step:
                on_step(step, timer.seconds, loss_value)
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer, scaler
    return result

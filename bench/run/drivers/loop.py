"""The loop driver (--driver loop): the suite's own plain training loop, read top to bottom, the same for
every recipe: same synthetic batches, same optimizer, same steps, minimal overhead. For controlled
experiments; users train through a trainer (bench.run.drivers.trainer).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from bench.run.device import StepTimer
from bench.run.drivers.common import (StepCallback, TrainResult, TrainSpec, lora_fingerprint, optimizer_fingerprint,
                                      synthetic_batch, update_rms)


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


def train_loop(model, spec: TrainSpec, initial: Optional[dict] = None,
               on_step: Optional[StepCallback] = None) -> TrainResult:
    """Run optimizer steps until the timed window closes (`spec.window_done`: at least `spec.total_steps`);
    time each one, synchronised with the device.

    `initial`: the trainable weights before step one (CPU), for the first update's size in the
    fingerprint."""
    torch_dtype = getattr(torch, spec.dtype)
    on_cuda = spec.device == "cuda"
    autocast = (torch.autocast(device_type=spec.device, dtype=torch_dtype)
                if torch_dtype in (torch.float16, torch.bfloat16) else contextlib.nullcontext())
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler("cuda") if on_cuda and torch_dtype == torch.float16 else None
    if scaler is not None:
        for p in params:  # fp16 gradients cannot be unscaled; LoRA weights train in fp32, as peft does
            if p.dtype != torch.float32:
                p.data = p.data.float()
        attach_scaler(model, scaler)
    optimizer = make_optimizer(spec.optimizer, params, spec.learning_rate)
    sync = torch.cuda.synchronize if on_cuda else None
    tokens = spec.batch_size * spec.seq_len * spec.grad_accum
    result = TrainResult(fingerprint={**lora_fingerprint(model), **optimizer_fingerprint(optimizer)})
    model.train()
    try:
        while not spec.window_done(result.step_s):
            step = len(result.step_s)
            with StepTimer(sync) as timer:
                loss_value = _one_step(model, spec, step, optimizer, scaler, autocast)
            result.step_s.append(timer.seconds)
            result.losses.append(loss_value)
            result.step_tokens.append(tokens)
            result.step_tokens_padded.append(tokens)
            if step == 0 and initial is not None:
                result.fingerprint["first_update_rms"] = update_rms(model, initial)
            if on_step:
                on_step(step, timer.seconds, loss_value)
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer, scaler
    result.fingerprint["lr_per_step"] = [spec.learning_rate] * len(result.step_s)
    return result


def _one_step(model, spec: TrainSpec, step: int, optimizer, scaler, autocast) -> float:
    """One optimizer step over `spec.grad_accum` micro-batches; the step's mean loss."""
    step_loss = torch.zeros((), device=spec.device)
    for micro in range(spec.grad_accum):
        ids = synthetic_batch(spec.seed, step, micro, spec.batch_size, spec.seq_len, spec.vocab_size).to(spec.device)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss / spec.grad_accum
        (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.detach().float()
        del loss, ids
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(step_loss.item())

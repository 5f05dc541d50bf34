"""The trainer driver (--driver trainer, the default): TRL's SFTTrainer, as users run it.

Each cell builds an SFTTrainer on the recipe's model (in an Unsloth worker `trl.SFTTrainer` is
Unsloth's generated subclass: `import unsloth` rebinds it) and trains on pre-tokenized rows read in
order, so every recipe sees the same token ids: the synthetic batches of the loop driver (for the
window's minimum steps), or the --data examples. The timed window is open-ended (TrainSpec.window_done):
`max_steps` is its upper bound (TrainSpec.step_limit) and the timing callback stops training once the
window closes. Steps past the rows start another epoch over the same rows in the same order (the
sampler is sequential), so a data file too short for the window still trains; the learning rate is
constant without warm-up, so the upper bound changes no step's learning rate. Settings every recipe shares, chosen so that cells compare
(TRL 1.15 / transformers 5; docs/notes/recipes-research.md): a constant learning rate without warm-up,
no weight decay, `logging_steps=1`, no checkpoint saving, `max_length=None` (rows are cut to the
cell's seq_len before), sequential sampling, NaN losses logged as NaN. Everything else is the
library's default: TRL's fused LM-head loss and its per-step metrics, gradient clipping at 1.0.

A callback times each optimizer step between `on_step_begin` and `on_step_end`, synchronised with the
device (forward, backward, clipping, optimizer step; not data loading), reads the learning rate the
optimizer used, and takes the logged loss of every step. A wrapper around the data collator counts
the non-padding tokens of each micro-batch, in order, and the callback notes how many micro-batches
each step trained (fewer in an epoch's last step), so tokens/s counts real tokens.

CPU only: TRL 1.15's fused LM head needs Triton, so on the CPU the loss is the model's own
(transformers.Trainer.compute_loss); everything else is TRL's.
"""

from __future__ import annotations

import tempfile
import time
from typing import Callable, Optional

import torch

from bench.run.drivers.common import (StepCallback, TrainResult, TrainSpec, lora_fingerprint, optimizer_fingerprint,
                                      synthetic_rows, tokens_of, update_rms)

OPTIM = {"adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit", "adamw_torch": "adamw_torch",
         "paged_adamw_32bit": "paged_adamw_32bit"}


class CountingCollator:
    """Wraps a data collator; records (non-padding, padded) tokens of every micro-batch it builds."""

    def __init__(self, collate):
        self.collate = collate
        self.counts: list[tuple[int, int]] = []

    def __call__(self, examples):
        batch = self.collate(examples)
        self.counts.append(tokens_of(batch))
        return batch


def sft_config(spec: TrainSpec, output_dir: str):
    """The SFTConfig of a cell (see the module docstring for what is set and why)."""
    from trl import SFTConfig

    on_cuda = spec.device == "cuda"
    unsloth = spec.recipe.startswith("unsloth")
    kwargs = dict(
        output_dir=output_dir, max_steps=spec.step_limit, per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum, learning_rate=spec.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim=OPTIM[spec.optimizer],
        seed=spec.seed, data_seed=spec.seed, logging_steps=1, logging_nan_inf_filter=False, save_strategy="no",
        report_to="none", disable_tqdm=True, max_length=spec.seq_len if spec.packing else None,
        packing=spec.packing, padding_free=spec.packing, train_sampling_strategy="sequential",
        dataloader_num_workers=0, use_cpu=not on_cuda, bf16=on_cuda and spec.dtype == "bfloat16",
        fp16=on_cuda and spec.dtype == "float16", use_liger_kernel=spec.recipe == "hf-liger",
    )
    if unsloth:
        kwargs["torch_empty_cache_steps"] = None  # Unsloth's default (250) empties the cache in step one
    else:
        kwargs["gradient_checkpointing"] = spec.checkpointing != "none"
    return SFTConfig(**kwargs)


def _trainer_class(on_cuda: bool):
    from trl import SFTTrainer

    if on_cuda:
        return SFTTrainer

    class CpuSFTTrainer(SFTTrainer):
        """TRL's trainer with the model's own loss: TRL's fused LM head needs Triton (CUDA)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import transformers

            return transformers.Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                                     num_items_in_batch=num_items_in_batch)

    return CpuSFTTrainer


def _probe(spec: TrainSpec, model, initial: Optional[dict], on_step: Optional[StepCallback], result: TrainResult,
           micro_batches: list[int], trainer_of: Callable[[], object]):
    """The callback that times steps, reads losses and learning rates into `result`, and ends training when
    the timed window closes."""
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if spec.device == "cuda" else (lambda: None)

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            if optimizer is not None:
                result.fingerprint.setdefault("lr_per_step", []).append(float(optimizer.param_groups[0]["lr"]))
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            result.step_s.append(time.perf_counter() - self.t0)
            # the micro-batches this step trained: grad_accum, fewer in an epoch's last step
            micro_batches.append(getattr(trainer_of(), "current_gradient_accumulation_steps", spec.grad_accum))
            if len(result.step_s) == 1 and initial is not None:
                result.fingerprint["first_update_rms"] = update_rms(model, initial)
            if spec.window_done(result.step_s):
                control.should_training_stop = True  # this step is still logged (on_log) before the loop ends

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and len(result.losses) < len(result.step_s):
                result.losses.append(float(logs["loss"]))
                if on_step:
                    on_step(len(result.losses) - 1, result.step_s[-1], result.losses[-1])

    return Probe()


def train_trainer(model, tokenizer, spec: TrainSpec, initial: Optional[dict] = None,
                  on_step: Optional[StepCallback] = None) -> TrainResult:
    """Train one cell through SFTTrainer; the result has the same fields as the loop driver's."""
    from datasets import Dataset

    rows = spec.rows if spec.rows is not None else synthetic_rows(spec)
    result = TrainResult(fingerprint=lora_fingerprint(model))
    micro_batches: list[int] = []
    with tempfile.TemporaryDirectory(prefix="qlora-bench-sft-") as out:
        probe = _probe(spec, model, initial, on_step, result, micro_batches, lambda: trainer)
        trainer = _trainer_class(spec.device == "cuda")(
            model=model, args=sft_config(spec, out), train_dataset=Dataset.from_dict({"input_ids": rows}),
            processing_class=tokenizer, callbacks=[probe])
        _fp16_adapters(trainer.model, spec, result)
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        try:
            trainer.train()
            result.fingerprint.update(optimizer_fingerprint(trainer.optimizer))
        finally:
            trainer.optimizer = trainer.lr_scheduler = None
            model.zero_grad(set_to_none=True)
            del trainer
    start = 0  # micro-batches are collated in the order they are trained (one ahead at most)
    for n in micro_batches:
        chunk = counter.counts[start:start + n]
        start += n
        result.step_tokens.append(sum(c[0] for c in chunk))
        result.step_tokens_padded.append(sum(c[1] for c in chunk))
    return result


def _fp16_adapters(model, spec: TrainSpec, result: TrainResult) -> None:
    """TRL casts a quantised model's LoRA weights to bf16 at every SFTTrainer; under fp16 mixed precision
    the gradient scaler cannot unscale bf16 gradients (trl#4901), so they go back to fp32 (what TRL's own
    CI does), and the record says so."""
    if not (spec.device == "cuda" and spec.dtype == "float16"):
        return
    cast = [p for p in model.parameters() if p.requires_grad and p.dtype == torch.bfloat16]
    for p in cast:
        p.data = p.data.float()
    if cast:
        result.warnings.append("TRL cast the LoRA weights to bf16, which fp16 training cannot unscale (trl#4901): "
                               "re-cast to fp32 before training; a real fp16-only card (T4) has no bf16 matmuls")

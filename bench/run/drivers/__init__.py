"""Drivers train a loaded recipe for one cell: `trainer` (TRL's SFTTrainer, as users run it; the default)
or `loop` (the suite's plain loop, for controlled experiments). Both return a TrainResult."""

from __future__ import annotations

from typing import Optional

from bench.run.drivers.common import (StepCallback, TrainResult, TrainSpec, restore_trainable, snapshot_trainable,
                                      synthetic_batch)


def train(driver: str, model, tokenizer, spec: TrainSpec, initial: Optional[dict] = None,
          on_step: Optional[StepCallback] = None) -> TrainResult:
    if driver == "loop":
        from bench.run.drivers.loop import train_loop

        return train_loop(model, spec, initial, on_step)
    from bench.run.drivers.trainer import train_trainer

    return train_trainer(model, tokenizer, spec, initial, on_step)


__all__ = ["TrainResult", "TrainSpec", "restore_trainable", "snapshot_trainable", "synthetic_batch", "train"]

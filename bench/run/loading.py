"""Build or locate a model's checkpoint and load one recipe on it: the start of both workers
(bench.run.worker, bench.run.kernels_worker).

Call it after `import unsloth` where the recipe is Unsloth's (the workers do that first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.config.models import ModelRef
from bench.run.checkpoint import ensure_synthetic_checkpoint
from bench.run.recipes import LoadedModel, RecipeSettings, load_recipe


@dataclass
class ModelLoad:
    loaded: LoadedModel
    checkpoint_path: str  # the directory the recipe loaded
    build_s: float  # seconds spent writing the synthetic checkpoint (0 when cached or not synthetic)
    load_s: float  # seconds the recipe took to load it (quantise, attach LoRA)


def load_model(ref: ModelRef, recipe: str, settings: RecipeSettings, device: str,
               cache_dir: Optional[str] = None,
               on_status: Optional[Callable[[str, str], None]] = None) -> ModelLoad:
    """Write `ref`'s synthetic checkpoint when it is one (cached under `cache_dir`), then load it as `recipe`.

    `on_status(stage, text)` hears the stage entered ("checkpoint", "load") and the checkpoint
    writer's progress lines.
    """
    status = on_status or (lambda stage, text: None)
    path = ref.path
    build_s = 0.0
    if ref.source == "synthetic":
        status("checkpoint", "writing synthetic checkpoint")
        built, build_s = ensure_synthetic_checkpoint(
            ref, cache_dir=Path(cache_dir) if cache_dir else None, device=device,
            progress=lambda text: status("checkpoint", text))
        path = str(built)
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()
    status("load", f"loading {recipe}")
    started = time.perf_counter()
    loaded = load_recipe(recipe, path, settings)
    return ModelLoad(loaded, path, build_s, time.perf_counter() - started)

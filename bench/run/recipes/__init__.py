"""Recipes load a model and attach LoRA the way their library's users do; `load_recipe` imports only the
module of the recipe asked for.

Never load recipes of two families in one process: Unsloth patches transformers, peft and TRL
globally on import (the worker imports unsloth first, before anything else, in Unsloth's workers).
"""

from __future__ import annotations

import importlib
import importlib.util

from bench.config.recipes import RecipeError, get_recipe
from bench.run.recipes.base import LoadedModel, RecipeSettings

#: recipe -> (module under bench.run.recipes, keyword arguments of its `load`)
MODULES = {
    "hf-kbit": ("hf_kbit", {}),
    "hf-trl": ("hf_trl", {"quantize": True}),
    "hf-liger": ("hf_trl", {"quantize": True, "liger": True}),
    "hf-lora16": ("hf_trl", {"quantize": False}),
    "unsloth": ("unsloth", {"load_in_4bit": True}),
    "unsloth-lora16": ("unsloth", {"load_in_4bit": False}),
}
#: The importable module each optional package is checked by, and the extra that installs it.
REQUIRES = {"liger": ("liger_kernel", "liger"), "gpu": ("unsloth", "gpu")}


class RecipeUnavailable(RecipeError):
    """A recipe whose library is not installed (or cannot run on this device)."""


def check_available(name: str, device: str) -> None:
    """Raise RecipeUnavailable, naming the extra to install, when `name` cannot run here."""
    recipe = get_recipe(name)
    if recipe.needs_gpu and device != "cuda":
        raise RecipeUnavailable(f"recipe {name} needs a CUDA GPU (it runs Triton kernels); "
                                f"on the CPU use hf-trl, hf-kbit or hf-lora16")
    needed = [REQUIRES[recipe.extra]] if recipe.extra else []
    for module, extra in needed:
        if importlib.util.find_spec(module) is None:
            raise RecipeUnavailable(f"recipe {name} needs {module}, which is not installed: "
                                    f"pip install -e \".[{extra}]\"")


def load_recipe(name: str, path: str, settings: RecipeSettings) -> LoadedModel:
    """Load `path` as recipe `name` would, with LoRA attached and the recipe's casts applied."""
    check_available(name, settings.device)
    module_name, kwargs = MODULES[get_recipe(name).name]
    module = importlib.import_module(f"bench.run.recipes.{module_name}")
    return module.load(path, settings, **kwargs)


__all__ = ["RecipeSettings", "LoadedModel", "RecipeUnavailable", "check_available", "load_recipe"]

"""Recipes: the fine-tuning setups the suite measures, each named, with what it changes.

A recipe is what a user runs: which library loads the model, how it is quantised, how LoRA is
attached and what is cast, and which checkpointing it uses. The implementation of each is a small
module in bench/run/recipes/; this table is what every stage reads about them (names, the library
family, precision, the extra package it needs) and what `bench recipes` prints.

The reference of a comparison is `--reference` (default hf-trl: what Hugging Face users run today);
where a results file has no cell of it (records from before recipes existed), the first recipe of
REFERENCE_FALLBACK present is the reference, and reports say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.schema.pairs import DEFAULT_REFERENCE, REFERENCE_FALLBACK, reference_for  # noqa: F401 (re-exported)


class RecipeError(ValueError):
    """An unknown recipe, or one this machine cannot run (CLI exit code 2)."""


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str  # "hf" | "unsloth": the library that loads the model (Unsloth patches transformers on import)
    precision: str  # "nf4" (QLoRA) | "16bit" (LoRA on 16-bit weights)
    checkpointing: str  # what "auto" means for this recipe: "standard" | "unsloth"
    summary: str  # one line: what it is
    changes: str  # what it does differently from the reference (hf-trl)
    extra: Optional[str] = None  # the pip extra a recipe needs beyond the base install
    needs_gpu: bool = False


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("hf-trl", "hf", "nf4", "standard",
           "AutoModelForCausalLM + BitsAndBytesConfig (NF4, double quant) trained by TRL's SFTTrainer with a "
           "LoraConfig: the way Hugging Face users fine-tune today",
           "the reference: TRL's own casting (LoRA weights in bf16, embeddings / lm_head / norms kept in 16 bits), "
           "gradient checkpointing use_reentrant=False, TRL's chunked fused LM-head loss"),
    Recipe("hf-kbit", "hf", "nf4", "standard",
           "the classic QLoRA recipe (QLoRA paper, PEFT docs): prepare_model_for_kbit_training, then get_peft_model",
           "prepare_model_for_kbit_training casts embeddings, norms and lm_head to fp32; through TRL's trainer "
           "the LoRA weights are then cast to bf16 and the loss is TRL's chunked head, as for hf-trl; through "
           "the loop driver LoRA stays fp32 and the loss uses full-vocabulary logits"),
    Recipe("hf-liger", "hf", "nf4", "standard",
           "hf-trl with use_liger_kernel=True: Liger's Triton RoPE, RMSNorm and SwiGLU kernels",
           "Liger kernels replace RoPE, RMSNorm and SwiGLU (TRL keeps its own fused loss)",
           extra="liger", needs_gpu=True),
    Recipe("unsloth", "unsloth", "nf4", "unsloth",
           "Unsloth's notebook recipe: FastLanguageModel.from_pretrained(load_in_4bit=True), "
           "get_peft_model(use_gradient_checkpointing=\"unsloth\"), trained by SFTTrainer",
           "Unsloth's patched model (fused LoRA / RoPE / RMSNorm / cross-entropy kernels), checkpointed layer "
           "inputs offloaded to CPU memory, LoRA in fp32, its own SFTTrainer subclass",
           extra="gpu", needs_gpu=True),
    Recipe("hf-lora16", "hf", "16bit", "standard",
           "16-bit LoRA without quantisation: AutoModelForCausalLM in bf16/fp16 + LoraConfig via SFTTrainer",
           "no 4-bit quantisation: the base weights stay 16-bit (the baseline of the articles' 70 % claim)"),
    Recipe("unsloth-lora16", "unsloth", "16bit", "unsloth",
           "Unsloth with 16-bit weights: FastLanguageModel.from_pretrained(load_in_4bit=False, load_in_16bit=True)",
           "Unsloth's kernels and checkpointing on 16-bit base weights",
           extra="gpu", needs_gpu=True),
]}

#: What `bench run` measures when no --recipe is given.
DEFAULT_RECIPES = ("hf-trl", "hf-kbit", "unsloth")
#: Records written before recipes existed name only a backend: what each one ran.
LEGACY_RECIPE = {"hf": "hf-kbit", "unsloth": "unsloth"}
DRIVERS = ("trainer", "loop")


def get_recipe(name: str) -> Recipe:
    key = str(name).strip().lower()
    if key not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[key]


def parse_recipes(text: str) -> list[str]:
    """'hf-trl,unsloth' -> ['hf-trl', 'unsloth'] (validated, order kept, duplicates dropped)."""
    names = [get_recipe(part).name for part in str(text).split(",") if part.strip()]
    if not names:
        raise RecipeError("no recipe given")
    return list(dict.fromkeys(names))


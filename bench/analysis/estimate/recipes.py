"""What each recipe does to memory, as the estimator's phases read it: a `RecipeProfile` per recipe,
driver and dtype, derived from bench.config.recipes and the libraries' source (docs/notes/recipes-research.md).

  * hf-kbit: peft's `prepare_model_for_kbit_training` casts every non-4-bit parameter to fp32
    (embeddings, lm_head, norms), so the residual stream is fp32; LoRA fp32; checkpointing from
    peft's prepare (torch's reentrant checkpoint: peft passes `gradient_checkpointing_kwargs={}`).
  * hf-trl, hf-liger, hf-lora16: LoRA attached by TRL's SFTTrainer; nothing upcast; non-reentrant
    checkpointing (transformers' default `use_reentrant=False`); for a 4-bit model TRL casts the
    trainable weights to bf16 (`sft_trainer.py`, "When using QLoRA ..."), which the suite casts back
    to fp32 under fp16 (the gradient scaler cannot unscale bf16, trl#4901); hf-lora16 is not
    quantised, so peft's fp32 adapters stay. hf-liger: Liger's RMSNorm, SwiGLU / GeGLU and RoPE
    kernels on the model types Liger patches.
  * unsloth, unsloth-lora16: Unsloth's fast path (its own fused loss, offloaded checkpointing, fp32 LoRA).
  * The loss follows the driver: the trainer driver (TRL's SFTTrainer on CUDA) runs TRL's fused LM
    head for every HF recipe, hf-kbit included, and, being an SFTTrainer on a 4-bit model, its bf16
    cast; the loop driver calls the model's own loss (full fp32 logits). Unsloth's trainer and the
    loop both reach Unsloth's fused cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.analysis.estimate.shapes import EstimateError
from bench.config.recipes import DRIVERS, RecipeError, get_recipe

#: HF recipes whose LoRA TRL's SFTTrainer attaches at load (bench.run.recipes: the hf_trl module), so
#: TRL's bf16 cast of a 4-bit model's adapters applies under either driver.
ATTACHED_BY_TRL = ("hf-trl", "hf-liger", "hf-lora16")
#: Recipes whose model goes through peft's prepare_model_for_kbit_training (the fp32 upcast).
FP32_UPCAST = ("hf-kbit",)
#: Recipes that patch Liger's kernels in (transformers' `apply_liger_kernel`).
LIGER = ("hf-liger",)
#: Model types Liger 0.8.5 patches (liger_kernel/transformers/monkey_patch.py MODEL_TYPE_TO_APPLY_LIGER_FN,
#: the shipped architectures among them); on others `apply_liger_kernel` changes nothing.
LIGER_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")
LOSSES = ("full_logits", "trl_chunked", "unsloth_fused")

#: Terms no source fixes and no committed record calibrates yet: what the estimator assumes, and why.
ASSUMPTIONS: dict[str, str] = {
    "allocator slack per family": "each library family's calibrated slack ratio (bench/data/calibration.json, "
                                  "fitted on hf-kbit and unsloth cells) is used for its other recipes",
    "16-bit HF backward working set": "hf-kbit's per-layer backward gradients, held in the residual stream's "
                                      "dtype (c / 4 of the fp32 figure) when nothing is upcast; read from the "
                                      "call order, not measured",
    "non-reentrant checkpointing": "holds the same tensors as the reentrant kind (each layer input until its "
                                   "recompute; torch frees recomputed tensors as the backward unpacks them)",
    "Liger's kernels": "change only what a layer saves (RMSNorm keeps its 16-bit input, SiLU/GELU-mul its two "
                       "inputs; RoPE rotates q and k in place and saves cos / sin once); their backward "
                       "workspace is taken as hf-trl's",
    "Triton kernels' modules": "TRL's fused-loss and Liger's compiled kernels add no device memory outside "
                               "torch beyond the family's calibrated context",
}


@dataclass(frozen=True)
class RecipeProfile:
    """How one recipe under one driver and dtype trains, in the terms the phase model needs."""

    recipe: str
    family: str  # "hf" | "unsloth"
    driver: str  # "trainer" | "loop"
    quantized: bool  # NF4 decoder weights (else 16-bit)
    fp32_upcast: bool  # every non-4-bit parameter in fp32, the residual stream with it
    lora_param_bytes: int  # 4 (fp32) or 2 (bf16: TRL's cast of a quantised model's adapters)
    loss: str  # LOSSES
    liger: bool  # Liger's layer kernels are patched in (and Liger knows the architecture)
    notes: tuple[str, ...] = ()


def recipe_profile(recipe: str, driver: str, dtype: str, model_type: str) -> RecipeProfile:
    """The profile of `recipe` trained by `driver` in `dtype` on a `model_type` model (see the module doc)."""
    try:
        r = get_recipe(recipe)
    except RecipeError as exc:
        raise EstimateError(str(exc)) from None
    if driver not in DRIVERS:
        raise EstimateError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
    quantized = r.precision == "nf4"
    notes: list[str] = []
    trl_cast = trl_casts_lora_to_bf16(r.name, driver)
    lora_param_bytes = 2 if trl_cast and dtype != "float16" else 4
    if trl_cast and dtype == "float16":
        notes.append("TRL casts a 4-bit model's LoRA weights to bf16; fp16 training cannot unscale bf16 "
                     "gradients (trl#4901), so the suite re-casts them to fp32")
    if r.family == "unsloth":
        loss = "unsloth_fused"
    else:
        loss = "trl_chunked" if driver == "trainer" else "full_logits"
    liger = r.name in LIGER and model_type in LIGER_MODEL_TYPES
    if r.name in LIGER and not liger:
        notes.append(f"Liger has no kernels for {model_type}: predicted as hf-trl")
    return RecipeProfile(r.name, r.family, driver, quantized, r.name in FP32_UPCAST, lora_param_bytes, loss, liger,
                         tuple(notes))


def trl_casts_lora_to_bf16(recipe: str, driver: str = "trainer") -> bool:
    """Whether TRL's SFTTrainer casts this recipe's LoRA weights to bf16 (a 4-bit HF model trained or
    wrapped by SFTTrainer), whatever the training dtype."""
    r = get_recipe(recipe)
    return r.family == "hf" and r.precision == "nf4" and (r.name in ATTACHED_BY_TRL or driver == "trainer")

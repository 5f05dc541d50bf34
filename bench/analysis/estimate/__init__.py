"""Analytical peak-VRAM estimator for LoRA / QLoRA training, per recipe (bench.config.recipes). No GPU, no torch.

It predicts the peak device memory NVML reports for a training cell (`peak_device_bytes` in the
run records): the CUDA context plus what the torch caching allocator has reserved at the worst
moment of a training step. Everything is computed from the model's config dict (shapes only).

Modules: `shapes` (the config dict's shapes), `formulas` (each memory term in bytes), `recipes`
(what each recipe and driver changes: upcast, LoRA dtype, loss, kernels), `model` (the phases of a
step and the estimate: `estimate_recipe`, and `estimate` for a recipe or a library family),
`limits` (verdicts, the largest predicted fit), `components` (the breakdown grouped for comparing
recipes), `validate` (against measured records), `heldout` (the calibration-set / held-out split,
the calibration fitted on the first, the errors on both, the coverage the validation lacks). The few measured numbers are in
bench/data/calibration.json (bench.analysis.calibration), per library family; what neither a
source nor a record fixes is listed in `recipes.ASSUMPTIONS`.

Notation used in every docstring (all sizes are element counts unless they say bytes):
  N = batch_size * seq_len tokens in a micro-batch; H = hidden_size; I = intermediate_size;
  L = num_hidden_layers; V = vocab_size; qd = heads * head_dim; kvd = kv_heads * head_dim;
  nh = heads; r = LoRA rank; c = bytes of the compute dtype (2 for bf16 / fp16).

Sources (read, not guessed): bitsandbytes 0.50 `functional.quantize_4bit` (NF4 blocks of 64,
double quantisation of absmax in blocks of 256) and `optim/optimizer.py` (8-bit states, blocks of
256, fp32 states below 4096 elements); peft 0.21 `prepare_model_for_kbit_training` (every
non-4-bit parameter cast to fp32) ; transformers 5.17 `loss_utils.ForCausalLMLoss` (fp32 logits)
and `modeling_layers.GradientCheckpointingLayer` (torch checkpoint of each layer input); TRL 1.15
`trainer/sft_trainer.py` (no upcast, a 4-bit model's adapters cast to bf16, a fused LM head) and
`kernels/chunked_logprob.py` (4096-token x 32768-vocabulary tiles, fp32 gradient accumulation);
Liger 0.8.5 `ops/rms_norm.py`, `ops/swiglu.py`, `ops/rope.py` (what its kernels save);
Unsloth 2026.10 / unsloth_zoo 2026.10: lm_head in the skip list, no fp32 upcast,
fused chunked lm_head + cross-entropy (`unsloth_zoo/fused_losses/fused_linear.py`), layer inputs
offloaded to pinned CPU memory by `UnslothCheckpointFunction`, fused LoRA MLP / QKV / O kernels
saving only `X, e, g` (`unsloth/kernels/fast_lora.py`).

The per-token activation coefficients of the Hugging Face recipes (hf-kbit's fp32 upcast, TRL's bf16
adapters, 16-bit LoRA) were checked against the tensors a real transformers + peft (+ bitsandbytes)
decoder layer saves for backward (see
`tests/integration/test_estimate.py::test_hf_layer_coefficients_match_saved_tensors`).
reports/estimator.md says which recipes, architectures and sequence lengths have measured cells, in
the calibration set and held out of it.

Known limits (said, not hidden): the calibrated values come from H100 runs (native and
emulated tiers); on a real pre-Ampere card (T4) SDPA has no flash kernel and, for GQA models, may
fall back to a kernel with a seq^2 matrix, which this model does not add. Unsloth's default
`offload_embedding="auto"` moves the input embedding to the CPU when free memory is short (never
under emulation, where the host's memory is free); the estimate keeps it on the GPU (conservative).
At Unsloth's largest token counts per step (the max-fit probes) the allocated-memory model errs in
both directions, by cap and dtype (Unsloth sizes its fused-loss chunk from the free memory, which
an emulated cap changes); reports/estimator.md has the errors cell by cell. A prediction within
the error of a tier's memory is not a verdict: `bench fit` settles it by measuring.
"""

from bench.analysis.estimate.components import COMPONENTS, TERM_COMPONENT, breakdown_by_component
from bench.analysis.estimate.heldout import (
    LeftOut,
    OutOfSample,
    Split,
    SplitRule,
    SplitRuleError,
    architecture_resolver,
    coverage,
    coverage_gaps,
    out_of_sample,
    parse_split_rule,
    split_records,
)
from bench.analysis.estimate.limits import (
    Verdict,
    estimate_grid,
    largest_true,
    max_fit_batch_size,
    max_fit_seq_len,
    predicted_limits,
    verdict,
)
from bench.analysis.estimate.model import Estimate, estimate, estimate_recipe
from bench.analysis.estimate.recipes import ASSUMPTIONS, RecipeProfile, recipe_profile, trl_casts_lora_to_bf16
from bench.analysis.estimate.shapes import EstimateError, LinearShape, ModelShape, model_shape
from bench.analysis.estimate.validate import (
    ValidationRow,
    calibration_predictor,
    compute_capability_of,
    error_bound_bytes,
    error_stats,
    estimate_for_record,
    fit_verdicts,
    unmeasured_recipes,
    validate_records,
    validation_summary,
)

__all__ = [
    "ASSUMPTIONS", "COMPONENTS", "Estimate", "EstimateError", "LeftOut", "LinearShape", "ModelShape", "OutOfSample",
    "RecipeProfile", "Split", "SplitRule", "SplitRuleError", "architecture_resolver", "coverage", "coverage_gaps",
    "error_stats", "out_of_sample", "parse_split_rule", "split_records",
    "TERM_COMPONENT", "ValidationRow", "Verdict", "breakdown_by_component", "calibration_predictor",
    "compute_capability_of", "error_bound_bytes", "estimate", "estimate_for_record", "estimate_grid",
    "estimate_recipe", "fit_verdicts", "largest_true", "max_fit_batch_size", "max_fit_seq_len", "model_shape",
    "predicted_limits", "recipe_profile", "trl_casts_lora_to_bf16", "unmeasured_recipes", "validate_records",
    "validation_summary", "verdict",
]

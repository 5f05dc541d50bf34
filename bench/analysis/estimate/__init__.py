"""Analytical peak-VRAM estimator for QLoRA training, per backend (hf, unsloth). No GPU, no torch.

It predicts the peak device memory NVML reports for a training cell (`peak_device_bytes` in the
run records): the CUDA context plus what the torch caching allocator has reserved at the worst
moment of a training step. Everything is computed from the model's config dict (shapes only).

Modules: `shapes` (the config dict's shapes), `formulas` (each memory term in bytes), `model`
(the phases of a step, the estimate, the largest predicted fit), `validate` (against measured
records). The few measured numbers are in bench/data/calibration.json (bench.analysis.calibration).

Notation used in every docstring (all sizes are element counts unless they say bytes):
  N = batch_size * seq_len tokens in a micro-batch; H = hidden_size; I = intermediate_size;
  L = num_hidden_layers; V = vocab_size; qd = heads * head_dim; kvd = kv_heads * head_dim;
  nh = heads; r = LoRA rank; c = bytes of the compute dtype (2 for bf16 / fp16).

Sources (read, not guessed): bitsandbytes 0.50 `functional.quantize_4bit` (NF4 blocks of 64,
double quantisation of absmax in blocks of 256) and `optim/optimizer.py` (8-bit states, blocks of
256, fp32 states below 4096 elements); peft 0.21 `prepare_model_for_kbit_training` (every
non-4-bit parameter cast to fp32) ; transformers 5.17 `loss_utils.ForCausalLMLoss` (fp32 logits)
and `modeling_layers.GradientCheckpointingLayer` (reentrant torch checkpoint of each layer input);
Unsloth 2026.10 / unsloth_zoo 2026.10: lm_head in the skip list, no fp32 upcast,
fused chunked lm_head + cross-entropy (`unsloth_zoo/fused_losses/fused_linear.py`), layer inputs
offloaded to pinned CPU memory by `UnslothCheckpointFunction`, fused LoRA MLP / QKV / O kernels
saving only `X, e, g` (`unsloth/kernels/fast_lora.py`).

The per-token activation coefficients of the Hugging Face path were checked against the tensors a
real transformers + peft + bitsandbytes decoder layer saves for backward (see
`tests/integration/test_estimate.py::test_hf_layer_coefficients_match_saved_tensors`).

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

from bench.analysis.estimate.model import (
    Estimate,
    Verdict,
    estimate,
    estimate_grid,
    largest_true,
    max_fit_batch_size,
    max_fit_seq_len,
    predicted_limits,
    verdict,
)
from bench.analysis.estimate.shapes import EstimateError, LinearShape, ModelShape, model_shape
from bench.analysis.estimate.validate import (
    ValidationRow,
    calibration_predictor,
    compute_capability_of,
    error_bound_bytes,
    estimate_for_record,
    fit_verdicts,
    validate_records,
    validation_summary,
)

__all__ = [
    "Estimate", "EstimateError", "LinearShape", "ModelShape", "ValidationRow", "Verdict",
    "calibration_predictor", "compute_capability_of", "error_bound_bytes", "estimate", "estimate_for_record",
    "estimate_grid", "fit_verdicts", "largest_true", "max_fit_batch_size", "max_fit_seq_len", "model_shape",
    "predicted_limits", "validate_records", "validation_summary", "verdict",
]

"""Analytical peak-VRAM estimator for QLoRA training, per backend (hf, unsloth). No GPU, no torch.

It predicts the peak device memory NVML reports for a training cell (`peak_device_bytes` in the
run records): the CUDA context plus what the torch caching allocator has reserved at the worst
moment of a training step. Everything is computed from the model's config dict (shapes only).

Notation used in every docstring below (all sizes are element counts unless they say bytes):
  N = batch_size * seq_len tokens in a micro-batch; H = hidden_size; I = intermediate_size;
  L = num_hidden_layers; V = vocab_size; qd = heads * head_dim; kvd = kv_heads * head_dim;
  nh = heads; r = LoRA rank; c = bytes of the compute dtype (2 for bf16 / fp16).

How the peak is found. A step has three phases whose live memory differs:
  * loss:      end of the forward / start of the backward, when the logits and the loss live;
  * layer:     the backward of one decoder layer (recomputed first under checkpointing);
  * optimizer: `optimizer.step()`, activations gone, gradients and states live.
Each phase is a sum of terms (bytes); the peak allocation is the largest phase sum. The device
total adds the allocator's slack over that (reserved - allocated) and the memory outside torch.

Sources (read, not guessed): bitsandbytes 0.50 `functional.quantize_4bit` (NF4 blocks of 64,
double quantisation of absmax in blocks of 256) and `optim/optimizer.py` (8-bit states, blocks of
256, fp32 states below 4096 elements); peft 0.21 `prepare_model_for_kbit_training` (every
non-4-bit parameter cast to fp32) ; transformers 5.17 `loss_utils.ForCausalLMLoss` (fp32 logits)
and `modeling_layers.GradientCheckpointingLayer` (reentrant torch checkpoint of each layer input);
Unsloth 2026.10 (`docs`: /work/notes/unsloth-internals.md): lm_head in the skip list, no fp32 upcast,
fused chunked lm_head + cross-entropy (`unsloth_zoo/fused_losses/fused_linear.py`), layer inputs
offloaded to pinned CPU memory by `UnslothCheckpointFunction`, fused LoRA MLP / QKV / O kernels
saving only `X, e, g` (`unsloth/kernels/fast_lora.py`).

The per-token activation coefficients of the Hugging Face path were checked against the tensors a
real transformers + peft + bitsandbytes decoder layer saves for backward (see
`tests/test_estimate.py::test_hf_layer_coefficients_match_saved_tensors`).

Known limits (said, not hidden): the calibrated constants come from H100 runs (native and
emulated tiers); on a real pre-Ampere card (T4) SDPA has no flash kernel and, for GQA models, may
fall back to a kernel with a seq^2 matrix, which this model does not add. Unsloth's default
`offload_embedding="auto"` moves the input embedding to the CPU when free memory is short (never
under emulation, where the host's memory is free); the estimate keeps it on the GPU (conservative).
At Unsloth's largest token counts per step (the max-fit probes) the allocated-memory model errs in
both directions, by cap and dtype (Unsloth sizes its fused-loss chunk from the free memory, which
an emulated cap changes); reports/estimator.md has the errors cell by cell. A prediction within
the error of a tier's memory is not a verdict: `bench fit` settles it by measuring.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from bench.config.models import unsloth_fast_path as model_fast_path

GiB = 1024**3
MiB = 1024**2

BACKENDS = ("hf", "unsloth")

# -- constants (each one documented; calibrated ones say on what) -----------------------------------

NF4_BLOCKSIZE = 64  # bitsandbytes quantize_4bit default blocksize (absmax per 64 weights)
NF4_NESTED_BLOCKSIZE = 256  # double quant: absmax re-quantised to uint8 in blocks of 256, fp32 scale each
ALLOC_GRANULE = 512  # the CUDA caching allocator rounds every block up to 512 bytes
OPT8_BLOCKSIZE = 256  # bitsandbytes 8-bit optimizer: one fp32 absmax per 256 state values
OPT8_MIN_SIZE = 4096  # bitsandbytes min_8bit_size: smaller tensors keep fp32 states

#: Memory outside the torch allocator at the peak for the hf backend: CUDA context, lazily loaded
#: kernel modules (cuBLAS, bitsandbytes, attention), library handles. NVML counts it, torch does
#: not. Keyed by compute-capability major.minor. Calibrated for sm90 on the suite's H100 records
#: (torch 2.11, CUDA 13, driver 580): the median of peak_device_bytes - peak_reserved_bytes
#: (`calibration_from_records`, checked by tests/test_estimate.py against the committed results).
#: Other generations are not measured by the suite yet and use the same figure; a context on a
#: smaller card is usually smaller, so predictions there err on the safe side.
NON_TORCH_BYTES_BY_CC: dict[str, int] = {
    "7.5": 758 * MiB,
    "8.0": 758 * MiB,
    "8.6": 758 * MiB,
    "8.9": 758 * MiB,
    "9.0": 758 * MiB,
}
DEFAULT_NON_TORCH_BYTES = 758 * MiB
#: `import unsloth` loads Triton and its kernels into the context before training starts (the
#: records' backend_info.context_bytes is higher for unsloth workers); what the unsloth backend
#: adds on top of NON_TORCH_BYTES_BY_CC at the peak. Calibrated like the constant above.
UNSLOTH_EXTRA_NON_TORCH_BYTES = 70 * MiB

#: Caching-allocator slack: at the peak, reserved exceeds allocated because blocks freed earlier
#: in the step (activations, logits of other sizes) stay cached and cannot serve the peak's
#: requests (fragmentation). Modelled as base + fraction x the step's transient allocation (peak
#: minus weights, adapters and optimizer states), calibrated per backend on the suite's H100
#: records by `calibration_from_records`:
#: - hf: proportional (base 0), the median of (peak_reserved - peak_allocated) / transient; HF's
#:   transient is dominated by large logits blocks of several sizes, and its records show one ratio
#:   across their transient sizes.
#: - unsloth: affine, a least-squares line; its records keep a larger share of small transients
#:   than of large ones, so a single ratio over- or under-shoots one end.
#: Cells whose reserved memory reached SLACK_CAP_PRESSURE of an emulated tier's cap are left out of
#: the calibration: there the allocator frees its cache and retries, so they measure the cap.
ALLOCATOR_SLACK_OF_TRANSIENT: dict[str, float] = {"hf": 0.23, "unsloth": 0.042}
ALLOCATOR_SLACK_BASE_BYTES: dict[str, int] = {"hf": 0, "unsloth": 160 * MiB}
SLACK_CAP_PRESSURE = 0.97

#: Unsloth's fused lm_head + cross-entropy sizes its logits chunk from a byte budget:
#: min(UNSLOTH_LOGPROB_CHUNK_GB = 2 GiB, half the free memory); see `fused_linear_rows`.
UNSLOTH_CE_BUDGET_BYTES = 2 * GiB
#: Unsloth offloads a checkpointed layer input only above 2 MiB (gradient_checkpointing.py MINIMUM_SIZE).
UNSLOTH_OFFLOAD_MIN_BYTES = 2 * MiB
#: Below this max_seq_length Unsloth silently uses plain torch checkpointing (no offload).
UNSLOTH_OFFLOAD_MIN_SEQ = 512

#: Hidden-size tensors Unsloth keeps on the GPU with offloaded checkpointing: the two staging
#: buffers (double buffering), the last layer's input (never offloaded), the final layer's output
#: (saved by the final norm) and d(loss)/d(hidden) that the fused loss computes in the forward.
UNSLOTH_RESIDENT_HIDDEN = 5

#: Backward working set of one decoder layer, per token, in multiples of H and I at the element
#: size noted: HF: the fp32 gradient of the residual stream in and out (2 x 4H) and of the MLP
#: intermediate with its half-precision copy from the LoRA / 4-bit paths (4I + 4I).
#: Unsloth MLP backward: the half-precision residual gradients in and out (2 x c*H) and
#: intermediate-size tensors: DW = dY @ W^T (the kernel's own, the other gradients reuse e and g in
#: place) and two more per token that the suite's records show (consistent with the per-block
#: torch.compile region keeping silu(e) and silu(e) * g as well); 3 x c*I in all. The records'
#: per-token slope of peak_allocated_bytes fixes this count; the rest of the formula is physical.
HF_BACKWARD_H, HF_BACKWARD_I = 8, 8
UNSLOTH_BACKWARD_H_ELEMS, UNSLOTH_BACKWARD_I_ELEMS = 2, 3


class EstimateError(ValueError):
    """A request the estimator cannot answer (CLI exit code 2)."""


# -- model shapes from a config dict ----------------------------------------------------------------


@dataclass(frozen=True)
class LinearShape:
    name: str  # module name inside a decoder layer (the LoRA target name)
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a transformers config dict (no torch needed)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    max_positions: Optional[int]
    layer_linears: tuple[LinearShape, ...]
    norms_per_layer: int  # H-sized norm weight vectors per decoder layer
    norm_bias: bool  # LayerNorm (weight + bias) instead of RMSNorm (weight)
    extra_layer_params: int = 0  # per-layer parameters outside linears and H-sized norms (qk-norms)
    gated_mlp: bool = True  # SwiGLU / GeGLU (gate * up) vs a plain MLP (GPT-NeoX)
    sliding_window: Optional[int] = None  # a window narrower than the sequence needs an explicit mask
    final_logit_softcapping: Optional[float] = None

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """lm_head weights not shared with the input embedding (0 when tied)."""
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        per = self.hidden_size * (2 if self.norm_bias else 1)
        return (self.norms_per_layer * self.num_layers + 1) * per + self.extra_layer_params * self.num_layers

    @property
    def bias_params(self) -> int:
        return self.num_layers * sum(lin.out_features for lin in self.layer_linears if lin.bias)

    @property
    def quantized_params(self) -> int:
        """Weights of every decoder Linear: what load_in_4bit turns into NF4 (lm_head is skipped)."""
        return self.num_layers * sum(lin.weight_params for lin in self.layer_linears)

    @property
    def unquantized_params(self) -> int:
        """Parameters kept in 16/32-bit: embeddings, an untied lm_head, norms, biases."""
        return self.embedding_params + self.lm_head_params + self.norm_params + self.bias_params

    @property
    def total_params(self) -> int:
        return self.quantized_params + self.unquantized_params

    @property
    def matmul_params(self) -> int:
        """Decoder Linears plus lm_head (a tied head counts once), as bench.run.checkpoint.parameter_counts."""
        return self.quantized_params + self.embedding_params

    def targets(self, target_modules: Optional[Iterable[str]]) -> list[LinearShape]:
        """The decoder Linears a LoRA target list selects (None: every projection)."""
        if target_modules is None:
            return list(self.layer_linears)
        names = set(target_modules)
        chosen = [lin for lin in self.layer_linears if lin.name in names]
        unknown = names - {lin.name for lin in self.layer_linears}
        if unknown:
            raise EstimateError(
                f"target modules {sorted(unknown)} are not projections of a {self.model_type} layer "
                f"({', '.join(lin.name for lin in self.layer_linears)})")
        return chosen

    def lora_tensors(self, r: int, target_modules: Optional[Iterable[str]]) -> list[int]:
        """Element counts of every LoRA tensor: A (r x in) and B (out x r) per targeted Linear per layer."""
        out = []
        for lin in self.targets(target_modules):
            out += [r * lin.in_features, lin.out_features * r]
        return out * self.num_layers

    def lora_params(self, r: int, target_modules: Optional[Iterable[str]]) -> int:
        return sum(self.lora_tensors(r, target_modules))


def _get(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if config.get(n) is not None:
            return config[n]
    return default


def model_shape(config: dict[str, Any]) -> ModelShape:
    """Shapes of a transformers config dict for the architectures the suite ships.

    llama / mistral / qwen2 / qwen3 / gemma / gemma2: q, k, v, o, gate, up, down projections;
    phi3: fused qkv_proj and gate_up_proj; gpt_neox: query_key_value, dense, dense_h_to_4h,
    dense_4h_to_h with biases and LayerNorms.
    """
    mt = config.get("model_type")
    try:
        H = int(config["hidden_size"])
        L = int(config["num_hidden_layers"])
        nh = int(config["num_attention_heads"])
        V = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EstimateError(f"config lacks a usable {exc} field") from None
    I = int(_get(config, "intermediate_size", default=4 * H))
    nkv = int(_get(config, "num_key_value_heads", default=nh))
    hd = int(_get(config, "head_dim", default=H // nh))
    tied = bool(config.get("tie_word_embeddings", mt in ("gemma", "gemma2")))
    max_pos = config.get("max_position_embeddings")
    window = config.get("sliding_window")
    if mt == "qwen2" and not config.get("use_sliding_window", False):
        window = None
    if mt in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"):
        attn_bias = bool(config.get("attention_bias", False)) or mt == "qwen2"
        o_bias = bool(config.get("attention_bias", False)) if mt in ("llama",) else False
        mlp_bias = bool(config.get("mlp_bias", False))
        linears = (
            LinearShape("q_proj", H, nh * hd, attn_bias),
            LinearShape("k_proj", H, nkv * hd, attn_bias),
            LinearShape("v_proj", H, nkv * hd, attn_bias),
            LinearShape("o_proj", nh * hd, H, o_bias),
            LinearShape("gate_proj", H, I, mlp_bias),
            LinearShape("up_proj", H, I, mlp_bias),
            LinearShape("down_proj", I, H, mlp_bias),
        )
        norms = 4 if mt == "gemma2" else 2
        extra = 2 * hd if mt == "qwen3" else 0
        return ModelShape(mt, H, I, L, nh, nkv, hd, V, tied, max_pos, linears, norms, False, extra, True,
                          window, config.get("final_logit_softcapping"))
    if mt == "phi3":
        linears = (
            LinearShape("qkv_proj", H, (nh + 2 * nkv) * hd),
            LinearShape("o_proj", nh * hd, H),
            LinearShape("gate_up_proj", H, 2 * I),
            LinearShape("down_proj", I, H),
        )
        return ModelShape(mt, H, I, L, nh, nkv, hd, V, tied, max_pos, linears, 2, False, 0, True, window)
    if mt == "gpt_neox":
        linears = (
            LinearShape("query_key_value", H, 3 * H, True),
            LinearShape("dense", H, H, True),
            LinearShape("dense_h_to_4h", H, I, True),
            LinearShape("dense_4h_to_h", I, H, True),
        )
        return ModelShape(mt, H, I, L, nh, nh, hd, V, tied, max_pos, linears, 2, True, 0, False, None)
    raise EstimateError(
        f"the estimator has no shape model for model_type {mt!r} "
        "(known: llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt_neox)")


# -- the pieces, each a pure function of shapes -----------------------------------------------------


def _granule(nbytes: float) -> int:
    """Bytes a CUDA caching-allocator block of `nbytes` occupies (rounded up to 512 B)."""
    return int(math.ceil(nbytes / ALLOC_GRANULE) * ALLOC_GRANULE) if nbytes > 0 else 0


def nf4_tensor_bytes(numel: int, double_quant: bool = True) -> int:
    """Device bytes of one NF4-quantised weight (bitsandbytes `quantize_4bit`, quant_storage uint8).

    packed weights: ceil(n / 2) bytes (two 4-bit codes per byte);
    absmax: one per block of 64 weights: fp32 (4 B) without double quant; with it, uint8 (1 B)
      plus one fp32 scale per 256 absmax values (`quantize_blockwise(..., blocksize=256)`) and an
      fp32 offset scalar; the 256-entry dynamic code is shared by all tensors;
    nf4 code table: 16 fp32 values per tensor. Each piece is its own allocator block (>= 512 B).
    """
    blocks = -(-numel // NF4_BLOCKSIZE)
    total = _granule(-(-numel // 2)) + _granule(16 * 4)
    if double_quant:
        nested = -(-blocks // NF4_NESTED_BLOCKSIZE)
        total += _granule(blocks) + _granule(nested * 4) + _granule(4)
    else:
        total += _granule(blocks * 4)
    return total


def nf4_weight_bytes(shape: ModelShape, double_quant: bool = True) -> int:
    """All decoder Linears in NF4: sum of `nf4_tensor_bytes` over L x (projections per layer)."""
    return shape.num_layers * sum(nf4_tensor_bytes(lin.weight_params, double_quant) for lin in shape.layer_linears)


def unquantized_weight_bytes(shape: ModelShape, backend: str, compute_bytes: int) -> int:
    """Embeddings, untied lm_head, norms and biases.

    hf: peft `prepare_model_for_kbit_training` casts every fp16/bf16 parameter that is not a
      Params4bit to fp32, so 4 B each. unsloth: its own prepare step upcasts only the LoRA weights;
      these stay in the load dtype (c B each), and lm_head is in its skip list, so it stays 16-bit.
    """
    per = 4 if backend == "hf" else compute_bytes
    return shape.unquantized_params * per


def lora_bytes(lora_tensors: list[int]) -> int:
    """LoRA A and B weights, fp32 (peft and Unsloth both train adapters in fp32): 4 B per parameter."""
    return sum(_granule(4 * n) for n in lora_tensors)


def gradient_bytes(lora_tensors: list[int]) -> int:
    """Gradients of the LoRA weights, same dtype as the weights (fp32): 4 B per parameter."""
    return lora_bytes(lora_tensors)


def optimizer_state_bytes(lora_tensors: list[int], optimizer: str) -> int:
    """AdamW states for the LoRA weights.

    adamw_torch / paged_adamw_32bit: exp_avg + exp_avg_sq in fp32 = 8 B per parameter.
    adamw_8bit / paged_adamw_8bit (bitsandbytes blockwise): two uint8 states (2 B per parameter)
      plus one fp32 absmax per 256 values per state; tensors under 4096 elements keep fp32 states.
    Paged states live in CUDA managed memory, resident on the device while training, so they are
    counted the same.
    """
    total = 0
    for n in lora_tensors:
        if optimizer in ("adamw_torch", "paged_adamw_32bit") or n < OPT8_MIN_SIZE:
            total += 2 * _granule(4 * n)
        elif optimizer in ("adamw_8bit", "paged_adamw_8bit"):
            blocks = -(-n // OPT8_BLOCKSIZE)
            total += 2 * _granule(n) + 2 * _granule(4 * blocks)
        else:
            raise EstimateError(f"unknown optimizer {optimizer!r}")
    return total


def optimizer_step_transient_bytes(lora_tensors: list[int], optimizer: str) -> int:
    """Temporaries of `optimizer.step()`: torch's foreach AdamW builds one fp32 copy per parameter
    (4 B each); the bitsandbytes kernels update in place (0)."""
    return sum(_granule(4 * n) for n in lora_tensors) if optimizer == "adamw_torch" else 0


def dequant_buffer_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """The largest dequantised weight: c * in * out of the biggest projection, plus its fp32 absmax.
    bitsandbytes dequantises a 4-bit weight for each matmul with many rows (transient); Unsloth's
    `fast_dequantize` keeps a global buffer of that size."""
    biggest = max(lin.weight_params for lin in shape.layer_linears)
    return _granule(compute_bytes * biggest) + _granule(4 * -(-biggest // NF4_BLOCKSIZE))


def hf_layer_activation_bytes_per_token(shape: ModelShape, r: int, target_modules: Optional[Iterable[str]]) -> int:
    """Bytes per token one HF decoder layer saves for backward, beyond its input (autocast, peft LoRA).

    With peft's fp32 upcast the residual stream and the norm outputs are fp32, so every bnb
    Linear4bit returns fp32 (`.to(inp_dtype)`), while SDPA and the LoRA matmuls run in c-byte
    autocast copies:
      each LoRA-targeted projection: the autocast copy of its input (2 * in) and lora_A's output (2r);
      attention (SDPA flash / memory-efficient, no seq^2 matrix): q (2 qd), k and v (2 kvd each),
        the output (2 qd) and the log-sum-exp (4 per head);
      the norm after attention: its fp32 input (the residual sum, 4H) and 1 / rms (4 per norm);
      gated MLP: gate and up outputs and the activation, fp32 (3 x 4I); plain MLP: 4I.
    Llama-8B, r=16, all projections: 14H + 6qd + 4kvd + 14I + 4nh + 14r + 8 bytes.
    """
    lin_in = sum(2 * lin.in_features + 2 * r for lin in shape.targets(target_modules))
    attn = 2 * shape.q_dim + 2 * 2 * shape.kv_dim + 2 * shape.q_dim + 4 * shape.num_heads
    extra_norms = shape.norms_per_layer - 1  # the first norm's input is the layer input itself
    norms = extra_norms * 4 * shape.hidden_size + shape.norms_per_layer * 4 * (3 if shape.norm_bias else 1)
    mlp = (12 if shape.gated_mlp else 4) * shape.intermediate_size
    return lin_in + attn + norms + mlp


def unsloth_layer_activation_bytes_per_token(shape: ModelShape, compute_bytes: int) -> int:
    """Bytes per token one Unsloth decoder layer saves for backward (fast path), beyond its input.

    Everything is in the load dtype (c bytes). `fast_rms_layernorm(save_output=True)` keeps each
    norm's output (2 x cH) and 1 / rms (4 each); the residual sum after attention (cH); LoRA_QKV
    returns Q, K, V (c qd + 2 c kvd) that SDPA saves with its output (c qd) and log-sum-exp
    (4 per head); the contiguous attention output LoRA_W keeps for o_proj (c qd); LoRA_MLP keeps
    X (the norm output, already counted), e = X G and g = X U (2 cI).
    Llama-8B in bf16: 6H + 6qd + 4kvd + 4I + 4nh + 8 bytes.
    """
    c = compute_bytes
    H, I = shape.hidden_size, shape.intermediate_size
    norms = shape.norms_per_layer * (c * H + 4)
    residual = c * H * (shape.norms_per_layer - 1)
    attn = c * shape.q_dim + 2 * c * shape.kv_dim + c * shape.q_dim + 4 * shape.num_heads + c * shape.q_dim
    mlp = (2 if shape.gated_mlp else 1) * c * I
    return norms + residual + attn + mlp


def sliding_window_mask_bytes(shape: ModelShape, seq_len: int, batch_size: int) -> int:
    """An explicit boolean seq x seq mask per sequence where the window is narrower than the sequence
    (SDPA's is_causal has no window), 1 B per entry."""
    if shape.sliding_window and seq_len > shape.sliding_window:
        return _granule(batch_size * seq_len * seq_len)
    return 0


def unsloth_ce_rows(n_rows: int, hidden: int, vocab: int, budget_bytes: int = UNSLOTH_CE_BUDGET_BYTES) -> int:
    """Rows of logits per chunk in Unsloth's fused linear cross-entropy (`fused_linear_rows`).

    A power of two at or below n_rows * hidden / vocab, at least min(max(pow2 <= 512 * 151936 /
    vocab, 512), 4096) and at most 4096 rows, and at most budget / (vocab * 4 B) rows.
    """
    def pow2_floor(x: float) -> int:
        return 1 << int(math.floor(math.log2(x))) if x >= 1 else 0

    rows = pow2_floor(n_rows * hidden / max(vocab, 1))
    min_rows = min(max(pow2_floor(512 * 151936 / max(vocab, 1)), 512), 4096)
    rows = min(max(rows, min_rows), 4096)
    cap = budget_bytes // max(vocab * 4, 1)
    rows = min(rows, max(cap, 2))
    return max(min(rows, max(n_rows, 1)), 1)


def hf_logits_loss_bytes(shape: ModelShape, n_tokens: int) -> int:
    """HF's lm_head + loss at their peak, the start of the backward: 12 B per logit.

    `ForCausalLMLoss` upcasts the logits (`logits.float()`), cross_entropy keeps the fp32
    log-softmax output (4 B); its backward allocates the fp32 gradient of that output (4 B) and of
    the input (4 B) before the first two are freed. (The forward holds 10 B: c-byte logits, the
    fp32 copy and the log-softmax.) Final-logit softcapping (Gemma-2) adds the divided, tanh and
    rescaled c-byte copies (3 x 2 B).
    """
    per = 12 + (6 if shape.final_logit_softcapping else 0)
    return _granule(per * n_tokens * shape.vocab_size)


def hf_lm_head_saved_bytes(shape: ModelShape, n_tokens: int, compute_bytes: int) -> int:
    """What HF's lm_head saves for backward under autocast: the c-byte copy of its fp32 input
    (c * N * H) and the c-byte copy of the fp32 lm_head weight (c * V * H), made by autocast because
    peft upcast the weight; it lives from the forward until the head's backward."""
    return _granule(compute_bytes * n_tokens * shape.hidden_size) + _granule(
        compute_bytes * shape.vocab_size * shape.hidden_size)


def unsloth_loss_bytes(shape: ModelShape, n_tokens: int) -> int:
    """Unsloth's fused lm_head + cross-entropy working set: one fp32 logits chunk of `unsloth_ce_rows`
    rows x V (the gradient reuses the same buffer), beside d(loss)/d(hidden) which the resident
    hidden-state term already counts."""
    rows = unsloth_ce_rows(n_tokens, shape.hidden_size, shape.vocab_size)
    return _granule(rows * (-(-shape.vocab_size // 8) * 8) * 4)


# -- the estimate ---------------------------------------------------------------------------------


@dataclass
class Estimate:
    """A predicted peak; `breakdown` holds the terms live at the peak and sums to `total_bytes`."""

    backend: str
    model: str
    seq_len: int
    batch_size: int
    dtype: str
    gradient_checkpointing: str
    optimizer: str
    lora_r: int
    total_bytes: int
    peak_phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]  # phase -> allocated bytes (torch) at that phase
    peak_allocated_bytes: int
    persistent_bytes: int  # weights, adapters and optimizer states (live through the whole step)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def non_torch_bytes_for(compute_capability: Optional[tuple[int, int]]) -> int:
    """The documented per-generation constant for memory outside torch (see NON_TORCH_BYTES_BY_CC)."""
    if compute_capability is None:
        return DEFAULT_NON_TORCH_BYTES
    return NON_TORCH_BYTES_BY_CC.get(f"{compute_capability[0]}.{compute_capability[1]}", DEFAULT_NON_TORCH_BYTES)


def resolve_checkpointing(backend: str, gradient_checkpointing: str, seq_len: int) -> str:
    """"auto" -> hf: standard, unsloth: unsloth (offloaded); Unsloth turns "unsloth" into plain
    checkpointing ("standard") when max_seq_length < 512."""
    gc = gradient_checkpointing
    if gc == "auto":
        gc = "unsloth" if backend == "unsloth" else "standard"
    if gc not in ("none", "standard", "unsloth"):
        raise EstimateError(f"unknown gradient checkpointing {gradient_checkpointing!r}")
    if gc == "unsloth" and backend == "hf":
        raise EstimateError("gradient checkpointing 'unsloth' exists only in the unsloth backend")
    if gc == "unsloth" and seq_len < UNSLOTH_OFFLOAD_MIN_SEQ:
        gc = "standard"
    return gc


def estimate(
    config: dict[str, Any],
    backend: str,
    seq_len: int,
    batch_size: int,
    *,
    model_name: str = "",
    lora_r: int = 16,
    target_modules: Optional[Iterable[str]] = None,
    optimizer: str = "adamw_8bit",
    gradient_checkpointing: str = "auto",
    dtype: str = "bfloat16",
    compute_capability: Optional[tuple[int, int]] = (9, 0),
    non_torch_bytes: Optional[int] = None,
    unsloth_fast_path: Optional[bool] = None,
) -> Estimate:
    """Predict the peak device memory of one training cell (see the module docstring).

    `compute_capability` picks the non-torch constant of the GPU it runs on (an emulated tier runs
    on its host); `non_torch_bytes` overrides it. `unsloth_fast_path` defaults to the model types
    with a hand-written Unsloth path; the others run Unsloth's compiled generic path, modelled with
    the HF layer formula in the load dtype.
    """
    if backend not in BACKENDS:
        raise EstimateError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if seq_len <= 0 or batch_size <= 0:
        raise EstimateError(f"seq_len and batch_size must be > 0, got {seq_len} and {batch_size}")
    if lora_r <= 0:
        raise EstimateError(f"lora_r must be > 0, got {lora_r}")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise EstimateError(f"unknown dtype {dtype!r}")
    shape = model_shape(config)
    if shape.max_positions and seq_len > shape.max_positions:
        raise EstimateError(f"seq_len {seq_len} is over the model's {shape.max_positions} positions")
    c = 4 if dtype == "float32" else 2
    gc = resolve_checkpointing(backend, gradient_checkpointing, seq_len)
    if unsloth_fast_path is None:
        unsloth_fast_path = model_fast_path(shape.model_type)
    N = seq_len * batch_size
    H, L = shape.hidden_size, shape.num_layers
    lora = shape.lora_tensors(lora_r, target_modules)
    notes: list[str] = []

    persistent = {
        "weights_nf4": nf4_weight_bytes(shape),
        "weights_16_32bit": unquantized_weight_bytes(shape, backend, c),
        "lora_weights": lora_bytes(lora),
        "optimizer_states": optimizer_state_bytes(lora, optimizer),
    }
    grads = gradient_bytes(lora)
    dequant = dequant_buffer_bytes(shape, c)
    mask = sliding_window_mask_bytes(shape, seq_len, batch_size)
    if mask:
        notes.append(f"sliding window {shape.sliding_window} < seq_len: explicit seq^2 attention mask")

    if backend == "hf":
        resid = 4  # peft's fp32 embedding makes the residual stream fp32
        layer_act = hf_layer_activation_bytes_per_token(shape, lora_r, target_modules)
        backward_ws = (HF_BACKWARD_H * H + HF_BACKWARD_I * shape.intermediate_size) * N
        ckpt = _granule(resid * N * H)
        if gc == "none":
            stored = {"activations_all_layers": (_granule(layer_act * N) + ckpt) * L + ckpt}
        else:
            stored = {"checkpointed_layer_inputs": (L + 1) * ckpt}
        loss_phase = {**persistent, **stored, "lm_head_saved": hf_lm_head_saved_bytes(shape, N, c),
                      "logits_and_loss": hf_logits_loss_bytes(shape, N)}
        # Reentrant checkpointing: the backward of the last layer (every checkpoint still held, one
        # layer's LoRA gradients) or of the first (one checkpoint left, every gradient allocated).
        layer_phase = {**persistent, **stored, "lora_grads": grads // L,
                       "layer_activations": (_granule(layer_act * N) if gc != "none" else 0) + mask,
                       "backward_workspace": _granule(backward_ws), "dequant_buffer": dequant}
        if gc == "standard":
            first = dict(layer_phase, checkpointed_layer_inputs=2 * ckpt, lora_grads=grads)
            if sum(first.values()) > sum(layer_phase.values()):
                layer_phase = first
    else:
        if unsloth_fast_path:
            layer_act = unsloth_layer_activation_bytes_per_token(shape, c)
        else:
            # Generic compiled path: the HF layer's saved tensors, but nothing upcast to fp32.
            layer_act = hf_layer_activation_bytes_per_token(shape, lora_r, target_modules) * c // 4
            notes.append("no hand-written Unsloth path: HF layer formula in the load dtype")
        backward_ws = (UNSLOTH_BACKWARD_H_ELEMS * H + UNSLOTH_BACKWARD_I_ELEMS * shape.intermediate_size) * c * N
        hidden = _granule(c * N * H)
        offloaded = gc == "unsloth" and hidden > UNSLOTH_OFFLOAD_MIN_BYTES
        if gc == "none":
            stored = {"activations_all_layers": (_granule(layer_act * N) + hidden) * L}
        elif offloaded:
            stored = {"checkpoint_hidden_on_gpu": UNSLOTH_RESIDENT_HIDDEN * hidden}
        else:  # plain checkpointing: every layer input on the GPU, plus the resident tensors
            stored = {"checkpointed_layer_inputs": (L + UNSLOTH_RESIDENT_HIDDEN - 2) * hidden}
            if gc == "unsloth":
                notes.append(f"{c * N * H} B hidden states are under Unsloth's 2 MiB offload threshold: "
                             "kept on the GPU")
        # The fused loss keeps no logits; with checkpointing the layers run in the backward in
        # reverse, so the worst layer is the last one backpropagated, with every gradient allocated.
        loss_phase = {**persistent, **stored, "logits_and_loss": unsloth_loss_bytes(shape, N),
                      "dequant_buffer": dequant}
        layer_phase = {**persistent, **stored, "lora_grads": grads,
                       "layer_activations": (_granule(layer_act * N) if gc != "none" else 0) + mask,
                       "backward_workspace": _granule(backward_ws), "dequant_buffer": dequant}

    step_phase = {**persistent, "lora_grads": grads,
                  "optimizer_step_temporaries": optimizer_step_transient_bytes(lora, optimizer)}
    if backend == "unsloth":
        step_phase["dequant_buffer"] = dequant
    phases_terms = {"loss": loss_phase, "layer": layer_phase, "optimizer": step_phase}
    phases = {name: sum(t.values()) for name, t in phases_terms.items()}
    peak_phase = max(phases, key=lambda k: phases[k])
    allocated = phases[peak_phase]
    breakdown = {k: int(v) for k, v in phases_terms[peak_phase].items() if v}
    transient = allocated - sum(persistent.values())
    breakdown["allocator_slack"] = allocator_slack_bytes(backend, transient)
    if non_torch_bytes is None:
        non_torch_bytes = non_torch_bytes_for(compute_capability)
        if backend == "unsloth":
            non_torch_bytes += UNSLOTH_EXTRA_NON_TORCH_BYTES
    breakdown["cuda_context_and_libraries"] = int(non_torch_bytes)
    if mask:
        notes.append("attention with an explicit mask may use a kernel that materialises more")
    return Estimate(
        backend=backend, model=model_name or shape.model_type, seq_len=seq_len, batch_size=batch_size, dtype=dtype,
        gradient_checkpointing=gc, optimizer=optimizer, lora_r=lora_r, total_bytes=sum(breakdown.values()),
        peak_phase=peak_phase, breakdown=breakdown, phases={k: int(v) for k, v in phases.items()},
        peak_allocated_bytes=int(allocated), persistent_bytes=int(sum(persistent.values())), notes=notes,
    )


# -- verdicts and the largest predicted fit ---------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    fits: bool
    usable_bytes: int  # the tier's device memory as the driver reports it (context included)
    margin_bytes: int  # usable - predicted; negative when it does not fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(total_bytes: int, usable_bytes: int) -> Verdict:
    return Verdict(total_bytes <= usable_bytes, int(usable_bytes), int(usable_bytes - total_bytes))


def largest_true(pred, lo: int, hi: int) -> Optional[int]:
    """Largest x in [lo, hi] with pred(x) True for a predicate that is True then False (monotone);
    None when pred(lo) is False. Bisection over integers: O(log(hi - lo)) calls."""
    if lo > hi or not pred(lo):
        return None
    if pred(hi):
        return hi
    ok, bad = lo, hi
    while bad - ok > 1:
        mid = (ok + bad) // 2
        if pred(mid):
            ok = mid
        else:
            bad = mid
    return ok


def max_fit_seq_len(config: dict[str, Any], backend: str, batch_size: int, usable_bytes: int,
                    multiple_of: int = 1, max_seq_len: Optional[int] = None, **kwargs) -> Optional[int]:
    """Largest seq_len (a multiple of `multiple_of`) predicted to fit `usable_bytes` at `batch_size`;
    capped at the model's max positions (or `max_seq_len`). None if even the smallest does not fit."""
    shape = model_shape(config)
    cap = max_seq_len or shape.max_positions or 1 << 20
    hi = cap // multiple_of

    def fits(k: int) -> bool:
        return estimate(config, backend, k * multiple_of, batch_size, **kwargs).total_bytes <= usable_bytes

    k = largest_true(fits, 1, hi)
    return None if k is None else k * multiple_of


def max_fit_batch_size(config: dict[str, Any], backend: str, seq_len: int, usable_bytes: int,
                       max_batch_size: int = 4096, **kwargs) -> Optional[int]:
    """Largest batch_size predicted to fit `usable_bytes` at `seq_len` (None if batch 1 does not)."""
    def fits(b: int) -> bool:
        return estimate(config, backend, seq_len, b, **kwargs).total_bytes <= usable_bytes

    return largest_true(fits, 1, max_batch_size)


# -- validation against measured records ----------------------------------------------------------


def error_bound_bytes(measured_bytes: int) -> int:
    """The accuracy target: max(10 % of the measured peak, 0.5 GiB)."""
    return int(max(0.10 * measured_bytes, 0.5 * GiB))


@dataclass
class ValidationRow:
    cell_id: str
    backend: str
    model: str
    tier: str
    mode: str
    gpu_name: Optional[str]
    seq_len: int
    batch_size: int
    dtype: str
    gradient_checkpointing: str
    predicted_bytes: int
    measured_bytes: int
    peak_phase: str

    @property
    def error_bytes(self) -> int:
        return self.predicted_bytes - self.measured_bytes

    @property
    def bound_bytes(self) -> int:
        return error_bound_bytes(self.measured_bytes)

    @property
    def within(self) -> bool:
        return abs(self.error_bytes) <= self.bound_bytes


def compute_capability_of(gpu_name: Optional[str]) -> Optional[tuple[int, int]]:
    """The compute capability of a host GPU name via the tier table (None when unknown)."""
    if not gpu_name:
        return None
    from bench.config.tiers import tier_for_gpu_name

    tier = tier_for_gpu_name(gpu_name)
    return tier.compute_capability if tier else None


def estimate_for_record(r, config: dict) -> Estimate:
    """The estimate for a run record's exact settings, on the GPU generation it ran on."""
    return estimate(config, r.backend, r.seq_len, r.batch_size, model_name=r.model, lora_r=r.lora_r,
                    target_modules=r.target_modules, optimizer=r.optimizer,
                    gradient_checkpointing=r.gradient_checkpointing, dtype=r.dtype,
                    compute_capability=compute_capability_of((r.env or {}).get("gpu_name")))


def validate_records(records, resolve_config) -> tuple[list[ValidationRow], list[str]]:
    """Predict every measured ok GPU record; return rows and the reasons records were left out.

    `resolve_config(model_name) -> config dict` (raises to skip a record). Records without a
    device peak (cpu mode) are not GPU measurements and are skipped.
    """
    rows, skipped = [], []
    for r in records:
        if r.status != "ok" or r.peak_device_bytes is None:
            continue
        try:
            config = resolve_config(r.model)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            skipped.append(f"{r.cell_id}: model {r.model!r} not resolvable ({exc})")
            continue
        gpu_name = (r.env or {}).get("gpu_name")
        try:
            est = estimate_for_record(r, config)
        except EstimateError as exc:
            skipped.append(f"{r.cell_id}: {exc}")
            continue
        rows.append(ValidationRow(
            cell_id=r.cell_id, backend=r.backend, model=r.model, tier=r.tier, mode=r.mode, gpu_name=gpu_name,
            seq_len=r.seq_len, batch_size=r.batch_size, dtype=r.dtype,
            gradient_checkpointing=r.gradient_checkpointing, predicted_bytes=est.total_bytes,
            measured_bytes=int(r.peak_device_bytes), peak_phase=est.peak_phase,
        ))
    return rows, skipped


def _median(values: list[float]) -> Optional[float]:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def allocator_slack_bytes(backend: str, transient_bytes: int) -> int:
    """Reserved minus allocated at the peak (bytes) for a step with `transient_bytes` of transient memory."""
    if transient_bytes <= 0:
        return 0
    return int(ALLOCATOR_SLACK_BASE_BYTES[backend] + ALLOCATOR_SLACK_OF_TRANSIENT[backend] * transient_bytes)


def cap_pressure(record) -> float:
    """peak_reserved_bytes over the emulated tier's torch cap (0..1); 0 for native and cpu records."""
    total = (record.env or {}).get("gpu_memory_bytes")
    if not record.torch_memory_fraction or not total or record.peak_reserved_bytes is None:
        return 0.0
    return record.peak_reserved_bytes / (record.torch_memory_fraction * total)


def _line_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def calibration_from_records(records, resolve_config) -> dict[str, Any]:
    """The calibrated constants as the measured records imply them, over ok GPU cells.

    non_torch_bytes[backend]: median of peak_device_bytes - peak_reserved_bytes (memory outside
    torch). allocator_slack_*[backend]: from (transient, peak_reserved - peak_allocated) pairs,
    transient = peak_allocated - the estimator's persistent bytes, over cells with more than
    256 MiB of transient and under SLACK_CAP_PRESSURE of an emulated cap: for a backend whose
    ALLOCATOR_SLACK_BASE_BYTES is 0 the median ratio (base 0), else a least-squares line.
    `bench estimate --calibrate` prints these beside the constants in this module; a test keeps
    the two in agreement.
    """
    outside: dict[str, list[float]] = {}
    slack: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.status != "ok" or None in (r.peak_device_bytes, r.peak_reserved_bytes, r.peak_allocated_bytes):
            continue
        outside.setdefault(r.backend, []).append(r.peak_device_bytes - r.peak_reserved_bytes)
        if cap_pressure(r) >= SLACK_CAP_PRESSURE:
            continue
        try:
            est = estimate_for_record(r, resolve_config(r.model))
        except Exception:  # noqa: BLE001 - a record the estimator cannot model gives no slack sample
            continue
        transient = r.peak_allocated_bytes - est.persistent_bytes
        if transient > 256 * MiB:
            slack.setdefault(r.backend, []).append((transient, r.peak_reserved_bytes - r.peak_allocated_bytes))
    fraction: dict[str, float] = {}
    base: dict[str, int] = {}
    for b, points in sorted(slack.items()):
        if ALLOCATOR_SLACK_BASE_BYTES.get(b, 0) == 0 or len(points) < 3:
            fraction[b], base[b] = _median([y / x for x, y in points]), 0
        else:
            intercept, slope = _line_fit(points)
            fraction[b], base[b] = slope, int(intercept)
    return {
        "cells": sum(len(v) for v in outside.values()),
        "slack_cells": {b: len(v) for b, v in sorted(slack.items())},
        "non_torch_bytes": {b: int(_median(v)) for b, v in sorted(outside.items())},
        "allocator_slack_of_transient": fraction,
        "allocator_slack_base_bytes": base,
    }


def validation_summary(rows: list[ValidationRow]) -> dict[str, dict[str, Any]]:
    """Per backend: cells, cells within the bound, largest |error| (bytes and % of measured)."""
    out: dict[str, dict[str, Any]] = {}
    for b in sorted({r.backend for r in rows}):
        mine = [r for r in rows if r.backend == b]
        worst = max(mine, key=lambda r: abs(r.error_bytes))
        out[b] = {
            "cells": len(mine),
            "within": sum(r.within for r in mine),
            "max_abs_error_bytes": abs(worst.error_bytes),
            "max_abs_error_pct": max(abs(r.error_bytes) / r.measured_bytes * 100 for r in mine),
            "mean_abs_error_pct": sum(abs(r.error_bytes) / r.measured_bytes * 100 for r in mine) / len(mine),
        }
    return out


def render_validation_markdown(rows: list[ValidationRow], skipped: list[str], sources: list[str],
                               verdicts: Optional[list[dict[str, Any]]] = None) -> str:
    """reports/estimator.md: predicted vs measured peak device memory for every measured ok cell."""
    def g(n: int) -> str:
        return f"{n / GiB:.2f}"

    lines = [
        "# VRAM estimator vs measurement",
        "",
        "Generated by `bench estimate --validate " + " ".join(sources) + "`; do not edit by hand.",
        "",
        "`predicted` is `bench.estimate.estimate` for the cell's exact settings (model config, backend,",
        "seq_len, batch_size, LoRA rank and targets, optimizer, checkpointing, dtype) and the host GPU",
        "it ran on. `measured` is the cell's `peak_device_bytes`: NVML's reading of the worker",
        "process's device memory (CUDA context included), sampled during the cell. Target: |error| <=",
        "max(10 % of measured, 0.5 GiB) on every cell. Emulated tiers ran on a larger GPU with the",
        "allocator capped at the tier's memory; their memory use is measured, not projected.",
        "",
        "Calibrated constants (all others are formulas from the libraries' source, see",
        "`bench/estimate.py`): memory outside torch "
        + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in NON_TORCH_BYTES_BY_CC.items() if k == "9.0")
        + f" (+{UNSLOTH_EXTRA_NON_TORCH_BYTES / MiB:.0f} MiB with unsloth), allocator slack "
        + ", ".join(f"{k} {ALLOCATOR_SLACK_BASE_BYTES[k] / MiB:.0f} MiB + {v:.3f}" for k, v in ALLOCATOR_SLACK_OF_TRANSIENT.items())
        + f" x the transient memory, Unsloth's backward working set of {UNSLOTH_BACKWARD_I_ELEMS} "
        "intermediate-size tensors per token.",
        "",
        "## Summary",
        "",
        "| backend | cells | within bound | max abs error | max abs error % | mean abs error % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b, s in validation_summary(rows).items():
        lines.append(f"| {b} | {s['cells']} | {s['within']} | {g(s['max_abs_error_bytes'])} GiB | "
                     f"{s['max_abs_error_pct']:.1f} % | {s['mean_abs_error_pct']:.1f} % |")
    if not rows:
        lines.append("| - | 0 | 0 | - | - | - |")
    lines += [
        "",
        "## Cells",
        "",
        "| backend | model | tier (mode) | GPU | seq_len | batch | dtype | checkpointing | predicted GiB | "
        "measured GiB | error GiB | error % | bound GiB | within | peak phase |",
        "|---|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.backend, r.model, r.tier, r.mode, r.batch_size, r.seq_len)):
        lines.append(
            f"| {r.backend} | {r.model} | {r.tier} ({r.mode}) | {r.gpu_name or '-'} | {r.seq_len} | {r.batch_size} | "
            f"{r.dtype} | {r.gradient_checkpointing} | {g(r.predicted_bytes)} | {g(r.measured_bytes)} | "
            f"{r.error_bytes / GiB:+.2f} | {r.error_bytes / r.measured_bytes * 100:+.1f} | {g(r.bound_bytes)} | "
            f"{'yes' if r.within else '**NO**'} | {r.peak_phase} |")
    if verdicts:
        lines += [
            "",
            "## Fit verdicts against measured outcomes",
            "",
            "Every measured cell (ok or out of memory) with the estimator's verdict against the tier's memory.",
            "A disagreement is only a miss where the prediction is further from the tier's memory than the",
            "accuracy target (max(10 %, 0.5 GiB)); closer than that, either verdict is within the stated error.",
            "",
            "| backend | model | tier (mode) | seq_len | batch | predicted GiB | tier GiB | predicted | measured | agree |",
            "|---|---|---|---:|---:|---:|---:|---|---|---|",
        ]
        for v in verdicts:
            lines.append(
                f"| {v['backend']} | {v['model']} | {v['tier']} ({v['mode']}) | {v['seq_len']} | {v['batch_size']} | "
                f"{g(v['predicted_bytes'])} | {g(v['usable_bytes'])} | {'fits' if v['predicted_fits'] else 'OOM'} | "
                f"{v['measured_status']} | "
                f"{'yes' if v['agree'] else ('no (within the error band)' if v['near_limit'] else '**no**')} |")
    if skipped:
        lines += ["", "## Records left out", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def fit_verdicts(records, resolve_config) -> list[dict[str, Any]]:
    """For every ok / oom GPU record: the estimator's fits-or-not against the record's tier memory.

    `near_limit`: the prediction lies within the accuracy target of the tier's memory, where a
    verdict either way is within the estimator's stated error (the max-fit search probes there).
    """
    from bench.config.tiers import get_tier

    out = []
    for r in records:
        if r.status not in ("ok", "oom") or r.mode == "cpu":
            continue
        try:
            tier = get_tier(r.tier)
            est = estimate_for_record(r, resolve_config(r.model))
        except Exception:  # noqa: BLE001 - a model or tier the estimator cannot resolve: left out
            continue
        usable = r.memory_limit_bytes or tier.usable_vram_bytes
        measured_fits = r.fits_tier
        predicted_fits = est.total_bytes <= usable
        out.append({"backend": r.backend, "model": r.model, "tier": r.tier, "mode": r.mode, "seq_len": r.seq_len,
                    "batch_size": r.batch_size, "predicted_bytes": est.total_bytes, "usable_bytes": usable,
                    "predicted_fits": predicted_fits, "measured_status": r.fit_outcome,
                    "agree": predicted_fits == measured_fits,
                    "near_limit": abs(est.total_bytes - usable) <= error_bound_bytes(usable)})
    return out

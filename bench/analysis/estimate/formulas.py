"""Byte formulas of the estimator: each term of a training step's memory, a pure function of shapes.

Sizes are bytes unless a name says elements. Notation: N = batch_size * seq_len tokens in a
micro-batch, c = bytes of the compute dtype (2 for bf16 / fp16), r = LoRA rank, and the shape
names of `bench.analysis.estimate.shapes`. Every constant here is read from the libraries' source
(named beside it), not measured; the measured ones live in bench/data/calibration.json.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from bench.analysis.estimate.shapes import ATTN_IN, ATTN_OUT, MLP_ACT, MLP_IN, EstimateError, ModelShape
from bench.config.settings import OPTIMIZERS
from bench.units import GiB, MiB

NF4_BLOCKSIZE = 64  # bitsandbytes quantize_4bit default blocksize (absmax per 64 weights)
NF4_NESTED_BLOCKSIZE = 256  # double quant: absmax re-quantised to uint8 in blocks of 256, fp32 scale each
ALLOC_GRANULE = 512  # the CUDA caching allocator rounds every block up to 512 bytes
OPT8_BLOCKSIZE = 256  # bitsandbytes 8-bit optimizer: one fp32 absmax per 256 state values
OPT8_MIN_SIZE = 4096  # bitsandbytes min_8bit_size: smaller tensors keep fp32 states
#: Optimizers whose AdamW states are not 8-bit (adamw_torch: like the parameter; paged_adamw_32bit: fp32).
FP32_STATE_OPTIMIZERS = ("adamw_torch", "paged_adamw_32bit")

#: TRL's fused LM head projects in tiles of this many tokens x vocabulary entries
#: (trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE, trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE).
TRL_TOKEN_CHUNK, TRL_VOCAB_CHUNK = 4096, 32768
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
#: intermediate with its half-precision copy from the LoRA / 4-bit paths (4I + 4I). That is hf-kbit's
#: (fp32 residual stream); the HF recipes without the upcast hold the same gradients in the residual's
#: dtype, scaled by c / 4 (`hf_backward_workspace_bytes`; an assumption from the call order, not measured).
#: Unsloth MLP backward: the half-precision residual gradients in and out (2 x c*H) and
#: intermediate-size tensors: DW = dY @ W^T (the kernel's own, the other gradients reuse e and g in
#: place) and more per token that the suite's records show (consistent with the per-block
#: torch.compile region keeping silu(e) and silu(e) * g as well). That count is calibrated on the
#: records' per-token slope of peak_allocated_bytes (`Calibration.unsloth_backward_i_elems`); the
#: rest of the formula is physical.
HF_BACKWARD_H, HF_BACKWARD_I = 8, 8
UNSLOTH_BACKWARD_H_ELEMS = 2


def granule(nbytes: float) -> int:
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
    total = granule(-(-numel // 2)) + granule(16 * 4)
    if double_quant:
        nested = -(-blocks // NF4_NESTED_BLOCKSIZE)
        total += granule(blocks) + granule(nested * 4) + granule(4)
    else:
        total += granule(blocks * 4)
    return total


def nf4_weight_bytes(shape: ModelShape, double_quant: bool = True) -> int:
    """All decoder Linears in NF4: sum of `nf4_tensor_bytes` over L x (projections per layer)."""
    return shape.num_layers * sum(nf4_tensor_bytes(lin.weight_params, double_quant) for lin in shape.layer_linears)


def sixteen_bit_weight_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """All decoder Linears kept in the load dtype (16-bit LoRA: no quantisation): c B per weight, one
    allocator block each."""
    return shape.num_layers * sum(granule(compute_bytes * lin.weight_params) for lin in shape.layer_linears)


def unquantized_weight_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """Embeddings, an untied lm_head, norms and biases in the load dtype: c B each. Every recipe but
    hf-kbit keeps them there: TRL's SFTTrainer never calls prepare_model_for_kbit_training, and Unsloth's
    own prepare step upcasts only the LoRA weights (lm_head is in its skip list)."""
    return shape.unquantized_params * compute_bytes


def fp32_upcast_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """What peft's `prepare_model_for_kbit_training` adds by casting every fp16 / bf16 parameter that is
    not a Params4bit to fp32 (hf-kbit): (4 - c) B per unquantized parameter."""
    return shape.unquantized_params * max(4 - compute_bytes, 0)


def lora_bytes(lora_tensors: list[int], param_bytes: int = 4) -> int:
    """LoRA A and B weights: fp32 (4 B; peft upcasts adapters, Unsloth keeps them fp32) or bf16 (2 B;
    TRL's SFTTrainer casts the adapters of a quantised model, trl/trainer/sft_trainer.py)."""
    return sum(granule(param_bytes * n) for n in lora_tensors)


def gradient_bytes(lora_tensors: list[int], param_bytes: int = 4) -> int:
    """Gradients of the LoRA weights, in the weights' dtype."""
    return lora_bytes(lora_tensors, param_bytes)


def optimizer_state_bytes(lora_tensors: list[int], optimizer: str, param_bytes: int = 4) -> int:
    """AdamW states for the LoRA weights.

    adamw_torch: exp_avg + exp_avg_sq like the parameter (torch `zeros_like`): 2 x param_bytes each.
    paged_adamw_32bit (bitsandbytes): two fp32 states whatever the parameter's dtype = 8 B each.
    adamw_8bit / paged_adamw_8bit (bitsandbytes blockwise): two uint8 states (2 B per parameter)
      plus one fp32 absmax per 256 values per state; tensors under 4096 elements keep fp32 states.
    Paged states live in CUDA managed memory, resident on the device while training, so they are
    counted the same.
    """
    if optimizer not in OPTIMIZERS:
        raise EstimateError(f"unknown optimizer {optimizer!r}")
    total = 0
    for n in lora_tensors:
        if optimizer == "adamw_torch":
            total += 2 * granule(param_bytes * n)
        elif optimizer in FP32_STATE_OPTIMIZERS or n < OPT8_MIN_SIZE:
            total += 2 * granule(4 * n)
        else:
            blocks = -(-n // OPT8_BLOCKSIZE)
            total += 2 * granule(n) + 2 * granule(4 * blocks)
    return total


def optimizer_step_transient_bytes(lora_tensors: list[int], optimizer: str, param_bytes: int = 4) -> int:
    """Temporaries of `optimizer.step()`: torch's foreach AdamW builds one copy per parameter in its
    dtype; the bitsandbytes kernels update in place (0)."""
    return sum(granule(param_bytes * n) for n in lora_tensors) if optimizer == "adamw_torch" else 0


def hf_backward_workspace_bytes(shape: ModelShape, n_tokens: int, residual_bytes: int) -> int:
    """Backward working set of one HF decoder layer (HF_BACKWARD_H x H + HF_BACKWARD_I x I bytes per
    token at an fp32 residual stream), scaled to the residual's element size."""
    per_token = HF_BACKWARD_H * shape.hidden_size + HF_BACKWARD_I * shape.intermediate_size
    return granule(per_token * n_tokens * residual_bytes // 4)


def dequant_buffer_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """The largest dequantised weight: c * in * out of the biggest projection, plus its fp32 absmax.
    bitsandbytes dequantises a 4-bit weight for each matmul with many rows (transient); Unsloth's
    `fast_dequantize` keeps a global buffer of that size."""
    biggest = max(lin.weight_params for lin in shape.layer_linears)
    return granule(compute_bytes * biggest) + granule(4 * -(-biggest // NF4_BLOCKSIZE))


def hf_layer_activation_bytes_per_token(shape: ModelShape, r: int, target_modules: Optional[Iterable[str]],
                                        compute_bytes: int = 2, residual_bytes: int = 4, lora_param_bytes: int = 4,
                                        liger: bool = False) -> int:
    """Bytes per token one HF decoder layer saves for backward under autocast with peft LoRA, beyond
    its input. The defaults are hf-kbit's: peft's fp32 upcast (`residual_bytes` 4) and fp32 LoRA.

    With the upcast the residual stream and the norm outputs are fp32 and every bnb Linear4bit
    returns fp32 (`.to(inp_dtype)`); without it (every other HF recipe, `residual_bytes` = c) they
    are c bytes. bnb's MatMul4Bit and a frozen 16-bit Linear save no input; what is saved:
      LoRA inputs: where the input and the LoRA weights differ in dtype (fp32 residual, or fp32 LoRA
        weights, to which peft casts the input before autocast casts it back) each targeted
        projection keeps its own c-byte copy (c * in); where both are c bytes (TRL's bf16 adapters)
        the projections reading one tensor share it: c*H per norm output read, c*I for the MLP
        activation, nothing for the attention output (SDPA saves it); plus lora_A's output (c*r) each;
      attention (SDPA flash / memory-efficient, no seq^2 matrix): q (c qd), k and v (c kvd each),
        the output (c qd) and the log-sum-exp (4 per head);
      norms: upcast: each norm's fp32 input but the first's (the layer input, 4H) and 1 / rms (4);
        16-bit: transformers' RMSNorm keeps its fp32 copy of the input (4H) and 1 / rms (4) for every
        norm; Liger's RMSNorm (`ops/rms_norm.py`) saves its input itself (c*H, the first one's is the
        layer input) and an fp32 rstd (4). LayerNorm keeps 12 B of statistics instead of 4;
      gated MLP: gate and up outputs and the activation, at the residual's precision (3 x 4I upcast,
        3 x cI in 16-bit); Liger's SiLU/GELU-mul (`ops/swiglu.py`) saves only its two inputs (2 x cI)
        and recomputes the activation in its backward; plain MLP: the first projection's output.
    Llama-8B, hf-kbit, r=16, all projections: 14H + 6qd + 4kvd + 14I + 4nh + 14r + 8 bytes; hf-trl
    (bf16 adapters) 12H + 4qd + 4kvd + 8I + 4nh + 14r + 8.
    """
    c, H, I = compute_bytes, shape.hidden_size, shape.intermediate_size
    upcast = residual_bytes > compute_bytes
    targets = shape.targets(target_modules)
    if upcast or lora_param_bytes != compute_bytes:
        lin_in = sum(c * lin.in_features for lin in targets)
    else:
        shared = {ATTN_IN: c * H, ATTN_OUT: 0, MLP_IN: c * H, MLP_ACT: c * I}
        lin_in = sum(shared[src] for src in {lin.source for lin in targets})
    lin_in += len(targets) * c * r
    attn = c * shape.q_dim + 2 * c * shape.kv_dim + c * shape.q_dim + 4 * shape.num_heads
    stats = shape.norms_per_layer * 4 * (3 if shape.norm_bias else 1)
    if upcast:
        norms = (shape.norms_per_layer - 1) * 4 * H + stats
    elif liger:
        norms = (shape.norms_per_layer - 1) * c * H + shape.norms_per_layer * 4
    else:
        norms = shape.norms_per_layer * 4 * H + stats
    per_i = residual_bytes if upcast else c
    mlp = ((2 if liger else 3) if shape.gated_mlp else 1) * per_i * I
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
        return granule(batch_size * seq_len * seq_len)
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
    return granule(per * n_tokens * shape.vocab_size)


def hf_lm_head_weight_copy_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """The c-byte copy of the fp32 lm_head weight (c * V * H) autocast makes because peft upcast the
    weight (hf-kbit with full logits); HF's lm_head keeps it from the forward until its backward."""
    return granule(compute_bytes * shape.vocab_size * shape.hidden_size)


def hf_lm_head_input_copy_bytes(shape: ModelShape, n_tokens: int, compute_bytes: int) -> int:
    """The c-byte copy of the fp32 final hidden states (c * N * H) autocast makes for hf-kbit's lm_head.
    (The saved tensors of a real layer show that a frozen head keeps only the weight, so this term
    over-counts by c * N * H; it is kept because hf-kbit's calibrated slack was fitted with it.)"""
    return granule(compute_bytes * n_tokens * shape.hidden_size)


def trl_chunked_loss_bytes(shape: ModelShape, n_tokens: int, compute_bytes: int, hidden_bytes: int,
                           weight_bytes: int) -> int:
    """TRL's fused LM head (`trl/kernels/chunked_logprob.py`, `ChunkedLogProbFunction`) at its peak,
    the end of its backward; `n_tokens` = label positions (batch * (seq_len - 1)), h = `hidden_bytes`:
      the label positions' hidden states (`hidden_states[mask]`, h * N * H), saved for the backward;
      the fp32 gradient accumulator (4 * N * H) and its copy in the hidden dtype it returns
        (h * N * H; none when h is 4: `.to` returns the same tensor);
      one logits tile of TRL_TOKEN_CHUNK tokens x TRL_VOCAB_CHUNK vocabulary in the compute dtype;
      compute-dtype copies of one hidden chunk (when h != c) and of one lm_head weight chunk (when the
        weight is not in the compute dtype: hf-kbit's fp32 lm_head);
      fp32 log-sum-exp and entropy saved per token and the incoming log-prob gradient (12 B per token).
    No [N, V] logits: the tile is reused for every chunk.
    """
    c, H = compute_bytes, shape.hidden_size
    rows, cols = min(n_tokens, TRL_TOKEN_CHUNK), min(shape.vocab_size, TRL_VOCAB_CHUNK)
    total = granule(hidden_bytes * n_tokens * H) + granule(4 * n_tokens * H) + granule(c * rows * cols)
    total += granule(hidden_bytes * n_tokens * H) if hidden_bytes != 4 else 0
    total += granule(c * rows * H) if hidden_bytes != c else 0
    total += granule(c * cols * H) if weight_bytes != c else 0
    return total + 3 * granule(4 * n_tokens)


def unsloth_loss_bytes(shape: ModelShape, n_tokens: int) -> int:
    """Unsloth's fused lm_head + cross-entropy working set: one fp32 logits chunk of `unsloth_ce_rows`
    rows x V (the gradient reuses the same buffer), beside d(loss)/d(hidden) which the resident
    hidden-state term already counts."""
    rows = unsloth_ce_rows(n_tokens, shape.hidden_size, shape.vocab_size)
    return granule(rows * (-(-shape.vocab_size // 8) * 8) * 4)


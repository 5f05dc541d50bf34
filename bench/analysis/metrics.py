"""Metric math: pure functions of measured numbers (no imports from the suite; every stage may use them).

FLOPs convention (used for MFU and HFU; per trained token):
  N = weights taking part in a matrix product per token (decoder Linears + lm_head), H = lm_head's
  weights (part of N), L = decoder layers, d = n_heads * head_dim, s = the cell's sequence length.
  Attention (scores and weighted sum), causal: A = 2 * L * s * d per token forward, half of the
  non-causal 4 * L * s * d (each position attends to the positions before it).
  Model FLOPs, `flops_per_token`, for QLoRA on a frozen base (the usual MFU convention: recompute not counted):
      forward 2N + A, backward activation gradients only 2N + 2A (the frozen 4-bit base gets no weight
      gradients), no recompute:                     model = 4N + 3A
  Hardware FLOPs, `hardware_flops_per_token`: the model FLOPs plus what gradient checkpointing
  recomputes: the decoder layers' forward once more (HF and Unsloth checkpoint per decoder layer; the
  lm_head is not recomputed):
      with checkpointing:  hardware = 4N + 3A + 2(N - H) + A;   without:  hardware = model
  Attention is counted causal in both: FlashAttention and SDPA's fused kernels skip the fully masked
  blocks (the eager path computes them and masks: its HFU is understated). The kernels' own recompute
  (FlashAttention's backward recomputes the scores) is not counted. LoRA's own FLOPs (the adapters'
  products and their weight gradients: r x (in + out) per adapted Linear against its in x out) are
  ignored in both.
  MFU = model FLOPs/token x trained (non-padding) tokens/s / the host GPU's dense peak in the training
  dtype; HFU = hardware FLOPs/token x tokens/s with padding counted (the GPU computes padded positions)
  / the same peak. MFU <= HFU; equal without checkpointing on unpadded data. Records before schema 3
  counted 6N + 4 * (4 * L * s * d) with checkpointing (recompute and non-causal attention) as MFU:
  about 1.5x today's MFU.

Energy: NVML's total energy counter (millijoules since the driver loaded) read at the end of the last
warm-up step and at the end of the last timed step; `joules_per_1k_tokens` = the joules between the
two reads per 1,000 trained (non-padding) tokens of the timed steps.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


def throughput(step_tokens: Sequence[int], step_s: Sequence[float]) -> Optional[float]:
    """Steady-state throughput (tokens/s): the tokens of the timed steps over their total time."""
    total = sum(step_s)
    if not step_s or total <= 0 or len(step_tokens) != len(step_s):
        return None
    return sum(step_tokens) / total


def attention_dims(config: dict[str, Any]) -> tuple[int, int]:
    """(n_layers, n_heads * head_dim) of a transformers config dict."""
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    return layers, heads * int(head_dim)


def causal_attention_flops(n_layers: int, attn_width: int, seq_len: int) -> float:
    """Forward FLOPs per token of the attention scores and weighted sum under a causal mask:
    2 * n_layers * seq_len * attn_width (half the non-causal 4 * L * s * d)."""
    return float(2 * n_layers * seq_len * attn_width)


def flops_per_token(matmul_params: int, n_layers: int, attn_width: int, seq_len: int) -> float:
    """Model FLOPs per trained token for QLoRA (frozen base): 4N + 3A, no recompute, causal
    attention (module docstring)."""
    return float(4 * matmul_params + 3 * causal_attention_flops(n_layers, attn_width, seq_len))


def hardware_flops_per_token(matmul_params: int, head_params: int, n_layers: int, attn_width: int, seq_len: int,
                             checkpointing: bool) -> float:
    """FLOPs the GPU executes per token: the model FLOPs plus, with gradient checkpointing, the decoder
    layers' forward again (2 * (N - lm_head) + A); causal attention (module docstring)."""
    model = flops_per_token(matmul_params, n_layers, attn_width, seq_len)
    if not checkpointing:
        return model
    return model + 2 * (matmul_params - head_params) + causal_attention_flops(n_layers, attn_width, seq_len)


def _utilisation(flops_per_tok: Optional[float], tokens_per_s: Optional[float],
                 peak_tflops: Optional[float]) -> Optional[float]:
    if not flops_per_tok or not tokens_per_s or not peak_tflops:
        return None
    return flops_per_tok * tokens_per_s / (peak_tflops * 1e12)


def mfu(flops_per_tok: Optional[float], tokens_per_s: Optional[float], peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1]: model FLOPs/token x trained (non-padding) tokens/s / peak
    (TFLOP/s); None when something is unknown."""
    return _utilisation(flops_per_tok, tokens_per_s, peak_tflops)


def hfu(hardware_flops_per_tok: Optional[float], tokens_per_s_padded: Optional[float],
        peak_tflops: Optional[float]) -> Optional[float]:
    """Hardware FLOPs utilisation in [0, 1]: hardware FLOPs/token x tokens/s with padding counted / peak
    (TFLOP/s); None when something is unknown."""
    return _utilisation(hardware_flops_per_tok, tokens_per_s_padded, peak_tflops)


def energy_between(start_mj: Optional[int], end_mj: Optional[int]) -> Optional[float]:
    """Joules between two reads of NVML's total energy counter (millijoules); None when a read is
    missing or the counter went backwards (the driver reloaded)."""
    if start_mj is None or end_mj is None or end_mj < start_mj:
        return None
    return (end_mj - start_mj) / 1000.0


def joules_per_1k_tokens(energy_j: Optional[float], tokens: Optional[int]) -> Optional[float]:
    """Joules per 1,000 trained tokens; None without energy or tokens."""
    if energy_j is None or not tokens or tokens <= 0:
        return None
    return energy_j * 1000.0 / tokens


def speedup(baseline_tokens_per_s: Optional[float], candidate_tokens_per_s: Optional[float]) -> Optional[float]:
    """candidate / baseline throughput (2.0 = twice as fast)."""
    if not baseline_tokens_per_s or not candidate_tokens_per_s:
        return None
    return candidate_tokens_per_s / baseline_tokens_per_s


def memory_reduction(baseline_bytes: Optional[int], candidate_bytes: Optional[int]) -> Optional[float]:
    """Fraction of the baseline's memory the candidate saves (0.6 = 60 % less; negative = more)."""
    if not baseline_bytes or candidate_bytes is None:
        return None
    return 1.0 - candidate_bytes / baseline_bytes


def relative_difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None:
        return None
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


LOSS_RTOL = 1e-3


def parity(
    trainable_a: Optional[int], trainable_b: Optional[int], loss_a: Optional[float], loss_b: Optional[float],
    rtol: float = LOSS_RTOL, check_loss: bool = True,
) -> dict[str, Any]:
    """Matched-pair check: equal trainable parameter counts and (with `check_loss`) first-step losses
    within `rtol`."""
    reasons = []
    if trainable_a is None or trainable_b is None:
        reasons.append("trainable parameter count missing")
    elif trainable_a != trainable_b:
        reasons.append(f"trainable parameters differ: {trainable_a:,} vs {trainable_b:,}")
    rel = relative_difference(loss_a, loss_b)
    if rel is None:
        if check_loss:
            reasons.append("first-step loss missing")
    elif rel > rtol:
        reasons.append(f"first-step losses differ by {rel:.2e} (> {rtol:.0e}): {loss_a:.5f} vs {loss_b:.5f}")
    return {
        "matched": not reasons,
        "reasons": reasons,
        "trainable_params": [trainable_a, trainable_b],
        "loss_first": [loss_a, loss_b],
        "loss_rel_diff": rel,
        "rtol": rtol,
    }

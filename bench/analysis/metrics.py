"""Metric math: pure functions of measured numbers (no imports from the suite; every stage may use them).

FLOPs convention (documented here, used for MFU):
  N = weights taking part in a matrix product per token (decoder Linears + lm_head).
  Frozen 4-bit base + LoRA: forward 2N; backward needs activation gradients only (2N, the base
  weights get no gradient); gradient checkpointing recomputes the forward once more (2N).
  So dense FLOPs/token = 6N with checkpointing, 4N without ("~6N" of the usual 6N rule, for a
  different reason: recompute instead of weight gradients). LoRA's own FLOPs (<1 %) are ignored.
  Attention scores and the weighted sum: forward A = 4 * n_layers * seq_len * n_heads * head_dim
  per token (causal masking not discounted, as in PaLM's MFU); backward 2A (gradients for both
  operands); recompute A. So attention FLOPs/token = 4A with checkpointing, 3A without.
  MFU = FLOPs/token * tokens/s / the host GPU's dense peak in the training dtype.
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


def flops_per_token(matmul_params: int, n_layers: int, attn_width: int, seq_len: int, checkpointing: bool) -> float:
    """Model FLOPs per trained token for QLoRA (frozen base), see the module docstring."""
    dense = (6 if checkpointing else 4) * matmul_params
    attention_fwd = 4 * n_layers * seq_len * attn_width
    return float(dense + (4 if checkpointing else 3) * attention_fwd)


def mfu(flops_per_tok: float, tokens_per_s: Optional[float], peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1], or None when something is unknown."""
    if not tokens_per_s or not peak_tflops:
        return None
    return flops_per_tok * tokens_per_s / (peak_tflops * 1e12)


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

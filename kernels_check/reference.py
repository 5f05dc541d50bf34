"""Plain-PyTorch references for the Unsloth kernels that have one (what vanilla HF QLoRA runs).

Each copies the Hugging Face / bitsandbytes formula it stands for (file named per function);
tests/integration/test_kernels_check.py checks them against those implementations on CPU, and
tests/gpu/test_kernels.py compares Unsloth's kernels with them on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward (transformers/models/llama/modeling_llama.py:62-67)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """transformers/models/llama/modeling_llama.py:130-134."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """apply_rotary_pos_emb (modeling_llama.py:138-160) for q, k [batch, heads, seq, head_dim], cos/sin [seq, head_dim]."""
    cos, sin = cos[None, None], sin[None, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [seq_len, head_dim] in float32 as LlamaRotaryEmbedding builds them (default rope type)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """LlamaMLP's act_fn(gate_proj(x)) * up_proj(x) with ACT2FN["silu"] (modeling_llama.py:163)."""
    return F.silu(gate) * up


def geglu_exact(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """GELU (erf) gating, ACT2FN["gelu"]."""
    return F.gelu(gate, approximate="none") * up


def geglu_approx(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """GELU (tanh) gating, ACT2FN["gelu_pytorch_tanh"] (Gemma / Gemma2)."""
    return F.gelu(gate, approximate="tanh") * up


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over labelled positions, logits upcast to float32 as ForCausalLMLoss does (no shift)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """lm_head then causal-LM CE with the next-token shift (transformers/loss/loss_utils.py ForCausalLMLoss)."""
    logits = hidden @ weight.t()
    return cross_entropy(logits[:, :-1], labels[:, 1:])


def nf4_dequantize(packed: torch.Tensor, quant_state, dtype=None) -> torch.Tensor:
    """Dequantise bitsandbytes NF4 (blockwise absmax, optional double quant) with tensor ops only.

    bitsandbytes: two 4-bit codes per byte, high nibble first; value = code[nibble] * absmax[block];
    with double quant absmax itself is 8-bit: code2[byte] * absmax2[block2] + offset. Products are
    float32; the result is rounded to `dtype` (default: the quantised weight's dtype).
    """
    absmax = quant_state.absmax
    if quant_state.nested:
        s2 = quant_state.state2
        a = s2.code.to(absmax.device)[absmax.long()].float().reshape(-1)
        scale = s2.absmax.float().repeat_interleave(s2.blocksize)[: a.numel()]
        absmax = a * scale + quant_state.offset
    absmax = absmax.float().reshape(-1)
    b = packed.reshape(-1)
    code = quant_state.code.to(b.device).float()
    vals = torch.stack((code[(b >> 4).long()], code[(b & 0xF).long()]), dim=-1).reshape(-1)
    vals = vals * absmax.repeat_interleave(quant_state.blocksize)[: vals.numel()]
    return vals.reshape(quant_state.shape).to(dtype or quant_state.dtype)


def rel_max_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| / max |ref|, in float32 (0 when both are all zero)."""
    x, ref = x.detach().float(), ref.detach().float()
    scale = ref.abs().max().item()
    err = (x - ref).abs().max().item()
    return err / scale if scale > 0 else err

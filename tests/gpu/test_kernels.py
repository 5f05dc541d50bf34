"""Unsloth's kernels vs their PyTorch references: correctness, then time (GPU only; pytest-benchmark).

    pytest tests/gpu/test_kernels.py --benchmark-only --benchmark-json=reports/kernels-benchmark.json

Every test draws fresh random inputs (the seed is printed in a failure and stored in the
benchmark's extra_info), computes a float32 ground truth from those same low-precision inputs,
checks Unsloth's output and gradients against it within the per-dtype bounds below, then times
one implementation. Each kernel is benchmarked once per implementation ("unsloth", "torch", and
"bitsandbytes" for NF4) in the same benchmark group, so pytest-benchmark's own storage and
`pytest-benchmark compare` set them side by side. The correctness check runs in the "unsloth"
variant, so `--benchmark-only` still checks every kernel.

These tests import unsloth, lazily and only after the CUDA skip: run them in a process that runs
no Hugging Face baseline training (importing unsloth patches transformers globally).
"""

from __future__ import annotations

import importlib
import os
import types

import pytest
import torch

from kernels_check import reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="kernel tests need a CUDA GPU (and import unsloth)"),
]

# Relative error bounds, max |x - truth| / max |truth|, truth in float32 from the same inputs.
# One rounding of an output costs 2^-8 (bf16) / 2^-11 (fp16) relative to that element; the eager
# references round intermediates too, so bounds allow a few ulps, gradients (reductions, one more
# rounded product) twice that.
FWD_BOUND = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
BWD_BOUND = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
# NF4 dequantisation is exact arithmetic on the same codes and scales: at most one ulp of rounding.
DEQUANT_BOUND = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -10}

ROUNDS = 20
TOKENS = 2048  # batch 1 x seq 2048, Llama-3.1-8B widths below
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 4096, 14336, 32, 8, 128, 128256
CE_TOKENS = 1024

DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]


@pytest.fixture(scope="session")
def unsloth_kernels():
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    importlib.import_module("unsloth")  # first: it patches transformers
    return importlib.import_module("unsloth.kernels")


@pytest.fixture
def seed():
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    torch.cuda.manual_seed(s)
    return s


def _need(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")


def _check(name: str, got: torch.Tensor, truth: torch.Tensor, bound: float, seed: int) -> float:
    err = ref.rel_max_error(got, truth)
    assert err <= bound, f"{name}: relative max error {err:.3e} > {bound:.1e} (seed {seed})"
    return err


def _bench(benchmark, group: str, target, setup, **info) -> None:
    """Time target(*setup()) with the device synchronised; setup (fresh copies) is not timed."""
    benchmark.group = group
    benchmark.extra_info.update(info)

    def prepared():
        args = setup()
        torch.cuda.synchronize()
        return args, {}

    def run(*args):
        target(*args)
        torch.cuda.synchronize()

    benchmark.pedantic(run, setup=prepared, rounds=ROUNDS, iterations=1, warmup_rounds=2)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _one_input_kernel(benchmark, seed, impl, dtype, group, x, fns, truth, checks, grad_out=None) -> None:
    """The body of the one-input kernels (RMSNorm, CE, fused linear CE).

    `fns[impl](x)` is the output (a loss or an activation) of a fresh leaf copy of `x`; it and
    x's gradient (backward with `grad_out`, None for a scalar loss) are compared with `truth`
    (float32 math on the same inputs), bounds checked in the "unsloth" variant under the names
    `checks` = (output, gradient); then forward + backward is timed.
    """
    x32 = _leaf(x.float())
    y32 = truth(x32)
    y32.backward(None if grad_out is None else grad_out.float())

    def run(xl):
        y = fns[impl](xl)
        y.backward(grad_out)
        return y, xl.grad

    y, dx = run(_leaf(x))
    info = {"seed": seed, "fwd_err": ref.rel_max_error(y, y32), "bwd_err": ref.rel_max_error(dx, x32.grad)}
    if impl == "unsloth":
        _check(checks[0], y, y32, FWD_BOUND[dtype], seed)
        _check(checks[1], dx, x32.grad, BWD_BOUND[dtype], seed)
    _bench(benchmark, f"{group} {str(dtype)[6:]}", run, lambda: (_leaf(x),), **info)


# -- RMSNorm ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "torch"])
def test_rms_norm(benchmark, unsloth_kernels, seed, impl, dtype):
    _need(dtype)
    eps = 1e-5
    x = torch.randn(1, TOKENS, HIDDEN, device="cuda", dtype=dtype)
    w = (torch.rand(HIDDEN, device="cuda") + 0.5).to(dtype)  # frozen in QLoRA: no weight gradient
    dy = torch.randn_like(x)
    layer = types.SimpleNamespace(weight=w, variance_epsilon=eps)
    fns = {"unsloth": lambda xl: unsloth_kernels.fast_rms_layernorm(layer, xl),
           "torch": lambda xl: ref.rms_norm(xl, w, eps)}
    _one_input_kernel(benchmark, seed, impl, dtype, "rms_norm", x, fns, lambda x32: ref.rms_norm(x32, w.float(), eps),
                      ("rms_norm forward", "rms_norm dX"), grad_out=dy)


# -- RoPE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "torch"])
def test_rope(benchmark, unsloth_kernels, seed, impl, dtype):
    _need(dtype)
    q = torch.randn(1, HEADS, TOKENS, HEAD_DIM, device="cuda", dtype=dtype)
    k = torch.randn(1, KV_HEADS, TOKENS, HEAD_DIM, device="cuda", dtype=dtype)
    cos32, sin32 = ref.rope_tables(TOKENS, HEAD_DIM, base=500000.0, device="cuda")
    cos, sin = cos32.to(dtype), sin32.to(dtype)  # HF hands the tables over in the activations' dtype
    dq, dk = torch.randn_like(q), torch.randn_like(k)
    q32, k32 = _leaf(q.float()), _leaf(k.float())
    tq, tk = ref.rope(q32, k32, cos.float(), sin.float())
    torch.autograd.backward((tq, tk), (dq.float(), dk.float()))

    def unsloth(ql, kl):
        oq, ok = unsloth_kernels.fast_rope_embedding(ql, kl, cos, sin)
        torch.autograd.backward((oq, ok), (dq, dk))
        return oq, ok, ql.grad, kl.grad

    def torch_ref(ql, kl):
        oq, ok = ref.rope(ql, kl, cos, sin)
        torch.autograd.backward((oq, ok), (dq, dk))
        return oq, ok, ql.grad, kl.grad

    fn = unsloth if impl == "unsloth" else torch_ref
    oq, ok, gq, gk = fn(_leaf(q), _leaf(k))
    info = {"seed": seed, "fwd_err": max(ref.rel_max_error(oq, tq), ref.rel_max_error(ok, tk)),
            "bwd_err": max(ref.rel_max_error(gq, q32.grad), ref.rel_max_error(gk, k32.grad))}
    if impl == "unsloth":
        _check("rope Q", oq, tq, FWD_BOUND[dtype], seed)
        _check("rope K", ok, tk, FWD_BOUND[dtype], seed)
        _check("rope dQ", gq, q32.grad, FWD_BOUND[dtype], seed)  # linear in Q: same bound as forward
        _check("rope dK", gk, k32.grad, FWD_BOUND[dtype], seed)
    _bench(benchmark, f"rope {str(dtype)[6:]}", fn, lambda: (_leaf(q), _leaf(k)), **info)


# -- SwiGLU / GeGLU -----------------------------------------------------------------------------
GLU = {
    "swiglu": (ref.swiglu, "swiglu_fg_kernel", "swiglu_DWf_DW_dfg_kernel"),
    "geglu_exact": (ref.geglu_exact, "geglu_exact_forward_kernel", "geglu_exact_backward_kernel"),
    "geglu_approx": (ref.geglu_approx, "geglu_approx_forward_kernel", "geglu_approx_backward_kernel"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "torch"])
@pytest.mark.parametrize("kind", list(GLU))
def test_glu(benchmark, unsloth_kernels, seed, kind, impl, dtype):
    _need(dtype)
    torch_fn, fwd_name, bwd_name = GLU[kind]
    fwd, bwd = getattr(unsloth_kernels, fwd_name), getattr(unsloth_kernels, bwd_name)
    e = torch.randn(1, TOKENS, INTERMEDIATE, device="cuda", dtype=dtype)
    g = torch.randn_like(e)
    dh = torch.randn_like(e)
    e32, g32 = _leaf(e.float()), _leaf(g.float())
    h32 = torch_fn(e32, g32)
    h32.backward(dh.float())

    def unsloth(e_, g_, dh2, e2, g2):
        h = fwd(e_, g_)
        # LoRA_MLP's backward: in place, DW <- h, e <- dL/dup (DW * f), g <- dL/dgate (swiglu.py:65-114)
        _, d_up, d_gate = bwd(dh2, e2, g2)
        return h, d_gate, d_up

    def torch_ref(e_, g_, *unused):
        h = torch_fn(e_, g_)
        h.backward(dh)
        return h, e_.grad, g_.grad

    if impl == "unsloth":
        def setup():
            return (e, g, dh.reshape(-1, INTERMEDIATE).clone(), e.reshape(-1, INTERMEDIATE).clone(),
                    g.reshape(-1, INTERMEDIATE).clone())
        fn = unsloth
    else:
        def setup():
            return (_leaf(e), _leaf(g))
        fn = torch_ref
    h, d_gate, d_up = fn(*setup())
    t_gate, t_up = e32.grad.reshape(-1, INTERMEDIATE), g32.grad.reshape(-1, INTERMEDIATE)
    d_gate, d_up = d_gate.reshape(-1, INTERMEDIATE), d_up.reshape(-1, INTERMEDIATE)
    info = {"seed": seed, "fwd_err": ref.rel_max_error(h, h32),
            "bwd_err": max(ref.rel_max_error(d_gate, t_gate), ref.rel_max_error(d_up, t_up))}
    if impl == "unsloth":
        _check(f"{kind} forward", h, h32, FWD_BOUND[dtype], seed)
        _check(f"{kind} d gate", d_gate, t_gate, BWD_BOUND[dtype], seed)
        _check(f"{kind} d up", d_up, t_up, BWD_BOUND[dtype], seed)
    _bench(benchmark, f"{kind} {str(dtype)[6:]}", fn, setup, **info)


# -- cross-entropy ------------------------------------------------------------------------------
def _labels(tokens: int) -> torch.Tensor:
    labels = torch.randint(0, VOCAB, (1, tokens), device="cuda")
    labels[torch.rand(1, tokens, device="cuda") < 0.05] = -100  # some unlabelled positions
    return labels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "torch"])
def test_cross_entropy(benchmark, unsloth_kernels, seed, impl, dtype):
    """Fast_CrossEntropyLoss on materialised logits (unsloth/kernels/cross_entropy_loss.py)."""
    _need(dtype)
    logits = (torch.randn(1, CE_TOKENS, VOCAB, device="cuda") * 2).to(dtype)
    labels = _labels(CE_TOKENS)
    fns = {"unsloth": lambda lg: unsloth_kernels.fast_cross_entropy_loss(lg, labels),
           "torch": lambda lg: ref.cross_entropy(lg, labels)}
    _one_input_kernel(benchmark, seed, impl, dtype, "cross_entropy", logits, fns,
                      lambda l32: ref.cross_entropy(l32, labels), ("cross_entropy loss", "cross_entropy dlogits"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "torch"])
def test_fused_linear_cross_entropy(benchmark, unsloth_kernels, seed, impl, dtype):
    """lm_head + CE as the training forward runs it: Unsloth's chunked fused kernels (logits never
    materialised, unsloth_zoo/fused_losses/chunked_logprob.py:430) vs HF's matmul + float CE."""
    _need(dtype)
    from unsloth_zoo.fused_losses.chunked_logprob import unsloth_chunked_ce_loss

    hidden = torch.randn(1, CE_TOKENS, HIDDEN, device="cuda", dtype=dtype)
    weight = (torch.randn(VOCAB, HIDDEN, device="cuda") * 0.02).to(dtype)  # frozen lm_head
    labels = _labels(CE_TOKENS)
    fns = {"unsloth": lambda h: unsloth_chunked_ce_loss(h, weight, None, labels, shift_labels=True),
           "torch": lambda h: ref.linear_cross_entropy(h, weight, labels)}
    _one_input_kernel(benchmark, seed, impl, dtype, "fused_linear_cross_entropy", hidden, fns,
                      lambda h32: ref.linear_cross_entropy(h32, weight.float(), labels),
                      ("fused linear CE loss", "fused linear CE d hidden"))


# -- NF4 dequantisation -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["unsloth", "bitsandbytes", "torch"])
def test_nf4_dequantize(benchmark, unsloth_kernels, seed, impl, dtype):
    """fast_dequantize (Unsloth's Triton NF4 kernel) vs bitsandbytes' CUDA dequant vs tensor ops."""
    _need(dtype)
    import bitsandbytes.functional as bnbf

    w = (torch.randn(INTERMEDIATE, HIDDEN, device="cuda") * 0.02).to(dtype)
    packed, qs = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    truth = ref.nf4_dequantize(packed, qs, dtype=torch.float32)  # the products before the final rounding
    fns = {
        "unsloth": lambda: unsloth_kernels.fast_dequantize(packed, qs),
        "bitsandbytes": lambda: bnbf.dequantize_4bit(packed, qs),
        "torch": lambda: ref.nf4_dequantize(packed, qs),
    }
    out = fns[impl]()
    assert out.shape == w.shape and out.dtype == dtype
    info = {"seed": seed, "fwd_err": ref.rel_max_error(out, truth)}
    if impl == "unsloth":
        _check("nf4 dequant vs tensor-op reference", out, truth, DEQUANT_BOUND[dtype], seed)
        _check("nf4 dequant vs bitsandbytes", out, bnbf.dequantize_4bit(packed, qs), DEQUANT_BOUND[dtype], seed)
    _bench(benchmark, f"nf4_dequantize {str(dtype)[6:]}", lambda: fns[impl](), lambda: (), **info)

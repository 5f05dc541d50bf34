"""The estimate of one training cell's peak device memory, and the largest sizes predicted to fit.

A step has three phases whose live memory differs:
  * loss:      end of the forward / start of the backward, when the logits and the loss live;
  * layer:     the backward of one decoder layer (recomputed first under checkpointing);
  * optimizer: `optimizer.step()`, activations gone, gradients and states live.
Each phase is a sum of terms (bytes, `bench.analysis.estimate.formulas`); the peak allocation is
the largest phase sum. The device total adds the allocator's slack over that (reserved -
allocated) and the memory outside torch, both calibrated (bench/data/calibration.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional

from bench.analysis.calibration import Calibration, calibrated
from bench.analysis.estimate.formulas import (
    HF_BACKWARD_H,
    HF_BACKWARD_I,
    UNSLOTH_BACKWARD_H_ELEMS,
    UNSLOTH_OFFLOAD_MIN_BYTES,
    UNSLOTH_OFFLOAD_MIN_SEQ,
    UNSLOTH_RESIDENT_HIDDEN,
    dequant_buffer_bytes,
    gradient_bytes,
    granule,
    hf_layer_activation_bytes_per_token,
    hf_lm_head_saved_bytes,
    hf_logits_loss_bytes,
    lora_bytes,
    nf4_weight_bytes,
    optimizer_state_bytes,
    optimizer_step_transient_bytes,
    sliding_window_mask_bytes,
    unquantized_weight_bytes,
    unsloth_layer_activation_bytes_per_token,
    unsloth_loss_bytes,
)
from bench.analysis.estimate.shapes import EstimateError, ModelShape, model_shape
from bench.config.models import unsloth_fast_path as model_fast_path
from bench.config.settings import BACKENDS, CHECKPOINTING, TrainSettings

DTYPES = ("bfloat16", "float16", "float32")


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


def resolve_checkpointing(backend: str, gradient_checkpointing: str, seq_len: int) -> str:
    """The checkpointing a backend runs: "auto" as bench.config.settings resolves it (hf: standard,
    unsloth: unsloth, offloaded); Unsloth turns "unsloth" into plain checkpointing ("standard")
    when max_seq_length < UNSLOTH_OFFLOAD_MIN_SEQ."""
    if gradient_checkpointing not in CHECKPOINTING:
        raise EstimateError(f"unknown gradient checkpointing {gradient_checkpointing!r}")
    gc = TrainSettings(gradient_checkpointing=gradient_checkpointing).checkpointing_for(backend)
    if gc == "unsloth" and backend == "hf":
        raise EstimateError("gradient checkpointing 'unsloth' exists only in the unsloth backend")
    if gc == "unsloth" and seq_len < UNSLOTH_OFFLOAD_MIN_SEQ:
        gc = "standard"
    return gc


def _check_request(backend: str, seq_len: int, batch_size: int, lora_r: int, dtype: str) -> None:
    if backend not in BACKENDS:
        raise EstimateError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if seq_len <= 0 or batch_size <= 0:
        raise EstimateError(f"seq_len and batch_size must be > 0, got {seq_len} and {batch_size}")
    if lora_r <= 0:
        raise EstimateError(f"lora_r must be > 0, got {lora_r}")
    if dtype not in DTYPES:
        raise EstimateError(f"unknown dtype {dtype!r}")


@dataclass(frozen=True)
class _Step:
    """What both backends' phase models share for one cell (bytes; n_tokens = N)."""

    shape: ModelShape
    n_tokens: int
    compute_bytes: int
    checkpointing: str
    lora_r: int
    target_modules: Optional[Iterable[str]]
    persistent: dict[str, int]
    grads: int
    dequant: int
    mask: int


def _hf_phases(s: _Step) -> tuple[dict[str, int], dict[str, int]]:
    """The loss and layer phases' terms of the Hugging Face path."""
    shape, N, gc, c = s.shape, s.n_tokens, s.checkpointing, s.compute_bytes
    H, L = shape.hidden_size, shape.num_layers
    resid = 4  # peft's fp32 embedding makes the residual stream fp32
    layer_act = hf_layer_activation_bytes_per_token(shape, s.lora_r, s.target_modules)
    backward_ws = (HF_BACKWARD_H * H + HF_BACKWARD_I * shape.intermediate_size) * N
    ckpt = granule(resid * N * H)
    if gc == "none":
        stored = {"activations_all_layers": (granule(layer_act * N) + ckpt) * L + ckpt}
    else:
        stored = {"checkpointed_layer_inputs": (L + 1) * ckpt}
    loss_phase = {**s.persistent, **stored, "lm_head_saved": hf_lm_head_saved_bytes(shape, N, c),
                  "logits_and_loss": hf_logits_loss_bytes(shape, N)}
    # Reentrant checkpointing: the backward of the last layer (every checkpoint still held, one
    # layer's LoRA gradients) or of the first (one checkpoint left, every gradient allocated).
    layer_phase = {**s.persistent, **stored, "lora_grads": s.grads // L,
                   "layer_activations": (granule(layer_act * N) if gc != "none" else 0) + s.mask,
                   "backward_workspace": granule(backward_ws), "dequant_buffer": s.dequant}
    if gc == "standard":
        first = dict(layer_phase, checkpointed_layer_inputs=2 * ckpt, lora_grads=s.grads)
        if sum(first.values()) > sum(layer_phase.values()):
            layer_phase = first
    return loss_phase, layer_phase


def _unsloth_phases(s: _Step, fast_path: bool, backward_i_elems: int,
                    notes: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The loss and layer phases' terms of Unsloth (fast path, or its compiled generic path)."""
    shape, N, gc, c = s.shape, s.n_tokens, s.checkpointing, s.compute_bytes
    H, L = shape.hidden_size, shape.num_layers
    if fast_path:
        layer_act = unsloth_layer_activation_bytes_per_token(shape, c)
    else:
        # Generic compiled path: the HF layer's saved tensors, but nothing upcast to fp32.
        layer_act = hf_layer_activation_bytes_per_token(shape, s.lora_r, s.target_modules) * c // 4
        notes.append("no hand-written Unsloth path: HF layer formula in the load dtype")
    backward_ws = (UNSLOTH_BACKWARD_H_ELEMS * H + backward_i_elems * shape.intermediate_size) * c * N
    hidden = granule(c * N * H)
    offloaded = gc == "unsloth" and hidden > UNSLOTH_OFFLOAD_MIN_BYTES
    if gc == "none":
        stored = {"activations_all_layers": (granule(layer_act * N) + hidden) * L}
    elif offloaded:
        stored = {"checkpoint_hidden_on_gpu": UNSLOTH_RESIDENT_HIDDEN * hidden}
    else:  # plain checkpointing: every layer input on the GPU, plus the resident tensors
        stored = {"checkpointed_layer_inputs": (L + UNSLOTH_RESIDENT_HIDDEN - 2) * hidden}
        if gc == "unsloth":
            notes.append(f"{c * N * H} B hidden states are under Unsloth's 2 MiB offload threshold: "
                         "kept on the GPU")
    # The fused loss keeps no logits; with checkpointing the layers run in the backward in
    # reverse, so the worst layer is the last one backpropagated, with every gradient allocated.
    loss_phase = {**s.persistent, **stored, "logits_and_loss": unsloth_loss_bytes(shape, N),
                  "dequant_buffer": s.dequant}
    layer_phase = {**s.persistent, **stored, "lora_grads": s.grads,
                   "layer_activations": (granule(layer_act * N) if gc != "none" else 0) + s.mask,
                   "backward_workspace": granule(backward_ws), "dequant_buffer": s.dequant}
    return loss_phase, layer_phase


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
    calibration: Optional[Calibration] = None,
) -> Estimate:
    """Predict the peak device memory (bytes) of one training cell (see the package docstring).

    `compute_capability` picks the calibrated memory outside torch of the GPU it runs on (an
    emulated tier runs on its host); `non_torch_bytes` overrides it. `unsloth_fast_path` defaults
    to the model types with a hand-written Unsloth path; the others run Unsloth's compiled generic
    path, modelled with the HF layer formula in the load dtype. `calibration` defaults to
    bench/data/calibration.json.
    """
    _check_request(backend, seq_len, batch_size, lora_r, dtype)
    cal = calibration or calibrated()
    shape = model_shape(config)
    if shape.max_positions and seq_len > shape.max_positions:
        raise EstimateError(f"seq_len {seq_len} is over the model's {shape.max_positions} positions")
    c = 4 if dtype == "float32" else 2
    gc = resolve_checkpointing(backend, gradient_checkpointing, seq_len)
    if unsloth_fast_path is None:
        unsloth_fast_path = model_fast_path(shape.model_type)
    lora = shape.lora_tensors(lora_r, target_modules)
    notes: list[str] = []
    persistent = {
        "weights_nf4": nf4_weight_bytes(shape),
        "weights_16_32bit": unquantized_weight_bytes(shape, backend, c),
        "lora_weights": lora_bytes(lora),
        "optimizer_states": optimizer_state_bytes(lora, optimizer),
    }
    step = _Step(shape, seq_len * batch_size, c, gc, lora_r, target_modules, persistent, gradient_bytes(lora),
                 dequant_buffer_bytes(shape, c), sliding_window_mask_bytes(shape, seq_len, batch_size))
    if step.mask:
        notes.append(f"sliding window {shape.sliding_window} < seq_len: explicit seq^2 attention mask")
    if backend == "hf":
        loss_phase, layer_phase = _hf_phases(step)
    else:
        loss_phase, layer_phase = _unsloth_phases(step, unsloth_fast_path, cal.unsloth_backward_i_elems, notes)
    step_phase = {**persistent, "lora_grads": step.grads,
                  "optimizer_step_temporaries": optimizer_step_transient_bytes(lora, optimizer)}
    if backend == "unsloth":
        step_phase["dequant_buffer"] = step.dequant
    phases_terms = {"loss": loss_phase, "layer": layer_phase, "optimizer": step_phase}
    phases = {name: sum(t.values()) for name, t in phases_terms.items()}
    peak_phase = max(phases, key=lambda k: phases[k])
    allocated = phases[peak_phase]
    breakdown = {k: int(v) for k, v in phases_terms[peak_phase].items() if v}
    breakdown["allocator_slack"] = cal.allocator_slack_bytes(backend, allocated - sum(persistent.values()))
    if non_torch_bytes is None:
        non_torch_bytes = cal.non_torch_bytes(backend, compute_capability)
    breakdown["cuda_context_and_libraries"] = int(non_torch_bytes)
    if step.mask:
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
    """Whether a predicted total (bytes) fits a tier's usable memory (bytes), and by how much."""
    return Verdict(total_bytes <= usable_bytes, int(usable_bytes), int(usable_bytes - total_bytes))


def largest_true(pred: Callable[[int], bool], lo: int, hi: int) -> Optional[int]:
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
    capped at the model's max positions (or `max_seq_len`). None if even the smallest does not fit.
    `kwargs`: the training settings `estimate` takes."""
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


def estimate_grid(config: dict[str, Any], backends: Iterable[str], seq_lens: Iterable[int],
                  batch_sizes: Iterable[int], usable_bytes: int, **kwargs) -> list[tuple[Estimate, Verdict]]:
    """`estimate` and its `verdict` against `usable_bytes` for every seq_len x batch_size x backend,
    in that order. `kwargs`: what `estimate` takes besides the sizes (model_name, training settings)."""
    backends, batch_sizes = list(backends), list(batch_sizes)
    out = []
    for s in seq_lens:
        for b in batch_sizes:
            for be in backends:
                e = estimate(config, be, s, b, **kwargs)
                out.append((e, verdict(e.total_bytes, usable_bytes)))
    return out


def predicted_limits(config: dict[str, Any], backends: Iterable[str], seq_lens: Iterable[int],
                     batch_sizes: Iterable[int], usable_bytes: int, seq_multiple: int = 64,
                     **kwargs) -> list[dict[str, Any]]:
    """Per backend: the largest seq_len (multiples of `seq_multiple`) predicted to fit at each batch
    size ({"kind": "max_seq_len", "batch_size", "max_seq_len"}) and the largest batch at each
    seq_len ({"kind": "max_batch_size", "seq_len", "max_batch_size"}); None where nothing fits."""
    seq_lens, batch_sizes = list(seq_lens), list(batch_sizes)
    rows: list[dict[str, Any]] = []
    for be in backends:
        for b in batch_sizes:
            rows.append({"backend": be, "kind": "max_seq_len", "batch_size": b,
                         "max_seq_len": max_fit_seq_len(config, be, b, usable_bytes, multiple_of=seq_multiple,
                                                        **kwargs)})
        for s in seq_lens:
            rows.append({"backend": be, "kind": "max_batch_size", "seq_len": s,
                         "max_batch_size": max_fit_batch_size(config, be, s, usable_bytes, **kwargs)})
    return rows

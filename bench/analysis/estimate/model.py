"""The estimate of one training cell's peak device memory, per recipe.

A step has three phases whose live memory differs:
  * loss:      end of the forward / start of the backward, when the logits (or the fused loss's
               working set) and the loss live;
  * layer:     the backward of one decoder layer (recomputed first under checkpointing);
  * optimizer: `optimizer.step()`, activations gone, gradients and states live.
Each phase is a sum of terms (bytes, `bench.analysis.estimate.formulas`); the peak allocation is
the largest phase sum. The device total adds the allocator's slack over that (reserved -
allocated) and the memory outside torch, both calibrated per library family
(bench/data/calibration.json). What each recipe changes comes from `recipes.recipe_profile`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from bench.analysis.calibration import Calibration, calibrated
from bench.analysis.estimate.formulas import (
    UNSLOTH_BACKWARD_H_ELEMS,
    UNSLOTH_OFFLOAD_MIN_BYTES,
    UNSLOTH_OFFLOAD_MIN_SEQ,
    UNSLOTH_RESIDENT_HIDDEN,
    dequant_buffer_bytes,
    fp32_upcast_bytes,
    gradient_bytes,
    granule,
    hf_backward_workspace_bytes,
    hf_layer_activation_bytes_per_token,
    hf_lm_head_input_copy_bytes,
    hf_lm_head_weight_copy_bytes,
    hf_logits_loss_bytes,
    lora_bytes,
    nf4_weight_bytes,
    optimizer_state_bytes,
    optimizer_step_transient_bytes,
    sixteen_bit_weight_bytes,
    sliding_window_mask_bytes,
    trl_chunked_loss_bytes,
    unquantized_weight_bytes,
    unsloth_layer_activation_bytes_per_token,
    unsloth_loss_bytes,
)
from bench.analysis.estimate.recipes import RecipeProfile, recipe_profile
from bench.analysis.estimate.shapes import EstimateError, ModelShape, model_shape
from bench.config.models import unsloth_fast_path as model_fast_path
from bench.config.recipes import LEGACY_RECIPE, RECIPES
from bench.config.settings import CHECKPOINTING, TrainSettings

DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_DRIVER = "trainer"  # as bench.config.settings.TrainSettings
#: `estimate(config, backend)` reads a library family as version-1 records are read: this driver.
LEGACY_DRIVER = "loop"


@dataclass
class Estimate:
    """A predicted peak; `breakdown` holds the terms live at the peak and sums to `total_bytes`."""

    recipe: str
    backend: str  # the recipe's library family: "hf" | "unsloth"
    driver: str
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


def resolve_checkpointing(recipe: str, gradient_checkpointing: str, seq_len: int) -> str:
    """The checkpointing a recipe runs: "auto" as bench.config.settings resolves it (HF recipes:
    standard, Unsloth's: unsloth, offloaded); Unsloth turns "unsloth" into plain checkpointing
    ("standard") when max_seq_length < UNSLOTH_OFFLOAD_MIN_SEQ."""
    if gradient_checkpointing not in CHECKPOINTING:
        raise EstimateError(f"unknown gradient checkpointing {gradient_checkpointing!r}")
    gc = TrainSettings(gradient_checkpointing=gradient_checkpointing).checkpointing_for(recipe)
    if gc == "unsloth" and RECIPES[recipe].family == "hf":
        unsloth = ", ".join(n for n, r in RECIPES.items() if r.family == "unsloth")
        raise EstimateError(f"gradient checkpointing 'unsloth' exists only in Unsloth's recipes ({unsloth})")
    if gc == "unsloth" and seq_len < UNSLOTH_OFFLOAD_MIN_SEQ:
        gc = "standard"
    return gc


def _check_request(seq_len: int, batch_size: int, lora_r: int, dtype: str) -> None:
    if seq_len <= 0 or batch_size <= 0:
        raise EstimateError(f"seq_len and batch_size must be > 0, got {seq_len} and {batch_size}")
    if lora_r <= 0:
        raise EstimateError(f"lora_r must be > 0, got {lora_r}")
    if dtype not in DTYPES:
        raise EstimateError(f"unknown dtype {dtype!r}")


@dataclass(frozen=True)
class _Step:
    """What every recipe's phase model shares for one cell (bytes; n_tokens = N)."""

    shape: ModelShape
    profile: RecipeProfile
    seq_len: int
    batch_size: int
    compute_bytes: int
    checkpointing: str
    lora_r: int
    target_modules: Optional[Iterable[str]]
    persistent: dict[str, int]
    grads: int
    dequant: int
    mask: int

    @property
    def n_tokens(self) -> int:
        return self.seq_len * self.batch_size


def _hf_loss_terms(s: _Step, residual_bytes: int) -> dict[str, int]:
    """The lm_head and loss at the loss phase: full fp32 logits (the model's own loss), or TRL's
    fused LM head over the label positions (every token but each row's last)."""
    p, shape, c = s.profile, s.shape, s.compute_bytes
    if p.loss == "trl_chunked":
        labels = s.batch_size * (s.seq_len - 1)
        return {"logits_and_loss": trl_chunked_loss_bytes(shape, labels, c, residual_bytes,
                                                          4 if p.fp32_upcast else c)}
    terms = {"logits_and_loss": hf_logits_loss_bytes(shape, s.n_tokens)}
    if p.fp32_upcast:
        terms["lm_head_input_copy"] = hf_lm_head_input_copy_bytes(shape, s.n_tokens, c)
        terms["lm_head_weight_copy"] = hf_lm_head_weight_copy_bytes(shape, c)
    return terms


def _hf_phases(s: _Step) -> tuple[dict[str, int], dict[str, int]]:
    """The loss and layer phases' terms of the Hugging Face recipes."""
    p, shape, N, gc, c = s.profile, s.shape, s.n_tokens, s.checkpointing, s.compute_bytes
    H, L = shape.hidden_size, shape.num_layers
    resid = 4 if p.fp32_upcast else c  # peft's fp32 embedding makes the residual stream fp32
    layer_act = hf_layer_activation_bytes_per_token(shape, s.lora_r, s.target_modules, compute_bytes=c,
                                                    residual_bytes=resid, lora_param_bytes=p.lora_param_bytes,
                                                    liger=p.liger)
    ckpt = granule(resid * N * H)
    # What the final norm saves: its fp32 input (upcast), its 16-bit input (Liger), else its fp32 copy.
    final = granule((resid if p.fp32_upcast or p.liger else 4) * N * H)
    input_saved = p.fp32_upcast or p.liger  # the layer's first op saves the layer input itself
    if gc == "none":
        stored = {"activations_all_layers": (granule(layer_act * N) + (ckpt if input_saved else 0)) * L + final}
    else:
        stored = {"checkpointed_layer_inputs": L * ckpt + final}
    loss_phase = {**s.persistent, **stored, **_hf_loss_terms(s, resid)}
    # Checkpointing: the backward of the last layer (every checkpoint still held, one layer's LoRA
    # gradients) or of the first (one checkpoint left, every gradient allocated).
    layer_phase = {**s.persistent, **stored, "lora_grads": s.grads // L,
                   "layer_activations": (granule(layer_act * N) if gc != "none" else 0) + s.mask,
                   "backward_workspace": hf_backward_workspace_bytes(shape, N, resid), "dequant_buffer": s.dequant}
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


def _persistent(shape: ModelShape, p: RecipeProfile, c: int, lora: list[int], optimizer: str) -> dict[str, int]:
    """Weights, adapters and optimizer states: live through the whole step."""
    out = {"weights_nf4": nf4_weight_bytes(shape)} if p.quantized else {
        "weights_16bit": sixteen_bit_weight_bytes(shape, c)}
    out["weights_unquantized"] = unquantized_weight_bytes(shape, c)
    if p.fp32_upcast:
        out["fp32_upcast_weights"] = fp32_upcast_bytes(shape, c)
    out["lora_weights"] = lora_bytes(lora, p.lora_param_bytes)
    out["optimizer_states"] = optimizer_state_bytes(lora, optimizer, p.lora_param_bytes)
    return out


def estimate_recipe(
    config: dict[str, Any],
    recipe: str,
    seq_len: int,
    batch_size: int,
    *,
    driver: str = DEFAULT_DRIVER,
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
    """Predict the peak device memory (bytes) of one training cell of `recipe` (bench.config.recipes)
    trained by `driver` ("trainer": TRL's SFTTrainer; "loop": the suite's plain loop).

    `compute_capability` picks the calibrated memory outside torch of the GPU it runs on (an
    emulated tier runs on its host); `non_torch_bytes` overrides it. `unsloth_fast_path` defaults
    to the model types with a hand-written Unsloth path; the others run Unsloth's compiled generic
    path, modelled with the HF layer formula in the load dtype. `calibration` defaults to
    bench/data/calibration.json.
    """
    _check_request(seq_len, batch_size, lora_r, dtype)
    cal = calibration or calibrated()
    shape = model_shape(config)
    profile = recipe_profile(recipe, driver, dtype, shape.model_type)
    if shape.max_positions and seq_len > shape.max_positions:
        raise EstimateError(f"seq_len {seq_len} is over the model's {shape.max_positions} positions")
    c = 4 if dtype == "float32" else 2
    gc = resolve_checkpointing(profile.recipe, gradient_checkpointing, seq_len)
    if unsloth_fast_path is None:
        unsloth_fast_path = model_fast_path(shape.model_type)
    lora = shape.lora_tensors(lora_r, target_modules)
    notes: list[str] = list(profile.notes)
    persistent = _persistent(shape, profile, c, lora, optimizer)
    step = _Step(shape, profile, seq_len, batch_size, c, gc, lora_r, target_modules, persistent,
                 gradient_bytes(lora, profile.lora_param_bytes),
                 dequant_buffer_bytes(shape, c) if profile.quantized else 0,
                 sliding_window_mask_bytes(shape, seq_len, batch_size))
    if step.mask:
        notes.append(f"sliding window {shape.sliding_window} < seq_len: explicit seq^2 attention mask")
    if profile.family == "hf":
        loss_phase, layer_phase = _hf_phases(step)
    else:
        loss_phase, layer_phase = _unsloth_phases(step, unsloth_fast_path, cal.unsloth_backward_i_elems, notes)
    step_phase = {**persistent, "lora_grads": step.grads,
                  "optimizer_step_temporaries": optimizer_step_transient_bytes(lora, optimizer,
                                                                               profile.lora_param_bytes)}
    if profile.family == "unsloth":
        step_phase["dequant_buffer"] = step.dequant
    phases_terms = {"loss": loss_phase, "layer": layer_phase, "optimizer": step_phase}
    phases = {name: sum(t.values()) for name, t in phases_terms.items()}
    peak_phase = max(phases, key=lambda k: phases[k])
    allocated = phases[peak_phase]
    breakdown = {k: int(v) for k, v in phases_terms[peak_phase].items() if v}
    breakdown["allocator_slack"] = cal.allocator_slack_bytes(profile.family, allocated - sum(persistent.values()))
    if non_torch_bytes is None:
        non_torch_bytes = cal.non_torch_bytes(profile.family, compute_capability)
    breakdown["cuda_context_and_libraries"] = int(non_torch_bytes)
    if step.mask:
        notes.append("attention with an explicit mask may use a kernel that materialises more")
    return Estimate(
        recipe=profile.recipe, backend=profile.family, driver=driver, model=model_name or shape.model_type,
        seq_len=seq_len, batch_size=batch_size, dtype=dtype, gradient_checkpointing=gc, optimizer=optimizer,
        lora_r=lora_r, total_bytes=sum(breakdown.values()), peak_phase=peak_phase, breakdown=breakdown,
        phases={k: int(v) for k, v in phases.items()}, peak_allocated_bytes=int(allocated),
        persistent_bytes=int(sum(persistent.values())), notes=notes,
    )


def estimate(config: dict[str, Any], backend: str, seq_len: int, batch_size: int, *,
             driver: Optional[str] = None, **kwargs) -> Estimate:
    """`estimate_recipe` for a recipe name or, as version-1 records are read, a library family:
    "hf" is hf-kbit and "unsloth" is unsloth, with the loop driver unless `driver` says otherwise.
    A recipe name takes the trainer driver by default. `kwargs`: what `estimate_recipe` takes."""
    if backend in RECIPES:
        return estimate_recipe(config, backend, seq_len, batch_size, driver=driver or DEFAULT_DRIVER, **kwargs)
    if backend in LEGACY_RECIPE:
        return estimate_recipe(config, LEGACY_RECIPE[backend], seq_len, batch_size, driver=driver or LEGACY_DRIVER,
                               **kwargs)
    raise EstimateError(f"unknown backend or recipe {backend!r}; recipes: {', '.join(RECIPES)} "
                        f"(backends {', '.join(LEGACY_RECIPE)} are read as {', '.join(LEGACY_RECIPE.values())})")

"""Static check (no profiler): what Unsloth (or Liger) installed on a loaded model, and what Unsloth printed.

Works on any torch model and never imports unsloth: Unsloth's patches are recognised by the
names and marker attributes its source gives them (unsloth 2026.10.9; file:line below are in the
installed unsloth / unsloth_zoo):

- fast path (unsloth/models/llama.py): class forwards replaced by `<Arch>..._fast_forward`
  (pre_patch, llama.py:3456), wrapped by `_gated_method` (functools.wraps, `_unsloth_gated`,
  llama.py:3300), optionally by the per-block torch.compile wrapper (`_unsloth_block_compiled`,
  `_unsloth_block_original`, models/_block_compile.py:19, :999); every module marked
  `_unsloth_fast_path` (llama.py:3313); fused LoRA installed per instance: `self_attn.apply_qkv =
  apply_lora_qkv`, `self_attn.apply_o = apply_lora_o`, `mlp.forward` (or `mlp._unsloth_forward`) a
  bound `apply_lora_mlp_{swiglu,geglu_exact,geglu_approx}` (llama.py:5340-5425, 3360).
- generic path (unsloth_zoo/compiler.py): peft LoRA forwards renamed `unsloth_forward`
  (compiler.py:5120 patch_lora_forwards), classes from `unsloth_compiled_module_<model_type>`,
  `UNSLOTH_USE_NEW_MODEL=1` (vision.py:3563; the fast load sets "0", llama.py:3515).

Liger's patches (liger_kernel 0.8.5, never imported here) are recognised the same way: per instance,
`forward` bound to a `Liger*` class's forward from a liger_kernel module (monkey_patch.py:67
_bind_method_to_module; LigerRMSNorm / LigerLayerNorm for norms, Liger*MLP for the MLP activation), and
for RoPE the modeling module's `apply_rotary_pos_emb` replaced by liger_kernel's (monkey_patch.py:290).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Optional

FUSED_MLP_FUNCTIONS = {
    "apply_lora_mlp_swiglu": "swiglu",
    "apply_lora_mlp_geglu_exact": "geglu_exact",
    "apply_lora_mlp_geglu_approx": "geglu_approx",
}
UNSLOTH_FORWARD_NAMES = ("PeftModel_fast_forward", "_CausalLM_fast_forward", "unsloth_forward")
ENV_KEYS = ("UNSLOTH_USE_NEW_MODEL", "UNSLOTH_MODEL_NAME", "UNSLOTH_BNB_TRITON", "UNSLOTH_RETURN_LOGITS",
            "UNSLOTH_COMPILE_DISABLE", "UNSLOTH_BLOCK_COMPILE", "UNSLOTH_FUSED_LORA_DROPOUT", "UNSLOTH_CHUNKED_CE",
            "UNSLOTH_FUSED_LINEAR")

# What Unsloth prints that tells which path a model took or that something fell back.
BANNER_RE = re.compile(r"Unsloth ([\w.]+): Fast (\S+) patching")  # llama.py:3569, vision.py:3584
PATCHED_RE = re.compile(  # llama.py:5430
    r"Unsloth ([\w.]+) patched (\d+) layers with (\d+) QKV layers, (\d+) O layers and (\d+) MLP layers\.([^\n]*)")
BLOCK_RE = re.compile(r"compiling each transformer block as one region \(([^)]*)\)")  # _block_compile.py:1270
FALLBACK_MESSAGES = {  # message regex -> what it means
    r"fused NF4 kernels failed": "Unsloth's NF4 Triton dequant failed; bitsandbytes dequantizes (kernels/utils.py:740)",
    r"per-block compile not installed": "per-block torch.compile was not installed (llama.py:3445, vision.py:5593)",
    r"block compile failed": "a decoder block fell back from torch.compile (_block_compile.py:989)",
    r"Unsloth cannot patch (MLP|Attention|O projection)": "some LoRA layers kept peft's forward (llama.py:5375-5422)",
    r"The fused LoRA kernels were skipped": "fused LoRA kernels skipped (bias / fp32 base / FSDP, llama.py:3122)",
    r"could not optimize some PEFT modules": "some PEFT forwards were not compiled (unsloth_zoo/compiler.py:5254)",
    r"Explicit target_modules are constrained": "generic FastModel path chose the LoRA targets (vision.py:5127)",
}


def parse_unsloth_log(text: Optional[str]) -> dict[str, Any]:
    """What Unsloth printed while loading: version, "Fast X" name, patched-layer counts, fallback notes."""
    out: dict[str, Any] = {"version": None, "fast_name": None, "patched": None, "block_compiled": [],
                           "fallback_messages": []}
    if not text:
        return out
    m = BANNER_RE.search(text)
    if m:
        out["version"], out["fast_name"] = m.group(1), m.group(2)
    m = PATCHED_RE.search(text)
    if m:
        out["version"] = out["version"] or m.group(1)
        out["patched"] = {"layers": int(m.group(2)), "qkv": int(m.group(3)), "o": int(m.group(4)),
                          "mlp": int(m.group(5)), "reason": m.group(6).strip() or None}
    out["block_compiled"] = [c.strip() for m in BLOCK_RE.finditer(text) for c in m.group(1).split(",") if c.strip()]
    for rx, meaning in FALLBACK_MESSAGES.items():
        if re.search(rx, text):
            out["fallback_messages"].append(meaning)
    return out


def _func_name(f: Any) -> Optional[str]:
    f = getattr(f, "__func__", f)  # bound method -> function
    f = getattr(f, "func", f)  # functools.partial -> function
    return getattr(f, "__name__", None)


def _is_unsloth_forward(fwd: Any, cls: type) -> bool:
    name = _func_name(fwd) or ""
    return (name.endswith("_fast_forward") or name in UNSLOTH_FORWARD_NAMES
            or bool(getattr(fwd, "_unsloth_gated", False)) or bool(getattr(fwd, "_unsloth_block_compiled", False))
            or cls.__module__.startswith("unsloth"))


def _liger_kind(fwd: Any) -> Optional[str]:
    """'norm' / 'mlp_act' / 'other' for an instance forward Liger bound, None for anything else."""
    f = getattr(fwd, "__func__", fwd)
    if not (getattr(f, "__module__", "") or "").startswith("liger_kernel"):
        return None
    owner = (getattr(f, "__qualname__", "") or "").split(".")[0]
    return "norm" if "Norm" in owner else "mlp_act" if "MLP" in owner else "other"


def liger_patches(modules: list) -> dict[str, int]:
    """Modules running Liger's forwards per fast path, and the modeling modules whose RoPE is Liger's."""
    out = {"norm": 0, "mlp_act": 0, "other": 0, "rope": 0}
    rope_modules = set()
    for m in modules:
        kind = _liger_kind(m.__dict__.get("forward"))
        if kind:
            out[kind] += 1
        module = sys.modules.get(type(m).__module__)
        rope = getattr(module, "apply_rotary_pos_emb", None)
        if rope is not None and (getattr(rope, "__module__", "") or "").startswith("liger_kernel"):
            rope_modules.add(module.__name__)
    out["rope"] = len(rope_modules)
    return out


def inspect_model(model: Any, log_text: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> dict:
    """The static report (JSON-able): patched forwards, fused LoRA counts, path, Unsloth's own messages."""
    env = os.environ if env is None else env
    modules = list(model.modules()) if hasattr(model, "modules") else []
    patched: dict[str, str] = {}
    block_compiled: dict[str, Optional[str]] = {}
    compiled_classes: list[str] = []
    seen: set[type] = set()
    fused = {"qkv": 0, "o": 0, "mlp": 0}
    mlp_kinds: set[str] = set()
    marked = lora_layers = compiled_lora = linear4bit = 0
    for m in modules:
        cls = type(m)
        if m.__dict__.get("_unsloth_fast_path"):
            marked += 1
        if "lora_A" in getattr(m, "_modules", {}):
            lora_layers += 1
            if _func_name(getattr(cls, "forward", None)) == "unsloth_forward":
                compiled_lora += 1
        if cls.__name__ == "Linear4bit" and cls.__module__.startswith("bitsandbytes"):
            linear4bit += 1
        elif "lora_A" not in getattr(m, "_modules", {}) and any(
                hasattr(p, "quant_state") for p in m.parameters(recurse=False)):
            linear4bit += 1
        if _func_name(m.__dict__.get("apply_qkv")) == "apply_lora_qkv":
            fused["qkv"] += 1
        if _func_name(m.__dict__.get("apply_o")) == "apply_lora_o":
            fused["o"] += 1
        for attr in ("forward", "_unsloth_forward"):
            kind = FUSED_MLP_FUNCTIONS.get(_func_name(m.__dict__.get(attr)) or "")
            if kind:
                fused["mlp"] += 1
                mlp_kinds.add(kind)
                break
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__module__.startswith("unsloth_compiled_module_") or "unsloth_compiled_cache" in (
                getattr(sys.modules.get(cls.__module__), "__file__", "") or ""):
            compiled_classes.append(cls.__name__)
        fwd = getattr(cls, "forward", None)
        if fwd is None or not _is_unsloth_forward(fwd, cls):
            continue
        patched[cls.__name__] = _func_name(fwd) or "?"
        if getattr(fwd, "_unsloth_block_compiled", False):
            block_compiled[cls.__name__] = _func_name(getattr(fwd, "_unsloth_block_original", None))
    unsloth_mod = sys.modules.get("unsloth")
    log = parse_unsloth_log(log_text)
    report = {
        "unsloth_imported": unsloth_mod is not None,
        "unsloth_version": getattr(unsloth_mod, "__version__", None) or log["version"],
        "patched_forwards": dict(sorted(patched.items())),
        "block_compiled": dict(sorted(block_compiled.items())),
        "fast_path_marked_modules": marked,
        "module_count": len(modules),
        "lora_layers": lora_layers,
        "linear4bit_layers": linear4bit,
        "fused_lora": fused,
        "fused_mlp_kind": sorted(mlp_kinds)[0] if len(mlp_kinds) == 1 else (sorted(mlp_kinds) or None),
        "compiled_lora_layers": compiled_lora,
        "compiled_module_classes": sorted(compiled_classes),
        "compiled_modules_loaded": sorted(k for k in sys.modules if k.startswith("unsloth_compiled_module_")),
        "env": {k: env[k] for k in ENV_KEYS if k in env},
        "log": log,
        "liger": liger_patches(modules),
    }
    report["unsloth_path"] = unsloth_path(report)
    report["notes"] = _notes(report)
    return report


def unsloth_path(report: Mapping[str, Any]) -> str:
    """"fast" (hand-written model file), "generic" (FastModel compiled fallback) or "none" (no Unsloth patches)."""
    names = list(report["patched_forwards"].values()) + [n for n in report["block_compiled"].values() if n]
    decoder_fast = any(n.endswith("DecoderLayer_fast_forward") for n in names)
    if decoder_fast or any(report["fused_lora"].values()):
        return "fast"
    new_model = report["env"].get("UNSLOTH_USE_NEW_MODEL")
    if report["compiled_lora_layers"] or report["compiled_module_classes"] or (
            report["unsloth_imported"] and new_model == "1"):
        return "generic"
    if report["unsloth_imported"] and new_model == "0" and report["patched_forwards"]:
        return "fast"
    return "none"


def _notes(report: Mapping[str, Any]) -> list[str]:
    notes = []
    path = report["unsloth_path"]
    if path == "none":
        notes.append("no unsloth patches: no Unsloth forward, fused LoRA or compiled module on this model")
    liger = report.get("liger") or {}
    if any(liger.values()):
        notes.append(f"Liger patches: {liger['norm']} norm and {liger['mlp_act']} MLP forwards, RoPE in "
                     f"{liger['rope']} modeling module(s)")
    gated = path == "fast" and report["patched_forwards"] and not report["fast_path_marked_modules"]
    if gated:
        notes.append("Unsloth forwards are installed but no module is marked _unsloth_fast_path: the originals run")
    log = report["log"]
    patched = log.get("patched")
    if patched and (patched["qkv"], patched["o"], patched["mlp"]) != (
            report["fused_lora"]["qkv"], report["fused_lora"]["o"], report["fused_lora"]["mlp"]):
        notes.append(f"Unsloth's message says {patched['qkv']} QKV / {patched['o']} O / {patched['mlp']} MLP layers "
                     f"fused; the model holds {report['fused_lora']['qkv']} / {report['fused_lora']['o']} / "
                     f"{report['fused_lora']['mlp']} (qwen2's biased q/k/v count without being fused)")
    notes.extend(log.get("fallback_messages", []))
    return notes


def expected_fast_paths(report: Mapping[str, Any]) -> dict[str, str]:
    """What the installed patches should run per fast path (compared with the trace).

    From the source: the fast path calls fast_rms_layernorm / fast_rope_embedding / Unsloth's fused
    CE from its `_fast_forward`s and fast_dequantize (Triton unless UNSLOTH_BNB_TRITON=0,
    kernels/utils.py:667) from the fused LoRA autograd; the generic path compiles the HF modules
    with Inductor, keeps bitsandbytes' dequant (peft's Linear4bit base layer) and fuses only the
    lm_head + CE (unsloth_zoo/compiler.py apply_fused_lm_head).
    """
    path = report["unsloth_path"]
    fused = report["fused_lora"]
    out: dict[str, str] = {}
    if path == "fast":
        compiled = bool(report["block_compiled"])
        fallback = "compiled" if compiled else "eager"
        out["norm"] = "unsloth"
        out["rope"] = "unsloth"
        out["mlp_act"] = "unsloth" if fused["mlp"] else fallback
        out["nf4_dequant"] = "bitsandbytes" if report["env"].get("UNSLOTH_BNB_TRITON") == "0" else "unsloth"
        out["lora_matmul"] = "unsloth" if any(fused.values()) else fallback
        out["cross_entropy"] = "unsloth"
    elif path == "generic":
        out.update(norm="compiled", rope="compiled", mlp_act="compiled", nf4_dequant="bitsandbytes",
                   lora_matmul="compiled" if report["compiled_lora_layers"] else "eager", cross_entropy="unsloth")
    else:
        liger = report.get("liger") or {}  # absent from results saved before Liger was recognised
        out.update(norm="liger" if liger.get("norm") else "eager", rope="liger" if liger.get("rope") else "eager",
                   mlp_act="liger" if liger.get("mlp_act") else "eager", cross_entropy="eager")
        if report["linear4bit_layers"]:
            out["nf4_dequant"] = "bitsandbytes"
        if report["lora_layers"]:
            out["lora_matmul"] = "eager"
    if not report["linear4bit_layers"]:
        out.pop("nf4_dequant", None)
    if not report["lora_layers"] and not any(fused.values()):
        out.pop("lora_matmul", None)
    return out


def kernel_library(report: Mapping[str, Any]) -> str:
    """The kernel library a model's summary counts (kernels_check.classify.KERNEL_PATHS): liger where Liger
    patched it and Unsloth did not, else unsloth."""
    liger = report.get("liger") or {}
    return "liger" if report.get("unsloth_path") == "none" and any(liger.values()) else "unsloth"


def static_fast_paths(report: Mapping[str, Any]) -> dict[str, str]:
    """The compact summary from the static check alone (no profiler): expected verdicts, `_source`, `_origin`."""
    out = expected_fast_paths(report)
    out["_source"] = "static"
    out["_origin"] = kernel_library(report)
    return out

"""`bench doctor`: this machine's GPU and libraries, and the articles' advice made concrete for it.

Everything here is a pure function of what was detected (NVML, installed package versions) and
of the tier, so it works without a GPU: then it says so, and `--gpu-tier` picks the card to
advise for. Each advice line carries the `bench estimate` numbers it rests on.

The known-good library combinations are data, derived from committed records
(`known_good_from_records`: the versions of GPU records that ran ok, with their results files and
commits), kept in bench/data/known_good.json (`bench doctor --known-good RESULTS... --write`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from bench.analysis.estimate import (
    Estimate,
    estimate_recipe,
    max_fit_batch_size,
    max_fit_seq_len,
    model_shape,
    trl_casts_lora_to_bf16,
)
from bench.analysis.estimate.formulas import nf4_weight_bytes
from bench.config.models import SHIPPED, resolve_model
from bench.config.recipes import DEFAULT_RECIPES, DEFAULT_REFERENCE, RECIPES
from bench.config.settings import BACKENDS
from bench.config.tiers import GpuTier, HostGpu, default_seq_len
from bench.schema.record import ResultRecord
from bench.units import GiB, MiB

KNOWN_GOOD_PATH = Path(__file__).resolve().parent.parent / "data" / "known_good.json"
#: What a known-good combination pins: the libraries a QLoRA run depends on and torch's CUDA build.
KNOWN_GOOD_PACKAGES = ("torch", "cuda", "transformers", "peft", "bitsandbytes", "unsloth", "unsloth_zoo", "trl")

#: The model doctor's advice is about unless `--model` says otherwise: what a user of these cards
#: asks first (the default matrix's model).
DEFAULT_MODEL = "llama-3.1-8b"
#: The sequence length of a report without a tier (no advice is given then).
NO_TIER_SEQ_LEN = 2048
#: The module a recipe's pip extra installs (bench.config.recipes.Recipe.extra), as bench.run.recipes
#: checks it; doctor reads its installed version (None: not installed) instead of importing anything.
EXTRA_MODULES = {"trl": "trl", "liger": "liger_kernel", "gpu": "unsloth"}
#: Packages doctor reads versions of beyond bench.run.env.PACKAGES: the recipes' optional libraries.
RECIPE_PACKAGES = tuple(dict.fromkeys(EXTRA_MODULES.values()))


class KnownGoodError(ValueError):
    """A known-good data file that is missing or malformed."""


# -- known-good combinations: from records, to and from the data file ----------------------------------


def _versions_of(env: dict[str, Any]) -> dict[str, str]:
    """A record env's versions of KNOWN_GOOD_PACKAGES (cuda: torch's CUDA build); absent ones left out."""
    packages = env.get("packages") or {}
    found = {name: (env.get("cuda") if name == "cuda" else packages.get(name)) for name in KNOWN_GOOD_PACKAGES}
    return {k: str(v) for k, v in found.items() if v is not None}


def _month(iso: Optional[str]) -> Optional[str]:
    try:
        return datetime.fromisoformat(iso).strftime("%b %Y") if iso else None
    except ValueError:
        return None


def known_good_from_records(records_by_source: dict[str, list[ResultRecord]]) -> list[dict[str, Any]]:
    """Library combinations that trained every library family (bench.config.settings.BACKENDS) end to end:
    the versions of GPU records (native or emulated) that ran ok, grouped by those versions, with
    their evidence (results files, suite commits, GPUs, drivers, ok cells, last run). Newest first.

    `records_by_source`: results file name -> its records.
    """
    groups: dict[tuple, dict[str, Any]] = {}
    for source, records in records_by_source.items():
        for r in records:
            env = r.env or {}
            if r.status != "ok" or r.mode == "cpu" or not env.get("gpu_name"):
                continue
            versions = _versions_of(env)
            ev = groups.setdefault(tuple(sorted(versions.items())), {
                "versions": versions, "results": [], "commits": [], "gpus": [], "drivers": [], "backends": [],
                "ok_cells": 0, "last_run": None})
            for key, value in (("results", source), ("commits", env.get("git_commit")), ("gpus", env["gpu_name"]),
                               ("drivers", env.get("driver")), ("backends", r.backend)):
                if value and value not in ev[key]:
                    ev[key].append(value)
            ev["ok_cells"] += 1
            if r.finished_at and (ev["last_run"] is None or r.finished_at > ev["last_run"]):
                ev["last_run"] = r.finished_at
    combos = []
    for ev in groups.values():
        if not set(BACKENDS) <= set(ev["backends"]):
            continue
        drivers = sorted({d.split(".")[0] for d in ev["drivers"]})
        when = _month(ev["last_run"])
        label = (f"suite GPU runs{', ' + when if when else ''} ({', '.join(ev['gpus'])}"
                 + (f", driver {', '.join(drivers)}" if drivers else "") + ")")
        evidence = {k: ev[k] for k in ("results", "commits", "gpus", "drivers", "ok_cells", "last_run")}
        evidence["backends"] = sorted(ev["backends"])
        combos.append({"label": label, "versions": ev["versions"], "evidence": evidence})
    return sorted(combos, key=lambda c: c["evidence"]["last_run"] or "", reverse=True)


def known_good_document(combos: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """The data file's content: the combinations, the rule and the results files they came from."""
    return {
        "about": "Library combinations seen training every backend end to end on a GPU, derived from results "
                 "files by the command below; do not edit by hand. Versions match by prefix (\"2.11.0\" matches "
                 "\"2.11.0+cu130\"); cuda is torch's CUDA build.",
        "command": "bench doctor --known-good " + " ".join(sources) + " --write",
        "sources": list(sources),
        "rule": "the versions of " + ", ".join(KNOWN_GOOD_PACKAGES) + " in the env of GPU records (native or "
                "emulated) that ran ok, grouped by those versions; a group is known good when every backend ("
                + ", ".join(BACKENDS) + ") ran ok in it",
        "combinations": combos,
    }


@functools.lru_cache(maxsize=None)
def load_known_good(path: Path = KNOWN_GOOD_PATH) -> tuple[dict[str, Any], ...]:
    """The known-good combinations of a data file (read once per path)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        combos = doc["combinations"]
        if not all(isinstance(c["label"], str) and isinstance(c["versions"], dict) for c in combos):
            raise TypeError("a combination needs a label and versions")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise KnownGoodError(f"cannot read the known-good combinations {path}: {exc}") from None
    return tuple(combos)


def known_good_combos() -> list[dict[str, Any]]:
    """The combinations doctor checks against: bench/data/known_good.json."""
    return list(load_known_good(KNOWN_GOOD_PATH))


def save_known_good(document: dict[str, Any], path: Path = KNOWN_GOOD_PATH) -> Path:
    """Write a `known_good_document` (indented JSON, trailing newline); later loads see it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    load_known_good.cache_clear()
    return path


@dataclass
class ComboCheck:
    matches: Optional[str]  # label of the known-good combination matched, or None
    closest: Optional[str]
    mismatches: dict[str, tuple[Optional[str], str]]  # package -> (installed, known good)
    missing: list[str]  # packages of the closest combination that are not installed

    @property
    def ok(self) -> bool:
        return self.matches is not None


def _version_matches(installed: Optional[str], wanted: str) -> bool:
    if installed is None:
        return False
    base = installed.split("+")[0]
    return base == wanted or base.startswith(wanted + ".")


def check_combo(versions: dict[str, Optional[str]], combos: Optional[list[dict[str, Any]]] = None) -> ComboCheck:
    """Compare installed versions with each known-good combination (default: `known_good_combos()`);
    report the closest one.

    GPU-only packages (unsloth, unsloth_zoo, trl) that are not installed count as missing, not as
    a mismatch: a CPU machine can still match the rest.
    """
    best = None
    for combo in known_good_combos() if combos is None else combos:
        wanted = combo["versions"]
        mism = {k: (versions.get(k), v) for k, v in wanted.items()
                if versions.get(k) is not None and not _version_matches(versions.get(k), v)}
        missing = [k for k in wanted if versions.get(k) is None]
        score = (len(mism), len(missing))
        if best is None or score < best[0]:
            best = (score, combo, mism, missing)
    if best is None:
        return ComboCheck(None, None, {}, [])
    _, combo, mism, missing = best
    return ComboCheck(combo["label"] if not mism and not missing else None, combo["label"], mism, missing)


@dataclass
class Advice:
    topic: str
    text: str
    evidence: str  # the bench estimate numbers (or detected facts) behind it


@dataclass
class DoctorReport:
    gpu: Optional[dict[str, Any]]  # None: no NVIDIA GPU found
    tier: Optional[str]
    tier_source: Optional[str]  # "detected" | "--gpu-tier" | None
    capabilities: dict[str, Any]
    versions: dict[str, Optional[str]]
    combo: ComboCheck
    model: str
    seq_len: Optional[int]
    batch_size: int
    advice: list[Advice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recipes: list[dict[str, Any]] = field(default_factory=list)  # `recipe_availability`

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["combo"]["ok"] = self.combo.ok
        return d


def _gib(n: Optional[int]) -> str:
    """Bytes as GiB with one decimal and the unit ('14.4 GiB'): the advice's coarser figure."""
    return "-" if n is None else f"{n / GiB:.1f} GiB"


def capabilities(tier: Optional[GpuTier], host: Optional[HostGpu]) -> dict[str, Any]:
    """What the card can do: the tier table's fields for a known tier; for a GPU no tier matches,
    bf16 from its compute capability and the rest unknown (None). Empty with neither."""
    cc = tier.compute_capability if tier else (host.compute_capability if host else None)
    if cc is None:
        return {}
    return {"compute_capability": f"{cc[0]}.{cc[1]}",
            "bf16": tier.supports_bf16 if tier else host.supports_bf16,
            "fp8": tier.supports_fp8 if tier else None,
            "flash_attention_2": tier.supports_flash_attention_2 if tier else None,
            "unsloth_triton_kernels": cc >= (7, 0)}  # Triton's minimum


def recipe_availability(versions: dict[str, Optional[str]], has_gpu: bool) -> list[dict[str, Any]]:
    """Per recipe: whether its optional library is installed (from `versions`: None = not installed,
    a package left out of `versions` = unknown) and the pip extra that installs it, and whether it
    needs a CUDA GPU that is missing here."""
    out = []
    for name, r in RECIPES.items():
        module = EXTRA_MODULES.get(r.extra) if r.extra else None
        installed = True if module is None else (None if module not in versions else versions[module] is not None)
        out.append({"recipe": name, "family": r.family, "precision": r.precision, "package": module,
                    "installed": installed,
                    "install": f'pip install -e ".[{r.extra}]"' if installed is False else None,
                    "needs_gpu": r.needs_gpu and not has_gpu})
    return out


def diagnose(host: Optional[HostGpu], versions: dict[str, Optional[str]], tier: Optional[GpuTier] = None,
             tier_source: Optional[str] = None, model: str = DEFAULT_MODEL, seq_len: Optional[int] = None,
             batch_size: int = 1, torch_cuda: Optional[str] = None) -> DoctorReport:
    """Build the report. `host` is the detected GPU or None; `versions` the installed packages'
    versions (RECIPE_PACKAGES among them, to say which recipes can run); `tier` the card to advise
    for, or None (then the host's matching tier is used; with neither there is no advice, only the
    environment). `seq_len` defaults to the tier's default (`bench.config.tiers.default_seq_len`)."""
    notes = []
    versions = dict(versions)
    if torch_cuda is not None:
        versions["cuda"] = torch_cuda
    gpu = None
    if host is not None:
        cc = host.compute_capability
        gpu = {"name": host.name, "total_memory_bytes": host.total_memory_bytes,
               "compute_capability": f"{cc[0]}.{cc[1]}", "driver": host.driver}
        if tier is None and host.tier is not None:
            tier, tier_source = host.tier, "detected"
        elif tier is None:
            notes.append(f"{host.name} matches no known tier (see `bench tiers`); pass --gpu-tier to advise for one")
    else:
        notes.append("no NVIDIA GPU found (NVML): nothing can be measured here; "
                     + ("advising for --gpu-tier " + tier.name if tier else "pass --gpu-tier to get advice for a card"))
    if seq_len is None:
        seq_len = default_seq_len(tier.name) if tier else NO_TIER_SEQ_LEN
    report = DoctorReport(gpu, tier.name if tier else None, tier_source, capabilities(tier, host), versions,
                          check_combo(versions), model, seq_len, batch_size, notes=notes,
                          recipes=recipe_availability(versions, host is not None))
    if tier is None:
        return report
    ref = resolve_model(model)
    report.advice = advise(tier, ref.config, ref.name, seq_len, batch_size,
                           unsloth_fast_path=SHIPPED[ref.name].unsloth_fast_path if ref.name in SHIPPED else None)
    return report


def _precision_advice(tier: GpuTier) -> list[Advice]:
    cc = tier.compute_capability
    out = []
    if tier.supports_bf16:
        out.append(Advice("precision", "Train in bf16 (the suite's default on this card).",
                          f"compute capability {cc[0]}.{cc[1]} >= 8.0 has bf16 tensor cores"))
    else:
        out.append(Advice("precision", "No bf16 here: train in fp16 with a GradScaler (the suite does so "
                          "automatically; LoRA weights stay fp32 so the scaler can unscale them).",
                          f"compute capability {cc[0]}.{cc[1]} < 8.0 has no bf16"))
    if tier.dtype == "float16":
        cast = [name for name in RECIPES if trl_casts_lora_to_bf16(name)]
        out.append(Advice(
            "precision (TRL recipes)",
            f"TRL's SFTTrainer casts a 4-bit model's LoRA weights to bf16 ({', '.join(cast)} through the trainer): "
            "this card has no bf16 tensor cores and fp16 training cannot unscale bf16 gradients (trl#4901). "
            "The suite casts them back to fp32 before training and says so in each record; in your own script "
            "cast the trainable parameters to fp32 after building the SFTTrainer.",
            f"trl 1.15 trainer/sft_trainer.py casts a quantized model's trainable parameters to bf16; "
            f"this tier trains in {tier.dtype} (compute capability {cc[0]}.{cc[1]})"))
    if tier.supports_fp8:
        out.append(Advice("fp8", "FP8 is available on this card (Ada/Hopper). The articles' ~2x claim for FP8 "
                          "training is not measured by this suite; QLoRA here stays NF4 + bf16.",
                          f"compute capability {cc[0]}.{cc[1]} >= 8.9"))
    else:
        out.append(Advice("fp8", "No FP8 on this card: leave FP8 options off.",
                          f"compute capability {cc[0]}.{cc[1]} < 8.9"))
    return out


def _fit_advice(tier: GpuTier, model: str, seq_len: int, batch_size: int, ests: dict[str, Estimate]) -> list[Advice]:
    """Which recipes fit this card at this size: one line per recipe, then the summary."""
    usable = tier.usable_vram_bytes
    out = []
    for name, e in ests.items():
        fits = e.total_bytes <= usable
        out.append(Advice(
            f"fit ({name})",
            f"{model} at seq {seq_len}, batch {batch_size}: predicted {_gib(e.total_bytes)} of {_gib(usable)} "
            + ("- fits" if fits else "- does NOT fit") + f" with {name}.",
            f"bench estimate --model {model} --gpu-tier {tier.name} --recipe {name} --seq-len {seq_len} "
            f"--batch-size {batch_size}: peak in the {e.peak_phase} phase, margin {_gib(usable - e.total_bytes)}"))
    fit = [n for n, e in ests.items() if e.total_bytes <= usable]
    too_big = [n for n in ests if n not in fit]
    out.append(Advice(
        "recipes",
        (f"Predicted to fit at seq {seq_len}, batch {batch_size}: {', '.join(fit)}." if fit else
         f"No recipe is predicted to fit at seq {seq_len}, batch {batch_size}.")
        + (f" Too large: {', '.join(too_big)}." if too_big and fit else "")
        + f" {DEFAULT_REFERENCE} is what Hugging Face users run today.",
        f"bench estimate --model {model} --gpu-tier {tier.name} --recipe {','.join(ests)} --seq-len {seq_len} "
        f"--batch-size {batch_size}"))
    return out


def advise(tier: GpuTier, config: dict[str, Any], model: str, seq_len: int, batch_size: int,
           unsloth_fast_path: Optional[bool] = None) -> list[Advice]:
    """The articles' decision tree for one tier and model, each line with its estimate numbers
    (trainer driver: how the recipes are run)."""
    usable = tier.usable_vram_bytes
    out = _precision_advice(tier)

    def est(recipe: str, **kw) -> Estimate:
        return estimate_recipe(config, recipe, kw.pop("seq_len", seq_len), kw.pop("batch_size", batch_size),
                               model_name=model, dtype=tier.dtype, compute_capability=tier.compute_capability, **kw)

    ests = {name: est(name) for name in RECIPES}
    out += _fit_advice(tier, model, seq_len, batch_size, ests)
    hf, un = ests[DEFAULT_REFERENCE], ests["unsloth"]
    short = any(ests[n].total_bytes > 0.9 * usable for n in DEFAULT_RECIPES)

    # 4-bit + 8-bit optimizer.
    shape = model_shape(config)
    opt32 = est("unsloth", optimizer="adamw_torch")
    out.append(Advice(
        "4-bit + 8-bit optimizer",
        ("VRAM is short: " if short else "") + f"keep load_in_4bit (NF4 decoder weights "
        f"{_gib(nf4_weight_bytes(shape))} instead of {_gib(shape.quantized_params * 2)} in 16-bit: hf-lora16 is "
        f"predicted {_gib(ests['hf-lora16'].total_bytes)}) and adamw_8bit (saves "
        f"{(opt32.total_bytes - un.total_bytes) / MiB:,.0f} MiB over 32-bit AdamW here: LoRA states are small, "
        "the articles' 'up to 2 GB' applies to full fine-tuning).",
        f"estimate optimizer_states: adamw_8bit {un.breakdown.get('optimizer_states', 0) / MiB:,.0f} MiB vs "
        f"adamw_torch {opt32.breakdown.get('optimizer_states', 0) / MiB:,.0f} MiB (unsloth)"))
    out += _size_advice(tier, config, model, seq_len)

    r64, r8 = est("unsloth", lora_r=64), est("unsloth", lora_r=8)
    out.append(Advice(
        "LoRA rank",
        f"Rank is cheap in memory: r=8 -> r=64 costs {(r64.total_bytes - r8.total_bytes) / MiB:,.0f} MiB with "
        "unsloth here; lower it only when everything else is already at its minimum.",
        f"estimate unsloth r8 {_gib(r8.total_bytes)}, r16 {_gib(un.total_bytes)}, r64 {_gib(r64.total_bytes)}"))

    hf_none = est(DEFAULT_REFERENCE, gradient_checkpointing="none")
    un_std = est("unsloth", gradient_checkpointing="standard")
    out.append(Advice(
        "gradient checkpointing",
        f"Keep it on: without it {DEFAULT_REFERENCE} needs {_gib(hf_none.total_bytes)} instead of "
        f"{_gib(hf.total_bytes)}; Unsloth's offloaded variant needs {_gib(un.total_bytes)} against "
        f"{_gib(un_std.total_bytes)} for plain checkpointing in the same recipe.",
        f"estimate {DEFAULT_REFERENCE} --gradient-checkpointing none vs standard; unsloth standard vs unsloth"))

    # Decision-matrix row for 24 GB cards and 7-8B models.
    if 20 * GiB <= usable <= 26 * GiB and shape.total_params > 6e9:
        paged = {n: est(n, optimizer="paged_adamw_8bit").total_bytes for n in (DEFAULT_REFERENCE, "unsloth")}
        out.append(Advice(
            "decision matrix: 7B LoRA on a 24 GB GPU",
            "NF4 + paged AdamW (8-bit) + gradient checkpointing: predicted "
            + ", ".join(f"{_gib(v)} with {n}" for n, v in paged.items()) + f", of {_gib(usable)}.",
            f"bench estimate --gpu-tier {tier.name} --optimizer paged_adamw_8bit"))
    return out + _recipe_advice(tier, model, ests, unsloth_fast_path)


def _size_advice(tier: GpuTier, config: dict[str, Any], model: str, seq_len: int) -> list[Advice]:
    """Batch 1 + gradient accumulation; shorter sequences: the largest predicted sizes per default recipe."""
    usable = tier.usable_vram_bytes
    kw = dict(dtype=tier.dtype, compute_capability=tier.compute_capability)
    mb = {r: max_fit_batch_size(config, r, seq_len, usable, max_batch_size=1024, **kw) for r in DEFAULT_RECIPES}
    ms = {r: max_fit_seq_len(config, r, 1, usable, multiple_of=64, **kw) for r in DEFAULT_RECIPES}  # as --max-fit

    def listed(values: dict[str, Optional[int]]) -> str:
        return ", ".join(f"{r} {v or 'none'}" for r, v in values.items())

    return [
        Advice(
            "batch size",
            f"Largest batch predicted to fit at seq {seq_len}: {listed(mb)}. For a larger effective batch keep the "
            "micro-batch there and raise --grad-accum (memory stays that of one micro-batch).",
            f"bench estimate --model {model} --gpu-tier {tier.name} --seq-len {seq_len} --max-fit"),
        Advice(
            "sequence length",
            f"Longest sequence predicted to fit at batch 1: {listed(ms)} tokens; set max_seq_length at or below it.",
            f"bench estimate --model {model} --gpu-tier {tier.name} --batch-size 1 --max-fit"),
    ]


def _recipe_advice(tier: GpuTier, model: str, ests: dict[str, Estimate],
                   unsloth_fast_path: Optional[bool]) -> list[Advice]:
    usable = tier.usable_vram_bytes
    cc = tier.compute_capability
    out = []
    hf_fits = [n for n, e in ests.items() if RECIPES[n].family == "hf" and e.total_bytes <= usable]
    unsloth_fits = [n for n, e in ests.items() if RECIPES[n].family == "unsloth" and e.total_bytes <= usable]
    if unsloth_fast_path is False:
        out.append(Advice("recipe", f"{model}'s architecture has no hand-written Unsloth path: Unsloth falls back "
                          "to its compiled generic path (memory savings remain, kernel speed-ups are smaller).",
                          "bench models: Unsloth fast path = no"))
    elif unsloth_fits and not hf_fits:
        out.append(Advice("recipe", f"Only Unsloth's recipes ({', '.join(unsloth_fits)}) are predicted to fit this "
                          "configuration.",
                          ", ".join(f"{n} {_gib(e.total_bytes)}" for n, e in ests.items()) + f" of {_gib(usable)}"))
    if cc < (7, 0):
        out.append(Advice("recipe", "Unsloth's and Liger's Triton kernels need compute capability >= 7.0.",
                          f"compute capability {cc[0]}.{cc[1]}"))
    return out

"""Named sets of runs (`bench run --preset NAME`): each part is one `bench run` with its own results file.

`articles`: the published comparisons the claims check reads (bench/data/claims.json), each as close
as the shipped architectures allow and against the baseline its article used. Where an article
states no GPU, the part runs on a tier large enough for what it compares (emulated on a larger GPU,
labelled as every emulated run is); where it states one (S4: an L4), on that tier. Steps are the
suite's, not the articles' epochs: speed is per token, and memory peaks within the first steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from bench.config.settings import ConfigError


@dataclass(frozen=True)
class PresetPart:
    """One run of a preset: the options it sets (as `bench run` text) and the claims it serves."""

    name: str
    claims: tuple[str, ...]
    what: str
    tier: Optional[str]  # None: the run's --gpu-tier (or the present GPU's)
    models: str
    recipes: str
    reference: str
    seq_lens: Optional[str] = None  # None: the tier's default matrix
    batch_sizes: Optional[str] = None
    train: dict = field(default_factory=dict)  # TrainSettings fields
    #: at least this many measurements of each cell (fresh workers): a part whose claim rests on one cell
    #: needs repeats to reach a verdict (bench.analysis.claims: two independent measurements at least)
    repeats: int = 1


PRESETS: dict[str, tuple[PresetPart, ...]] = {
    "articles": (
        PresetPart(
            "s2-7b-lora16", ("S2-hf", "S2/S6"),
            "a 7B model at 2048 context: 16-bit LoRA with AdamW (the article's 'standard HF + bf16 + AdamW') "
            "against Unsloth's QLoRA pipeline, same optimizer",
            tier="a100-40gb", models="mistral-7b-v0.3", recipes="hf-lora16,unsloth", reference="hf-lora16",
            seq_lens="2048", batch_sizes="1", train={"optimizer": "adamw_torch"}, repeats=3),
        PresetPart(
            "s4-l4-mistral", ("S4-fit", "S4-memory", "S4-speed"),
            "Mistral-7B at seq 2048, batch 2, gradient accumulation 4 on an L4 (24 GB): vanilla QLoRA "
            "(PEFT's recipe) against Unsloth",
            tier="l4", models="mistral-7b-v0.3", recipes="hf-kbit,unsloth", reference="hf-kbit",
            seq_lens="2048", batch_sizes="2", train={"grad_accum": 4}, repeats=3),
        PresetPart(
            "s7-unsloth-vram", ("S7",),
            "Unsloth QLoRA peak memory at seq 2048, batch 1/2/4/8, on the article's four architectures "
            "that ship here (Llama-3-8B as Llama-3.1-8B, Mistral-7B, Phi-3-mini, Qwen2-7B as Qwen2.5-7B)",
            tier="a100-40gb", models="llama-3.1-8b,mistral-7b-v0.3,phi-3-mini,qwen2.5-7b", recipes="unsloth",
            reference="unsloth", seq_lens="2048", batch_sizes="1,2,4,8"),
        PresetPart(
            "s3-peft", ("S3-speed", "S3-memory"),
            "Unsloth against the classic Hugging Face PEFT QLoRA recipe (prepare_model_for_kbit_training), "
            "the article's baseline; model, GPU and sizes unstated: Llama-3.1-8B on the run's tier "
            "(its whole default matrix, the longest part: last, so a run cut short has the others)",
            tier=None, models="llama-3.1-8b", recipes="hf-kbit,unsloth", reference="hf-kbit"),
    ),
    # Two tiny runs any CPU can do (`--device cpu`): how a preset's parts, results files and report look.
    "smoke": (
        PresetPart("qlora", (), "the classic PEFT QLoRA recipe on the tiny model", tier=None, models="tiny-llama",
                   recipes="hf-kbit", reference="hf-kbit", seq_lens="32", batch_sizes="1",
                   train={"steps": 2, "warmup_steps": 1, "min_seconds": 0.0}),
        PresetPart("lora16", (), "16-bit LoRA on the tiny model", tier=None, models="tiny-llama",
                   recipes="hf-lora16", reference="hf-lora16", seq_lens="32", batch_sizes="1",
                   train={"steps": 2, "warmup_steps": 1, "min_seconds": 0.0}),
    ),
}


def preset_parts(spec: str) -> tuple[str, list[PresetPart]]:
    """'articles' -> every part; 'articles/s4-l4-mistral' (or a comma list after the slash) -> those parts."""
    name, _, wanted = str(spec).strip().lower().partition("/")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    parts = list(PRESETS[name])
    if not wanted:
        return name, parts
    by_name = {p.name: p for p in parts}
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in by_name]
    if unknown or not chosen:
        raise ConfigError(f"--preset {spec}: {name} has the parts {', '.join(by_name)}")
    return name, [by_name[w] for w in dict.fromkeys(chosen)]

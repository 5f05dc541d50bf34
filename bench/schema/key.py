"""CellKey: the one identity of a measured cell, and the named views of it that the stages compare on.

A cell is one configuration measured once: recipe, model, tier and mode, sizes, driver, data and the
training settings. Its `pair_key` names the configuration without the recipe (every recipe's cell of
one configuration shares it, so they can be compared) and its `cell_id` adds the recipe; both are
written into every record by the run stage and never recomputed from a record (the hash covers
settings such as gradient checkpointing "auto" that the record stores resolved). Records of schema
version 1 named a backend instead of a recipe: their identity reads as the recipe that backend ran
(bench.schema.record.LEGACY_RECIPE) with the loop driver.

Views (tuples of field names) say which part of the identity a comparison uses:
- `GATE_FIELDS`: what changes memory and speed; the gate matches baseline and new cells on it.
- `TABLE_FIELDS`: the training settings rows must share to sit in one report table.
- `MEMORY_FIELDS`: the settings that change peak memory (a fit verdict never mixes them).
- `VARIANT_FIELDS`: what must be equal for two cells to differ "only in" one field (claims).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from bench.schema.record import LEGACY_DRIVER, LEGACY_RECIPE

#: Every configuration field a record carries, in a fixed order.
IDENTITY_FIELDS = (
    "recipe", "backend", "driver", "data_sha256", "packing", "model", "tier", "mode", "seq_len", "batch_size", "grad_accum", "lora_r", "lora_alpha",
    "lora_dropout", "target_modules", "optimizer", "learning_rate", "gradient_checkpointing", "dtype",
    "attn_implementation", "steps", "warmup_steps", "seed",
)
#: The settings hashed into a pair_key (gradient_checkpointing as the setting, e.g. "auto").
PAIR_HASH_FIELDS = (
    "model", "tier", "mode", "seq_len", "batch_size", "dtype", "lora_r", "lora_alpha", "lora_dropout",
    "target_modules", "optimizer", "learning_rate", "grad_accum", "steps", "warmup_steps", "seed",
    "gradient_checkpointing", "driver", "data_sha256", "packing",
)
GATE_FIELDS = (
    "recipe", "driver", "data_sha256", "packing", "backend", "model", "tier", "mode", "seq_len", "batch_size", "grad_accum", "lora_r", "lora_alpha",
    "lora_dropout", "target_modules", "optimizer", "gradient_checkpointing", "dtype",
)
TABLE_FIELDS = ("driver", "data_sha256", "packing", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "optimizer", "learning_rate",
                "grad_accum", "steps", "warmup_steps", "seed", "dtype", "attn_implementation")
#: (field, label) of the settings that change peak memory; steps, seed and learning rate do not.
MEMORY_FIELDS = (("driver", "driver"), ("data_sha256", "data"), ("packing", "packing"), ("lora_r", "LoRA r"), ("lora_dropout", "LoRA dropout"), ("target_modules", "targets"),
                 ("optimizer", "optimizer"), ("grad_accum", "grad-accum"), ("dtype", "dtype"),
                 ("attn_implementation", "attention"))
VARIANT_FIELDS = ("tier", "mode", "model", "seq_len", "batch_size", "recipe", "driver", "data_sha256",
                  "packing", "backend", "lora_r", "lora_alpha",
                  "lora_dropout", "optimizer", "learning_rate", "grad_accum", "steps", "warmup_steps", "seed",
                  "gradient_checkpointing", "dtype", "attn_implementation")


def model_short(model: str) -> str:
    """'meta-llama/Llama-3.1-8B' -> 'Llama-3.1-8B'; a local path -> its last folder."""
    return str(model).rstrip("/").split("/")[-1]


def pair_key_of(settings: Mapping[str, Any]) -> str:
    """'t4-emulated-llama-3.1-8b-s1024-b1-1a2b3c4d': tier, mode, model and sizes, then a hash of
    every PAIR_HASH_FIELDS setting (so cells of other settings never share a key)."""
    hashed = {name: settings[name] for name in PAIR_HASH_FIELDS}
    hashed["target_modules"] = list(hashed["target_modules"])
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
    s = settings
    return f"{s['tier']}-{s['mode']}-{model_short(s['model'])}-s{s['seq_len']}-b{s['batch_size']}-{digest}"


def cell_id_of(pair_key: str, recipe: str) -> str:
    return f"{pair_key}-{recipe}"


def normalised(name: str, value: Any) -> Any:
    """The comparable form of a field: target modules as a sorted tuple, dropout as a float."""
    if name == "target_modules":
        return tuple(sorted(value or ()))
    if name == "lora_dropout":
        return float(value)
    return value


@dataclass(frozen=True)
class CellKey:
    """The identity fields of one cell, read from a record, a Cell or a mapping (a baseline's key)."""

    fields: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, source: Any) -> "CellKey":
        """From a record, a Cell, or a mapping of field values (a baseline's key); a source without a
        recipe (written before recipes) reads as the recipe its backend ran, with the loop driver."""
        get = source.get if isinstance(source, Mapping) else (lambda n: getattr(source, n, None))
        values = {n: tuple(v) if isinstance(v := get(n), list) else v for n in IDENTITY_FIELDS}
        if values["recipe"] is None:
            values["recipe"] = LEGACY_RECIPE.get(values["backend"], values["backend"])
            values["driver"] = values["driver"] or LEGACY_DRIVER
        return cls(tuple(values.items()))

    def get(self, name: str) -> Any:
        return dict(self.fields).get(name)

    def view(self, names: Iterable[str], ignore: Iterable[str] = ()) -> tuple:
        """((name, normalised value), ...) over `names` minus `ignore`: a hashable matching key."""
        skip = set(ignore)
        d = dict(self.fields)
        return tuple((n, normalised(n, d.get(n))) for n in names if n not in skip)

    def values(self, names: Iterable[str]) -> tuple:
        """The raw values of `names` (lists as tuples), for grouping and sorting."""
        d = dict(self.fields)
        return tuple(d.get(n) for n in names)

    def as_dict(self, names: Iterable[str] = IDENTITY_FIELDS) -> dict[str, Any]:
        d = dict(self.fields)
        return {n: list(v) if isinstance(v := d.get(n), tuple) else v for n in names}

    @property
    def label(self) -> str:
        """'hf-trl llama-3.1-8b s1024 b1' (+ ' ga4' where gradient accumulation is used)."""
        label = f"{self.get('recipe')} {model_short(self.get('model') or '?')} s{self.get('seq_len')} " \
                f"b{self.get('batch_size')}"
        if self.get("grad_accum") not in (None, 1):
            label += f" ga{self.get('grad_accum')}"
        return label

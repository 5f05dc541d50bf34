"""Names of the report's parts in words: group titles and slugs, settings-view labels, recipe words, file links."""

from __future__ import annotations

import os
from pathlib import Path

from bench.analysis import results as model
from bench.analysis.results import Group
from bench.config.recipes import RECIPES
from bench.render.text import md_escape, short_gpu, slug


def precision_text(recipe: str) -> str:
    """'QLoRA (NF4)' or '16-bit LoRA' for a recipe name ('' for one the suite does not know)."""
    r = RECIPES.get(recipe)
    if r is None:
        return ""
    return "QLoRA (NF4)" if r.precision == "nf4" else "16-bit LoRA"


def group_title(group: Group) -> str:
    """'t4 (emulated on NVIDIA H100 80GB HBM3)', 'h100 (native NVIDIA H100 ...)', 't4 (CPU smoke mode)'."""
    if group.mode == "native":
        return f"{group.tier} (native {group.host})"
    if group.mode == "emulated":
        return f"{group.tier} (emulated on {group.host})"
    return f"{group.tier} (CPU smoke mode)"


def group_slug(group: Group) -> str:
    """'t4-emulated-h100-80gb-hbm3' (anchors and plot file names); 't4-cpu' in cpu mode."""
    host = "" if group.mode == "cpu" else "-" + slug(short_gpu(group.host))
    return f"{group.tier}-{group.mode}{host}"


def _setting_text(name: str, value) -> str:
    if name == "data":
        return "synthetic" if value is None else f"sha256 {str(value)[:8]}"
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def settings_label(view: model.SettingsView) -> str:
    """The model name, with the memory settings that tell its views apart: 'llama-3.1-8b (LoRA r 16)'."""
    if not view.differing:
        return view.model
    label = ", ".join(f"{name} {_setting_text(name, value)}" for name, value in view.differing)
    return f"{view.model} ({label})"


def settings_views(group: Group) -> list[tuple[str, str, Group]]:
    """(model, label, view) per model and set of memory settings of a group (bench.analysis.results.settings_views)."""
    return [(v.model, settings_label(v), v.group) for v in model.settings_views(group)]


def rel_path(p: Path, results_dir: Path) -> str:
    """`p` relative to the report's folder, with forward slashes (a working link from the report)."""
    return Path(os.path.relpath(Path(p).resolve(), results_dir.resolve())).as_posix()


def file_link(p: Path, results_dir: Path) -> str:
    return f"[{md_escape(Path(p).name)}]({rel_path(p, results_dir)})"

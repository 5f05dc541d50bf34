"""A kernels-check result (one model and recipe, one JSON document) and its analysis (pure).

The worker writes the raw evidence only: the profiled step's kernels (name, category, summed
duration, launch count), the static report, what was run (the recipe: unsloth or hf-liger) and
where. Classification is derived here on every read, so a corrected pattern table re-classifies
saved results. Results written before recipes name none: they are Unsloth's (`DEFAULT_RECIPE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from kernels_check.classify import (RECIPE_KERNELS, Classification, KernelStat, classify, compare_static_trace,
                                    merge_fast_paths, trace_fast_paths)
from kernels_check.static import expected_fast_paths
from kernels_check.trace import TraceError, kernels_from_document, read_json

RESULT_FORMAT = "qlora-bench-kernels/1"
DEFAULT_RECIPE = "unsloth"  # the recipe of results that name none (written before recipes)


def result_recipe(result: dict) -> str:
    """The recipe a result profiled (results written before recipes: unsloth)."""
    return result.get("recipe") or DEFAULT_RECIPE


@dataclass
class Analysis:
    result: dict
    classification: Optional[Classification]  # None when no kernels were profiled
    observed: dict[str, str]  # trace verdicts (empty without a trace)
    expected: dict[str, str]  # static check's expectation
    fast_paths: dict[str, str]  # what a run record carries
    agreement: dict[str, dict]  # per fast path: expected / observed / agree

    @property
    def model(self) -> str:
        return self.result.get("model", "?")

    @property
    def recipe(self) -> str:
        return result_recipe(self.result)

    @property
    def origin(self) -> str:
        """The kernel library this result's k/n counts (kernels_check.classify.KERNEL_PATHS)."""
        return RECIPE_KERNELS.get(self.recipe, "unsloth")

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "ok"

    @property
    def profiled(self) -> bool:
        return self.classification is not None

    @property
    def disagreements(self) -> list[str]:
        return [p for p, a in self.agreement.items() if not a["agree"]]


def analyse(result: dict, patterns=None) -> Analysis:
    """Classify a result's kernels and set them beside the static check's expectation."""
    kernels = [KernelStat.from_dict(k) for k in result.get("kernels") or []]
    cls = classify(kernels, patterns) if kernels else None
    observed = trace_fast_paths(cls) if cls else {}
    static = result.get("static")
    expected = expected_fast_paths(static) if static else {}
    fast_paths = merge_fast_paths(observed, expected) if (observed or expected) else {}
    if fast_paths:
        fast_paths["_origin"] = RECIPE_KERNELS.get(result_recipe(result), "unsloth")
    return Analysis(result, cls, observed, expected, fast_paths, compare_static_trace(expected, observed))


def results_time(results: Iterable[dict]) -> Optional[str]:
    """The latest `finished_at` (else `started_at`) among results, as written (ISO 8601, UTC); None
    when no result carries one (e.g. results built from bare traces)."""
    times = [t for t in (r.get("finished_at") or r.get("started_at") for r in results) if t]
    return max(times, key=lambda t: datetime.fromisoformat(t), default=None)


def validate_result(data: Any, where: str) -> dict:
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise TraceError(f"{where}: not a kernels-check result (format {RESULT_FORMAT!r} expected)")
    for key in ("model", "status"):
        if key not in data:
            raise TraceError(f"{where}: kernels-check result without {key!r}")
    return data


def load_results(paths: Iterable[Path]) -> list[dict]:
    """Results from files and directories (every *.json in a directory that is a result)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.glob("*.json")):
                data = read_json(f)
                if isinstance(data, dict) and data.get("format") == RESULT_FORMAT:
                    out.append(validate_result(data, str(f)))
            continue
        out.append(validate_result(read_json(p), str(p)))
    if not out:
        raise TraceError("no kernels-check results found in " + ", ".join(str(p) for p in paths))
    return out


def result_from_trace(path: Path) -> dict:
    """A result from a saved trace file (Chrome trace, kernel excerpt, or a whole result, .gz allowed).

    A kernels-check result is returned as it is (it keeps its static check); a trace or excerpt
    becomes a result with its kernels and no static check. TraceError when the file is
    unreadable or holds no GPU kernels.
    """
    doc = read_json(path)
    kernels, meta = kernels_from_document(doc, str(path))
    if not kernels:
        raise TraceError(f"{path}: no GPU kernels in this trace (was it recorded with CUDA activity?)")
    if isinstance(doc, dict) and doc.get("format") == RESULT_FORMAT:
        return doc
    return {"format": RESULT_FORMAT, "model": meta.get("model") or Path(path).name.split(".")[0],
            "model_type": meta.get("model_type"), "status": "ok", "profile": {"status": "ok"},
            "kernels": [k.to_dict() for k in kernels], "static": None, "source_file": str(path)}


def write_result(path: Path, result: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

"""The kernel tests' evidence read back: the pytest-benchmark JSON and the pytest log.

`tests/gpu/test_kernels.py` (GPU only) checks each Unsloth kernel against a float32 reference
and times it beside the stock implementation with pytest-benchmark. Failed tests leave no entry
in the benchmark JSON, so their assertion messages are read from the pytest output instead.
Pure functions over the files; no GPU, no torch. bench.render.kernels.benchmark_markdown turns
them into the report section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

_SECTION = re.compile(r"^_{3,} (test_\S+) _{3,}$")
_SUMMARY = re.compile(r"^=*\s*((?:\d+ (?:failed|passed|skipped|errors?|warnings?|deselected)(?:, )?)+)")


class BenchmarkFileError(ValueError):
    """A benchmark JSON or test log that cannot be read."""


def load_benchmark(path: Path) -> dict[str, Any]:
    """A pytest-benchmark JSON (`--benchmark-json`); raises BenchmarkFileError when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchmarkFileError(f"{path}: not a readable pytest-benchmark JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchmarkFileError(f"{path}: no 'benchmarks' list: not a pytest-benchmark JSON")
    return data


def parse_pytest_log(text: str) -> tuple[dict[str, str], Optional[str]]:
    """({test name: first assertion line}, the final 'N failed, M passed' line) from pytest output."""
    failures: dict[str, str] = {}
    current: Optional[str] = None
    summary = None
    for line in text.splitlines():
        m = _SECTION.match(line.strip())
        if m:
            current = m.group(1)
            continue
        if current and line.startswith("E ") and current not in failures:
            failures[current] = line[1:].strip()
        m = _SUMMARY.match(line.strip())
        if m and " in " in line:
            summary = m.group(1).rstrip(", ")
    return failures, summary

"""The kernel tests' evidence as a report section: pytest-benchmark JSON + the pytest log.

`kernels_check/test_kernels.py` (GPU only) checks each Unsloth kernel against a float32 reference
and times it beside the stock implementation with pytest-benchmark. Failed tests leave no entry
in the benchmark JSON, so their assertion messages are read from the pytest output instead.
Pure functions over the files; no GPU, no torch.
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


def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    return str(params.get("impl") or bench.get("param") or bench.get("name"))


def _fmt_err(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1e}"


def benchmark_markdown(data: dict[str, Any], failures: Optional[dict[str, str]] = None,
                       summary: Optional[str] = None, source: str = "", log_source: str = "") -> list[str]:
    """Markdown lines: one table per benchmark group (kernel x dtype), Unsloth beside the stock code.

    `median us`: median wall time of one call (forward + backward where the kernel has one) in
    microseconds, device synchronised; `vs torch`: the torch implementation's median over this
    one's (> 1 means faster than torch); errors: relative max error against float32 math.
    """
    failures = failures or {}
    commit = (data.get("commit_info") or {}).get("id") or "unknown"
    out = ["## Kernel tests and micro-benchmarks", ""]
    out.append(f"From `{source}` (pytest-benchmark {data.get('version', '?')}, {data.get('datetime', '?')}, "
               f"recorded commit {commit[:12]})" + (f" and the pytest output `{log_source}`" if log_source else "")
               + ". Each Unsloth kernel is checked against float32 math (the bound is per dtype) and timed "
               "beside the stock implementation on the same inputs.")
    if summary:
        out.append(f"Test outcome: **{summary}**.")
    out.append("")
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b.get("group") or b.get("name"), []).append(b)
    out.append("| kernel (dtype) | implementation | median us | min us | rounds | vs torch | forward error | "
               "backward error |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda b: (_impl(b) != "unsloth", _impl(b)))
        torch_median = next((b["stats"]["median"] for b in rows if _impl(b) == "torch"), None)
        for b in rows:
            st, info = b["stats"], b.get("extra_info") or {}
            ratio = f"{torch_median / st['median']:.2f}x" if torch_median and st["median"] else "-"
            out.append(f"| {group} | {_impl(b)} | {st['median'] * 1e6:,.1f} | {st['min'] * 1e6:,.1f} | "
                       f"{st['rounds']} | {ratio} | {_fmt_err(info.get('fwd_err'))} | {_fmt_err(info.get('bwd_err'))} |")
    if failures:
        out += ["", "Failed kernel tests (a failed test leaves no timing):", ""]
        for name, message in sorted(failures.items()):
            out.append(f"- `{name}`: {message.replace('|', '/')}")
    out.append("")
    return out

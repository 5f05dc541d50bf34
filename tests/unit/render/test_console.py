"""`bench run`'s console output at 80 columns and wide, from real records (tests/golden, frozen)."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from bench.render.console import comparison_tables, record_line
from bench.schema.store import load
from tests.helpers import REPO

T4 = REPO / "tests" / "golden" / "t4-emulated.jsonl"


def _printed(width: int, *renderables) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    for r in renderables:
        console.print(r)
    return out.getvalue().splitlines()


def test_tables_and_lines_fit_80_columns_and_keep_the_figures():
    records = load([T4])
    lines = _printed(80, *[record_line(r, narrow=True) for r in records], *comparison_tables(records))
    assert lines and max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "hf-kbit" in text and "unsloth" in text and "1.36x" in text and "…" not in text  # nothing cut
    wide = "\n".join(_printed(200, *comparison_tables(records)))
    assert "first step s" in wide and "MFU" in wide and "first step s" not in text


def test_cpu_line_shows_peak_rss_not_empty_gpu_columns():
    gpu = load([T4])[0]
    cpu = dataclasses.replace(gpu, mode="cpu", peak_allocated_bytes=None, peak_device_bytes=None,
                              peak_rss_bytes=548302848)
    line = record_line(cpu)
    assert "peak RSS 0.51 GiB" in line and "device" not in line and "peak alloc" not in line
    assert "device" in record_line(gpu) and "peak RSS" not in record_line(gpu)

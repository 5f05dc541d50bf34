"""`bench run`'s console output at 80 columns and wide, from real records (tests/golden, frozen)."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from bench.analysis.speed import pair_speedup, side_speed
from bench.render.console import NOISY_MARK, comparison_tables, record_line
from bench.render.text import fmt_interval
from bench.schema.pairs import pair_records
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
    assert "hf-kbit" in text and "unsloth" in text and "…" not in text  # nothing cut
    wide = "\n".join(_printed(200, *comparison_tables(records)))
    assert "first step s" in wide and "MFU" in wide and "first step s" not in text
    # speed-ups are bench.analysis.speed's: the median alone at 80 columns, with its interval when wide
    ratios = [pair_speedup(p) for p in pair_records(records) if p.comparable]
    assert ratios and all(f"{r.estimate:.2f}x" in text and fmt_interval(r, ".2f", "x") in wide for r in ratios)
    assert "[" not in text.split("tokens/s:")[0]  # no interval in the narrow table itself
    # a noisy cell is marked, and the caption says what the marker means
    noisy = [r for r in records if r.ok and side_speed(r).noisy]
    assert noisy and f"{fmt_interval(side_speed(noisy[0]).tokens_per_s, ',.0f')}{NOISY_MARK}" in wide
    assert "noisy (CV > 5 %)" in " ".join(wide.split())


def test_cpu_line_shows_peak_rss_not_empty_gpu_columns():
    gpu = load([T4])[0]
    cpu = dataclasses.replace(gpu, mode="cpu", peak_allocated_bytes=None, peak_device_bytes=None,
                              peak_rss_bytes=548302848)
    line = record_line(cpu)
    assert "peak RSS 0.51 GiB" in line and "device" not in line and "peak alloc" not in line
    assert "device" in record_line(gpu) and "peak RSS" not in record_line(gpu)

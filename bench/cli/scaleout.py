"""`bench scale-out`: one matrix run on one GPU, on several GPUs and through Dask, compared (reports/scale-out.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from bench.analysis.scaleout import RunSummary
from bench.cli.common import UsageFailure, check_writable, console
from bench.render.scaleout import scale_out_markdown
from bench.schema.store import load

WALL_RE = re.compile(r"^wall_s=(\d+(?:\.\d+)?)", re.M)


def _wall_s(results: Path) -> Optional[float]:
    """The wall time the GPU script wrote into the run's console file (`<results stem>.console.txt`)."""
    console_file = results.with_name(results.stem + ".console.txt")
    if not console_file.is_file():
        return None
    m = WALL_RE.search(console_file.read_text(encoding="utf-8", errors="replace"))
    return float(m.group(1)) if m else None


def scale_out(
    results: List[Path] = typer.Argument(..., help="Results files of one matrix: the baseline (one GPU) first."),
    out: Path = typer.Option(Path("reports/scale-out.md"), "--out", help="Markdown file to write."),
):
    """Compare runs of the same matrix: wall time, where cells ran, and side-by-side speed against alone."""
    check_writable(out, "--out")
    if len(results) < 2:
        raise UsageFailure("give at least two results files: the baseline run first, then the others")
    runs = [RunSummary(p.stem, load([p]), _wall_s(p)) for p in results]
    text = scale_out_markdown(runs, list(results), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"scale-out report: {out}")


def register(app: typer.Typer) -> None:
    app.command("scale-out")(scale_out)

"""`bench doctor`: this machine's GPU and libraries, then advice backed by `bench estimate` numbers.

Thin over bench.analysis.doctor and bench.render.doctor. With --known-good RESULTS...: the
library combinations those results trained with (--write makes them doctor's,
bench/data/known_good.json). Bad input prints one red line and exits 2.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import List, Optional

import typer

from bench.analysis.doctor import (
    DEFAULT_MODEL,
    KNOWN_GOOD_PATH,
    RECIPE_PACKAGES,
    diagnose,
    known_good_document,
    known_good_from_records,
    save_known_good,
)
from bench.cli.common import console, wide_console
from bench.cli.estimate import checked_model, checked_sizes, fail
from bench.config.tiers import get_tier
from bench.render.doctor import known_good_table, print_doctor
from bench.run.device import detect_host_gpu
from bench.run.env import PACKAGES, package_versions
from bench.schema.store import load


def _torch_cuda_build() -> Optional[str]:
    """torch's CUDA build (torch.version.cuda) read from torch/version.py without importing torch."""
    try:
        spec = find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except (OSError, ImportError, ValueError):
        return None
    m = re.search(r"^cuda(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return m.group(1) if m else None


def _known_good(results: list[Path], write: bool, json_out: bool) -> None:
    sources = [str(p) for p in results]
    combos = known_good_from_records({s: load([p], allow_empty=True) for s, p in zip(sources, results)})
    if not combos:
        fail("no known-good combination in these results (none has ok GPU cells of every backend)")
    document = known_good_document(combos, sources)
    if write:
        save_known_good(document)
    if json_out:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    wide_console(console).print(known_good_table(combos))
    if write:
        console.print(f"wrote {KNOWN_GOOD_PATH}")


def doctor_command(
    results: Optional[List[Path]] = typer.Argument(None, help="With --known-good: results JSONL files."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Advise for this tier (default: the present GPU's)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model the advice is about."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length of the advice (default: tier's)."),
    batch_size: int = typer.Option(1, "--batch-size"),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    known_good: bool = typer.Option(False, "--known-good", help="Print the library combinations RESULTS trained with."),
    write: bool = typer.Option(False, "--write", help="With --known-good: write them to bench/data/known_good.json."),
):
    """This machine: GPU, compute capability, bf16/fp8, driver, libraries, which recipes can run (and the
    extra to install for the others); then concrete advice, per recipe, for a tier."""
    if write and not known_good:
        fail("--write goes with --known-good")
    if known_good:
        if not results:
            fail("--known-good needs results JSONL files")
        return _known_good(results, write, json_out)
    if results:
        fail(f"unexpected argument {results[0]} (results files go with --known-good)")
    tier = get_tier(gpu_tier) if gpu_tier else None
    ref = checked_model(model)
    if seq_len is not None:
        checked_sizes(str(seq_len), "--seq-len", ref.max_positions)
    if batch_size <= 0:
        fail("--batch-size must be > 0")
    versions = package_versions(tuple(dict.fromkeys((*PACKAGES, *RECIPE_PACKAGES))))
    report = diagnose(detect_host_gpu(), versions, tier=tier, tier_source="--gpu-tier" if tier else None,
                      model=ref.name, seq_len=seq_len, batch_size=batch_size, torch_cuda=_torch_cuda_build())
    if json_out:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        return
    print_doctor(wide_console(console), report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)

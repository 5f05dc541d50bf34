"""Shared fixtures: a synthetic-checkpoint cache and a real CPU smoke run through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "reports" / "results"


def run_bench(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run `python -m bench ...` as a real subprocess; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update({"COLUMNS": "200", "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("qbcache")


@pytest.fixture(scope="session")
def cpu_results(tmp_path_factory, cache_dir) -> Path:
    """A results file written by a real `bench run --device cpu` (tiny-llama, hf, 2x2 cells)."""
    out = tmp_path_factory.mktemp("cpu-run") / "cpu.jsonl"
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "16,32",
                     "--batch-size", "1,2", "--backend", "hf", "--steps", "2", "--warmup-steps", "1",
                     "--out", str(out), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def gpu_results_files() -> list[Path]:
    """Results files committed from the GPU runs (reports/results/*.jsonl)."""
    return sorted(RESULTS_DIR.glob("*.jsonl"))

"""Shared fixtures: a synthetic-checkpoint cache and a real CPU smoke run through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.run.env import git_commit
from tests.helpers import FROZEN_RESULTS, run_bench, run_once, session_root

# Tiny models gain nothing from intra-op threads, and the suite runs one xdist worker per core, each starting
# training subprocesses: one thread per process keeps them from contending (inherited by every subprocess).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_commit_info(config, commit_info):
    """pytest-benchmark files (tests/gpu/test_kernels.py -> reports/kernels-benchmark.json) name the suite's
    commit as results records do (bench.run.env.git_commit): QLORA_BENCH_COMMIT on a tree copied to the GPU
    box, whose stale .git would name an older commit (and that commit's times, and "dirty")."""
    info = git_commit()
    if info["commit_source"] == "env":
        commit_info.update(id=info["git_commit"], dirty=None, time=None, author_time=None)



@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The synthetic-checkpoint cache, shared by the session's xdist workers (checkpoints are written atomically)."""
    path = session_root(tmp_path_factory) / "qbcache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def cpu_results(tmp_path_factory, cache_dir) -> Path:
    """A results file written by a real `bench run --device cpu` (tiny-llama, hf, 2x2 cells)."""
    out, proc = run_once(tmp_path_factory, "cpu", "run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama",
                         "--seq-len", "16,32", "--batch-size", "1,2", "--backend", "hf", "--steps", "2",
                         "--warmup-steps", "1", "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def three_recipe_run(tmp_path_factory, cache_dir):
    """(results file, completed process) of a real `bench run --device cpu`: tiny-llama through the three
    recipes a CPU runs (hf-trl, hf-kbit, hf-lora16) and TRL's SFTTrainer, s32 at batch 1 and 2, 1 + 2 steps."""
    out, proc = run_once(tmp_path_factory, "three-recipes", "run", "--gpu-tier", "t4", "--device", "cpu", "--model",
                         "tiny-llama", "--seq-len", "32", "--batch-size", "1,2", "--recipe", "hf-trl,hf-kbit,hf-lora16",
                         "--steps", "2", "--warmup-steps", "1", "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def cpu_baseline(cpu_results, tmp_path_factory) -> Path:
    """A VRAM baseline saved from cpu_results by `bench baseline save`."""
    out = tmp_path_factory.mktemp("gate-baseline") / "t4-cpu.json"
    proc = run_bench("baseline", "save", str(cpu_results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def gpu_results_files() -> list[Path]:
    """GPU results files, frozen under tests/fixtures/results/."""
    return sorted(FROZEN_RESULTS.glob("*.jsonl"))

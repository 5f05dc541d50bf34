"""The `qlora_bench` pytest plugin: vram_budget marker and fixture, run by pytester on real workloads.

Without a GPU the plugin measures peak RSS growth (a labelled proxy), so the workloads here are
real host allocations: a test allocating well over its budget must fail, one under must pass.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import REPO

pytest_plugins = ["pytester"]

ENTRY_POINT_INSTALLED = any(ep.value == "bench.pytest_plugin" for ep in metadata.entry_points(group="pytest11"))
# Installed (pip install -e .), pytest loads the plugin through its entry point; otherwise by name.
PLUGIN_ARGS = [] if ENTRY_POINT_INSTALLED else ["-p", "bench.pytest_plugin"]
MiB = 1024**2


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)


def test_entry_point_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"]["qlora_bench"] == "bench.pytest_plugin"


def test_marker_fails_over_budget_and_passes_under(pytester: pytest.Pytester, tmp_path):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vram_budget("64MiB")
        def test_allocates_256_mib():
            block = bytearray(b"\\x01") * (256 << 20)
            assert block[-1] == 1

        @pytest.mark.vram_budget("256MiB")
        def test_allocates_8_mib():
            block = bytearray(b"\\x01") * (8 << 20)
            assert block[-1] == 1

        def test_unmarked_is_not_measured():
            block = bytearray(b"\\x01") * (128 << 20)
            assert block[-1] == 1
        """
    )
    junit = tmp_path / "junit.xml"
    result = run(pytester, "--vram-device", "cpu", f"--junitxml={junit}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*vram_budget: peak RSS growth (CPU proxy, not GPU memory) 2* MiB (over the 64MiB budget)*",
        "*FAILED*test_allocates_256_mib*",
    ])
    result.stdout.fnmatch_lines(["*qlora-bench VRAM budgets*",
                                 "OVER *test_allocates_256_mib*", "ok   *test_allocates_8_mib*"])
    assert "test_unmarked_is_not_measured" not in result.stdout.str().split("qlora-bench VRAM budgets")[1]
    # the measurement travels in junitxml as test properties
    xml = junit.read_text()
    assert 'name="vram_source" value="rss"' in xml and 'name="vram_budget" value="64MiB"' in xml


def test_fixture_measures_a_block(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        def test_block_over(vram_budget):
            with vram_budget("32MiB"):
                block = bytearray(b"\\x01") * (128 << 20)
            del block

        def test_block_under_reports_its_peak(vram_budget):
            with vram_budget("512MiB") as peak:
                block = bytearray(b"\\x01") * (48 << 20)
            assert peak.source == "rss" and peak.device == "cpu"
            assert 48 << 20 <= peak.bytes < 96 << 20, peak.bytes
            assert not peak.over_budget

        def test_measure_only(vram_budget):
            with vram_budget() as peak:
                block = bytearray(b"\\x01") * (40 << 20)
            assert peak.bytes >= 40 << 20 and peak.budget_bytes is None
        """
    )
    result = run(pytester, "--vram-device", "cpu")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*_ test_block_over _*", "vram_budget: *over the 32MiB budget*",
                                 "*FAILED*test_block_over*"])


def test_tier_names_are_budgets(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vram_budget("t4")
        def test_fits_a_t4():
            block = bytearray(b"\\x01") * (16 << 20)
        """
    )
    result = run(pytester, "--vram-device", "cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ok   *test_fits_a_t4*within the t4 (NVIDIA T4 16GB: torch's total on the card) budget, 14.55 GiB*"])


def test_bad_marker_arguments_error_clearly(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vram_budget("15")
        def test_no_unit():
            pass

        @pytest.mark.vram_budget()
        def test_no_limit():
            pass
        """
    )
    result = run(pytester, "--vram-device", "cpu")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*vram_budget marker: vram_budget '15': write a size such as 15GiB*",
                                 "*vram_budget marker: use @pytest.mark.vram_budget(limit, metric=None)*"])


def test_peak_is_stored_with_pytest_benchmark_results(pytester: pytest.Pytester, tmp_path, monkeypatch):
    pytest.importorskip("pytest_benchmark")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # the inner run is no xdist worker (the suite's may be)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vram_budget("1GiB")
        def test_step(benchmark):
            benchmark.pedantic(lambda: bytearray(b"\\x01") * (24 << 20), rounds=2, iterations=1)
        """
    )
    out = tmp_path / "bench.json"
    result = run(pytester, "--vram-device", "cpu", f"--benchmark-json={out}")
    result.assert_outcomes(passed=1)
    [entry] = json.loads(out.read_text())["benchmarks"]
    extra = entry["extra_info"]
    assert extra["vram_source"] == "rss" and extra["vram_device"] == "cpu"
    assert extra["vram_peak_bytes"] >= 24 * MiB and extra["vram_budget_bytes"] == 1024 * MiB


@pytest.mark.skipif(_cuda(), reason="checks the CPU fallback of --vram-device auto")
def test_auto_device_without_gpu_uses_the_labelled_rss_proxy(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vram_budget("16MiB")
        def test_over():
            block = bytearray(b"\\x01") * (64 << 20)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*peak RSS growth (CPU proxy, not GPU memory)*over the 16MiB budget*",
                                 "*(cpu: peak RSS growth (CPU proxy, not GPU memory); run on a CUDA GPU*"])


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("metric", ["device", "reserved", "allocated"])
def test_gpu_marker_measures_device_memory(pytester: pytest.Pytester, metric):
    pytester.makepyfile(
        f"""
        import pytest, torch

        @pytest.mark.vram_budget("256MiB", metric="{metric}")
        def test_over():
            block = torch.ones(512 << 20, dtype=torch.uint8, device="cuda")
            torch.cuda.synchronize()

        @pytest.mark.vram_budget("80GiB", metric="{metric}")
        def test_under():
            block = torch.ones(64 << 20, dtype=torch.uint8, device="cuda")
        """
    )
    result = run(pytester, "--vram-device", "cuda")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["vram_budget: *over the 256MiB budget*", "*FAILED*test_over*"])
    assert "CPU proxy" not in result.stdout.str()


def test_plugin_import_is_light():
    """Loading the plugin (every pytest session of anyone who installs qlora-bench) imports no torch."""
    import subprocess

    code = "import sys, bench.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr

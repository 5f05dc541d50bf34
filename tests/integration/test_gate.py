"""`bench baseline save` / `bench gate` on real results files with real perturbations.

The results come from the suite itself: a CPU smoke run through the real CLI (session fixture),
and the GPU results committed under reports/results/ (tests skip when there are none). Each
perturbation edits a copy of the JSONL the way a real regression would show up in it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from bench.analysis import gate
from bench.cli import main
from bench.cli.common import console, err_console
from bench.schema import baseline as baseline_file
from bench.schema.key import GATE_FIELDS
from bench.schema.record import SCHEMA_VERSION
from bench.schema.store import load, read_records
from bench.config.tiers import TIERS
from tests.helpers import REPO, FROZEN_RESULTS, run_bench

GPU_RESULTS = sorted(FROZEN_RESULTS.glob("*.jsonl"))
WORKFLOW = REPO / "docs" / "ci" / "gpu-regression.yml"
MiB, GiB = 1024**2, 1024**3


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="session")
def cpu_results(cpu_results, tmp_path_factory) -> Path:
    """Two real hf cells of tiny-llama (seq 32, batch 1 and 2) from the session's CPU smoke run of
    `python -m bench run` (conftest), as their own results file."""
    out = tmp_path_factory.mktemp("gate-cpu") / "t4-cpu.jsonl"
    out.write_text("".join(line + "\n" for line in cpu_results.read_text().splitlines()
                           if line.strip() and json.loads(line)["seq_len"] == 32))
    records = read_records(out)
    assert [(r.batch_size, r.status) for r in records] == [(1, "ok"), (2, "ok")], [r.error for r in records]
    assert all(r.peak_rss_bytes and r.peak_device_bytes is None for r in records)
    return out


@pytest.fixture(scope="session")
def cpu_baseline(cpu_results, tmp_path_factory) -> Path:
    """A baseline saved from this module's cpu_results (the conftest one is of the whole smoke run)."""
    out = tmp_path_factory.mktemp("gate-baseline") / "t4-cpu.json"
    proc = bench_cli("baseline", "save", cpu_results, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_rows(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def perturbed(src: Path, dst: Path, edit) -> Path:
    """A copy of `src` with `edit(rows)` applied (edit mutates the list of record dicts in place)."""
    data = rows(src)
    edit(data)
    return write_rows(dst, data)


def bench_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    """`python -m bench ...` as a real subprocess (wide COLUMNS so one message is one line)."""
    return run_bench(*map(str, args), timeout=120, env={"COLUMNS": "400", **(env_extra or {})})


class Result(NamedTuple):
    """What bench_inproc returns: unpacks as (code, out, err), reads like a CompletedProcess."""

    code: int
    out: str
    err: str

    returncode = property(lambda self: self.code)
    stdout = property(lambda self: self.out)
    stderr = property(lambda self: self.err)


def bench_inproc(capsys, *args) -> Result:
    """The same CLI entry point (`bench.cli.main`) in this process: (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["bench", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return Result(code, out, err)


@pytest.fixture(autouse=True)
def _wide_consoles(monkeypatch):
    """One message, one line in-process too (as COLUMNS=400 does for subprocesses); restored after."""
    monkeypatch.setattr(console, "_width", 400)
    monkeypatch.setattr(err_console, "_width", 400)


def gate_json(capsys, results, baseline, *extra) -> tuple[int, dict]:
    code, out, err = bench_inproc(capsys, "gate", results, "--baseline", baseline, "--metric", "rss", "--json", *extra)
    assert code in (0, 1), err
    return code, json.loads(out)


# ---------------------------------------------------------------------------------------------
# parsing (pure)


def test_tolerances_parse_percent_and_sizes():
    t = gate.parse_vram_tolerance("5%")
    assert (t.kind, t.value) == ("percent", 0.05)
    assert gate.parse_vram_tolerance(" 2.5 % ").value == pytest.approx(0.025)
    assert gate.parse_vram_tolerance("512MiB") == gate.Tolerance("bytes", 512 * MiB, "512MiB")
    assert gate.parse_vram_tolerance("1GB").value == 10**9
    assert gate.parse_vram_tolerance("off") is None
    assert gate.parse_slowdown("10%") == pytest.approx(0.10)
    assert gate.parse_slowdown("off") is None
    # exactly at the tolerance passes; above fails; a decrease beyond it is an improvement
    assert not t.exceeded(100 * MiB, 105 * MiB) and t.exceeded(100 * MiB, 105 * MiB + 1)
    assert t.improved(100 * MiB, 94 * MiB) and not t.improved(100 * MiB, 96 * MiB)


@pytest.mark.parametrize("text", ["-5%", "abc", "5", "nan%", "", "5 parsecs", "-512MiB", "inf%"])
def test_bad_vram_tolerances_are_refused(text):
    with pytest.raises(gate.GateError):
        gate.parse_vram_tolerance(text)


@pytest.mark.parametrize("text", ["-10%", "10", "0.1", "100%", "fast"])
def test_bad_slowdowns_are_refused(text):
    with pytest.raises(gate.GateError):
        gate.parse_slowdown(text)


def test_budgets_accept_sizes_and_tier_names():
    assert gate.parse_budget("15GiB").bytes == 15 * GiB
    assert gate.parse_budget("16GB").bytes == 16 * 10**9
    assert gate.parse_budget("15360MiB").bytes == 15360 * MiB
    assert gate.parse_budget("t4").bytes == TIERS["t4"].memory_cap_bytes
    assert gate.parse_budget("A100-80GB").bytes == TIERS["a100-80gb"].memory_cap_bytes
    for bad in ("15", "t5", "-1GiB", "GiB"):
        with pytest.raises(gate.GateError):
            gate.parse_budget(bad)


def test_key_fields_and_filters_are_validated():
    assert gate.parse_key_fields(["lora_r,optimizer", "lora-alpha"]) == ("lora_r", "optimizer", "lora_alpha")
    assert gate.parse_filters(["backend=hf", "seq_len=1024,2048"]) == {"backend": ("hf",), "seq_len": ("1024", "2048")}
    for bad in (["steps"], ["seed"]):
        with pytest.raises(gate.GateError):
            gate.parse_key_fields(bad)
    for bad in (["backend"], ["colour=red"], ["backend="]):
        with pytest.raises(gate.GateError):
            gate.parse_filters(bad)
    # the recipe axis: recipes and drivers are checked against the names the suite knows
    assert gate.parse_filters(["recipe=unsloth,hf-trl", "driver=trainer", "packing=false"]) == {
        "recipe": ("unsloth", "hf-trl"), "driver": ("trainer",), "packing": ("false",)}
    assert gate.parse_key_fields(["driver,data_sha256", "packing"]) == ("driver", "data_sha256", "packing")
    for bad, fragment in ((["recipe=unslot"], "unknown recipe"), (["driver=train"], "unknown driver")):
        with pytest.raises(gate.GateError, match=fragment):
            gate.parse_filters(bad)
    assert gate.parse_reference("HF-KBIT") == "hf-kbit"
    with pytest.raises(gate.GateError, match="not a recipe"):
        gate.parse_reference("hf")


def test_cell_key_ignores_target_module_order_and_the_chosen_fields(cpu_results):
    cell = baseline_file.figures_from_record(read_records(cpu_results)[0])
    shuffled = dict(cell.key, target_modules=list(reversed(cell.key["target_modules"])))
    assert baseline_file.cell_key(shuffled) == baseline_file.cell_key(cell.key)
    bumped = dict(cell.key, lora_r=64)
    assert baseline_file.cell_key(bumped) != baseline_file.cell_key(cell.key)
    assert baseline_file.cell_key(bumped, ignore=["lora_r"]) == baseline_file.cell_key(cell.key, ignore=["lora_r"])


# ---------------------------------------------------------------------------------------------
# baseline files


def test_baseline_save_round_trips_the_figures(cpu_results, cpu_baseline):
    data = json.loads(cpu_baseline.read_text())
    assert data["format"] == baseline_file.BASELINE_FORMAT and data["version"] == baseline_file.BASELINE_VERSION
    assert data["results_schema_version"] == SCHEMA_VERSION
    assert data["sources"] == [str(cpu_results)]
    assert data["key_fields"] == list(GATE_FIELDS)
    records = read_records(cpu_results)
    assert data["envs"] == [records[0].env]
    snap = baseline_file.load_baseline(cpu_baseline)
    for record, cell in zip(records, snap.cells):
        assert cell.cell_id == record.cell_id and cell.status == record.status
        assert cell.peak_rss_bytes == record.peak_rss_bytes and cell.tokens_per_s == record.tokens_per_s
        assert cell.key == {f: getattr(record, f) for f in GATE_FIELDS}


def test_baseline_save_refuses_two_records_with_one_key(cpu_results, tmp_path, capsys):
    def second_seed(data):  # same configuration, another seed: a different cell_id, the same gate key
        twin = dict(data[0], seed=99, cell_id=data[0]["cell_id"] + "-seed99", pair_key=data[0]["pair_key"] + "-s99")
        data.append(twin)

    src = perturbed(cpu_results, tmp_path / "twins.jsonl", second_seed)
    code, out, err = bench_inproc(capsys, "baseline", "save", src, "--out", tmp_path / "b.json")
    assert code == 2 and "same key" in err and not (tmp_path / "b.json").exists()


def test_baseline_show_lists_the_cells(cpu_baseline, cpu_results, capsys):
    code, out, _ = bench_inproc(capsys, "baseline", "show", cpu_baseline)
    assert code == 0
    assert all(r.cell_id in out for r in read_records(cpu_results))


# ---------------------------------------------------------------------------------------------
# the gate on cpu smoke results: each regression kind exits 1 naming the cell


def test_unchanged_results_pass(cpu_results, cpu_baseline):
    proc = bench_cli("gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss", "--max-slowdown", "10%")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate passed" in proc.stdout and "CPU proxy" in proc.stdout


def test_raised_peak_fails_naming_the_cell(cpu_results, cpu_baseline, tmp_path, capsys):
    victim = rows(cpu_results)[1]["cell_id"]

    def raise_peak(data):
        data[1]["peak_rss_bytes"] = int(data[1]["peak_rss_bytes"] * 1.20)

    new = perturbed(cpu_results, tmp_path / "heavier.jsonl", raise_peak)
    proc = bench_cli("gate", new, "--baseline", cpu_baseline, "--metric", "rss", "--max-vram-increase", "5%")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REGRESSION"))
    assert "[vram]" in line and victim in line and "+20.0%" in line
    assert rows(cpu_results)[0]["cell_id"] not in line
    # the same file passes under a looser percentage, and is judged in bytes with an absolute tolerance
    for tolerance, code in (("25%", 0), ("1MiB", 1), ("2GiB", 0)):
        assert bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss",
                            "--max-vram-increase", tolerance).code == code, tolerance


def test_lower_peak_is_shown_as_an_improvement(cpu_results, cpu_baseline, tmp_path, capsys):
    def lower_peak(data):
        data[0]["peak_rss_bytes"] = int(data[0]["peak_rss_bytes"] * 0.7)

    new = perturbed(cpu_results, tmp_path / "lighter.jsonl", lower_peak)
    code, report = gate_json(capsys, new, cpu_baseline)
    assert code == 0 and report["passed"]
    assert [(f["cell_id"], f["kind"]) for f in report["improvements"]] == [(rows(cpu_results)[0]["cell_id"], "vram")]


def test_slowdown_fails_only_when_speed_is_gated(cpu_results, cpu_baseline, tmp_path, capsys):
    """Every step 4x slower: the slowdown's whole interval lies beyond 10 % even with two timed CPU steps."""
    victim = rows(cpu_results)[0]["cell_id"]

    def slower(data):
        data[0]["tokens_per_s"] = data[0]["tokens_per_s"] * 0.25
        data[0]["step_s"] = [s * 4 for s in data[0]["step_s"]]

    new = perturbed(cpu_results, tmp_path / "slower.jsonl", slower)
    code, report = gate_json(capsys, new, cpu_baseline, "--max-slowdown", "10%")
    assert code == 1
    assert [(f["cell_id"], f["kind"]) for f in report["regressions"]] == [(victim, "slowdown")]
    assert "-75.0%" in report["regressions"][0]["message"]
    code, report = gate_json(capsys, new, cpu_baseline)  # --max-slowdown defaults to off
    assert code == 0 and report["max_slowdown"] is None


@pytest.mark.parametrize("status,kind", [("oom", "status"), ("skipped", "status"), ("error", "crashed"),
                                         ("timeout", "crashed")])
def test_cell_that_no_longer_runs_fails(cpu_results, cpu_baseline, tmp_path, status, kind, capsys):
    victim = rows(cpu_results)[1]["cell_id"]

    def flip(data):
        r = data[1]
        r.update(status=status, tokens_per_s=None, step_s=[], losses=[], loss_first=None, loss_last=None,
                 first_step_s=None, error={"oom": "OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB",
                                           "skipped": "dominated by an out-of-memory cell",
                                           "error": "RuntimeError: worker died", "timeout": "cell timed out"}[status])

    new = perturbed(cpu_results, tmp_path / f"{status}.jsonl", flip)
    proc = bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"REGRESSION [{kind}] {victim}: ok in the baseline, now {status}" in proc.stdout


def test_missing_cell_fails(cpu_results, cpu_baseline, tmp_path, capsys):
    victim = rows(cpu_results)[1]["cell_id"]
    new = perturbed(cpu_results, tmp_path / "dropped.jsonl", lambda data: data.pop(1))
    code, report = gate_json(capsys, new, cpu_baseline)
    assert code == 1
    assert [(f["cell_id"], f["kind"]) for f in report["regressions"]] == [(victim, "missing")]


def test_parity_failure_fails(cpu_results, cpu_baseline, tmp_path, capsys):
    victim = rows(cpu_results)[0]["cell_id"]

    def unmatched(data):
        data[0]["matched"] = False
        data[0]["parity"] = {"matched": False, "reasons": ["trainable parameters differ: 32768 vs 65536"],
                             "cells": [victim, victim.replace("-hf", "-unsloth")]}

    new = perturbed(cpu_results, tmp_path / "unmatched.jsonl", unmatched)
    code, report = gate_json(capsys, new, cpu_baseline)
    assert code == 1
    assert [(f["cell_id"], f["kind"]) for f in report["regressions"]] == [(victim, "parity")]


def test_cell_absent_from_the_baseline_is_new_not_a_failure(cpu_results, tmp_path, capsys):
    base = tmp_path / "b1-only.json"
    assert bench_inproc(capsys, "baseline", "save", cpu_results, "--out", base, "--only", "batch_size=1")[0] == 0
    code, report = gate_json(capsys, cpu_results, base)
    assert code == 0
    new = [c for c in report["cells"] if c["baseline_status"] is None]
    assert [c["cell_id"] for c in new] == [rows(cpu_results)[1]["cell_id"]]


def test_several_regressions_are_all_reported(cpu_results, cpu_baseline, tmp_path, capsys):
    first, second = (r["cell_id"] for r in rows(cpu_results))

    def both(data):
        data[0]["peak_rss_bytes"] *= 2
        data[1]["status"], data[1]["tokens_per_s"] = "oom", None

    new = perturbed(cpu_results, tmp_path / "both.jsonl", both)
    code, report = gate_json(capsys, new, cpu_baseline)
    assert code == 1
    assert sorted((f["cell_id"], f["kind"]) for f in report["regressions"]) == sorted(
        [(first, "vram"), (second, "status")])


# ---------------------------------------------------------------------------------------------
# budgets


def test_budget_fails_cells_above_it(cpu_results, capsys):
    peaks = {r["cell_id"]: r["peak_rss_bytes"] for r in rows(cpu_results)}
    below_all = f"{min(peaks.values()) // MiB - 1}MiB"
    code, out, err = bench_inproc(capsys, "gate", cpu_results, "--vram-budget", below_all, "--metric", "rss", "--json")
    report = json.loads(out)
    assert code == 1
    assert sorted(f["cell_id"] for f in report["regressions"]) == sorted(peaks)
    assert all(f["kind"] == "budget" for f in report["regressions"])
    above_all = f"{max(peaks.values()) // MiB + 1}MiB"
    assert bench_inproc(capsys, "gate", cpu_results, "--vram-budget", above_all, "--metric", "rss")[0] == 0
    code, out, _ = bench_inproc(capsys, "gate", cpu_results, "--vram-budget", "t4", "--metric", "rss")
    assert code == 0 and "14.55 GiB = t4" in out


def test_budget_fails_a_cell_that_ran_out_of_memory(cpu_results, tmp_path, capsys):
    victim = rows(cpu_results)[0]["cell_id"]

    def oom(data):
        data[0].update(status="oom", tokens_per_s=None, error="OutOfMemoryError: CUDA out of memory")

    new = perturbed(cpu_results, tmp_path / "oom.jsonl", oom)
    code, out, _ = bench_inproc(capsys, "gate", new, "--vram-budget", "t4", "--metric", "rss")
    assert code == 1 and f"REGRESSION [budget] {victim}: oom: does not fit" in out


def test_budget_without_baseline_still_fails_crashed_cells(cpu_results, tmp_path, capsys):
    victim = rows(cpu_results)[1]["cell_id"]
    new = perturbed(cpu_results, tmp_path / "err.jsonl",
                    lambda d: d[1].update(status="error", tokens_per_s=None, error="ValueError: boom"))
    code, out, _ = bench_inproc(capsys, "gate", new, "--vram-budget", "t4", "--metric", "rss")
    assert code == 1 and f"REGRESSION [crashed] {victim}: error: ValueError: boom" in out


# ---------------------------------------------------------------------------------------------
# environments, metrics, matching


def test_gpu_mismatch_is_unusable_unless_allowed(cpu_results, cpu_baseline, tmp_path, capsys):
    def other_gpu(data):
        for r in data:
            r["env"]["gpu_name"] = "Tesla T4"

    new = perturbed(cpu_results, tmp_path / "t4.jsonl", other_gpu)
    proc = bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss")
    assert proc.returncode == 2 and "GPU differs" in proc.stderr and "--allow-env-mismatch" in proc.stderr
    code, report = gate_json(capsys, new, cpu_baseline, "--allow-env-mismatch")
    assert code == 0 and any("GPU differs" in w for w in report["warnings"])


def test_library_version_change_is_a_warning(cpu_results, cpu_baseline, tmp_path, capsys):
    def bump(data):
        for r in data:
            r["env"]["packages"]["transformers"] = "99.0.0"

    new = perturbed(cpu_results, tmp_path / "bump.jsonl", bump)
    code, report = gate_json(capsys, new, cpu_baseline)
    assert code == 0
    assert any("transformers" in w and "99.0.0" in w for w in report["warnings"])


def test_device_metric_on_cpu_records_is_unusable_with_a_hint(cpu_results, cpu_baseline, capsys):
    proc = bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline)  # default metric: device
    assert proc.returncode == 2
    assert "peak_device_bytes" in proc.stderr and "--metric rss" in proc.stderr
    assert bench_inproc(capsys, "gate", cpu_results, "--vram-budget", "t4").returncode == 2


def test_changed_recipe_needs_ignore_key_and_then_fails_on_memory(cpu_results, cpu_baseline, tmp_path, capsys):
    def lora_r_64(data):  # what a heavier recipe looks like: another key, another cell_id, more memory
        for r in data:
            r["lora_r"] = 64
            r["cell_id"] = r["cell_id"].replace("-hf", "-r64-hf")
            r["pair_key"] += "-r64"
            r["peak_rss_bytes"] = int(r["peak_rss_bytes"] * 1.3)

    new = perturbed(cpu_results, tmp_path / "r64.jsonl", lora_r_64)
    proc = bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss")
    assert proc.returncode == 2
    assert "lora_r (baseline 16; results 64)" in proc.stderr and "--ignore-key lora_r" in proc.stderr
    code, report = gate_json(capsys, new, cpu_baseline, "--ignore-key", "lora_r")
    assert code == 1
    assert sorted(f["cell_id"] for f in report["regressions"]) == sorted(r["cell_id"] for r in rows(new))
    assert report["ignored_key_fields"] == ["lora_r"]
    assert all(c["key_differences"] == ["lora_r 16 → 64"] for c in report["cells"])


def test_ignoring_a_field_that_merges_cells_is_ambiguous(cpu_results, cpu_baseline, capsys):
    code, out, err = bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss",
                                  "--ignore-key", "batch_size")
    assert code == 2 and "same key" in err and out == ""


def test_only_restricts_both_sides(cpu_results, cpu_baseline, tmp_path, capsys):
    new = perturbed(cpu_results, tmp_path / "b1.jsonl", lambda data: data.pop(1))
    code, report = gate_json(capsys, new, cpu_baseline, "--only", "batch_size=1")
    assert code == 0 and [c["cell_id"] for c in report["cells"]] == [rows(cpu_results)[0]["cell_id"]]
    code, _, err = bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss",
                                "--only", "backend=unsloth")
    assert code == 2 and "--only backend=unsloth" in err


# ---------------------------------------------------------------------------------------------
# the recipe axis: recipe, driver and data in the key; parity against a reference recipe


def test_only_takes_recipes_drivers_and_data(cpu_results, cpu_baseline, capsys):
    every = sorted(r["cell_id"] for r in rows(cpu_results))
    for only in ("recipe=hf-kbit", "driver=loop", "packing=none", "data_sha256=synthetic", "backend=hf"):
        code, report = gate_json(capsys, cpu_results, cpu_baseline, "--only", only)
        assert code == 0 and sorted(c["cell_id"] for c in report["cells"]) == every, only
        assert all(c["recipe"] == "hf-kbit" for c in report["cells"])
    code, _, err = bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss",
                                "--only", "recipe=unsloth")
    assert code == 2 and "no result cell matches --only recipe=unsloth" in err
    code, _, err = bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss",
                                "--only", "recipe=unslot")
    assert code == 2 and "unknown recipe" in err and "hf-trl" in err


def test_another_driver_needs_ignore_key_driver(cpu_results, cpu_baseline, tmp_path, capsys):
    def trainer(data):  # the same cells measured through the trainer driver: another key, another cell_id
        for r in data:
            r["driver"] = "trainer"
            r["cell_id"] = r["cell_id"].replace("-hf-kbit", "-trainer-hf-kbit")
            r["pair_key"] += "-trainer"

    new = perturbed(cpu_results, tmp_path / "trainer.jsonl", trainer)
    code, out, err = bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss")
    assert code == 2 and "driver (baseline loop; results trainer)" in err and "--ignore-key driver" in err
    code, report = gate_json(capsys, new, cpu_baseline, "--ignore-key", "driver")
    assert code == 0 and all(c["key_differences"] == ["driver loop → trainer"] for c in report["cells"])
    assert all(c["label"].startswith("hf-kbit tiny-llama s32") for c in report["cells"])


def _with_second_recipe(data: list[dict], trainable_factor: int = 1) -> None:
    """Each hf-kbit cell again as an hf-trl cell of the same configuration (a second recipe measured
    beside it), its trainable parameter count times `trainable_factor` (2: parity fails)."""
    for r in list(data):
        twin = json.loads(json.dumps(r))
        twin.update(recipe="hf-trl", cell_id=r["cell_id"].replace("-hf-kbit", "-hf-trl"),
                    trainable_params=r["trainable_params"] * trainable_factor)
        data.append(twin)


def test_parity_is_against_the_reference_recipe(cpu_results, cpu_baseline, tmp_path, capsys):
    matched = perturbed(cpu_results, tmp_path / "two-recipes.jsonl", _with_second_recipe)
    code, report = gate_json(capsys, matched, cpu_baseline)
    assert code == 0 and report["reference"] == "hf-trl" and report["parity_references"] == ["hf-trl"]
    assert sorted(c["verdict"] for c in report["cells"]) == ["ok"] * 4  # the hf-trl cells are new cells
    unmatched = perturbed(cpu_results, tmp_path / "unmatched.jsonl", lambda d: _with_second_recipe(d, 2))
    code, report = gate_json(capsys, unmatched, cpu_baseline)
    assert code == 1 and {f["kind"] for f in report["regressions"]} == {"parity"}
    by_cell = {f["cell_id"]: f["message"] for f in report["regressions"]}
    kbit = rows(cpu_results)[0]["cell_id"]
    assert by_cell[kbit].startswith("parity check failed: hf-kbit against the reference hf-trl is not matched "
                                    "(trainable parameters differ")
    assert "a recipe compared with this reference (hf-trl) is not matched" in by_cell[kbit.replace("-hf-kbit", "-hf-trl")]
    # --reference hf-kbit: the same pairs read the other way round
    code, report = gate_json(capsys, unmatched, cpu_baseline, "--reference", "hf-kbit")
    assert code == 1 and report["parity_references"] == ["hf-kbit"]
    messages = {f["cell_id"]: f["message"] for f in report["regressions"]}
    assert "hf-trl against the reference hf-kbit is not matched" in messages[kbit.replace("-hf-kbit", "-hf-trl")]
    code, out, _ = bench_inproc(capsys, "gate", unmatched, "--baseline", cpu_baseline, "--metric", "rss")
    assert "parity against: hf-trl\n" in out and "no hf-trl cells" not in out


def test_reference_is_refused_when_not_a_recipe(cpu_results, cpu_baseline, capsys):
    line = _one_error_line(bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss",
                                        "--reference", "hf"))
    assert "--reference 'hf': not a recipe" in line


@pytest.mark.skipif(not GPU_RESULTS, reason="no GPU results frozen under tests/fixtures/results/")
def test_version_1_baselines_gate_version_1_results(tmp_path, capsys):
    """A baseline saved before recipes (version 1: keys name a backend only) is read as the schema reads
    version-1 records (hf -> hf-kbit, loop driver, synthetic data), and gates the results it came from."""
    results = FROZEN_RESULTS / "t4-emulated.jsonl"
    v2 = tmp_path / "v2.json"
    assert bench_inproc(capsys, "baseline", "save", results, "--out", v2)[0] == 0
    data = json.loads(v2.read_text())
    data.update(version=1, key_fields=list(baseline_file.V1_KEY_FIELDS), results_schema_version=1)
    data.pop("reference")
    for c in data["cells"]:
        c["key"] = {k: c["key"][k] for k in baseline_file.V1_KEY_FIELDS}
        c.pop("reference"), c.pop("parity_reasons")
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(data))
    snap = baseline_file.load_baseline(v1)
    assert snap.version == 1 and snap.reference is None
    assert {(c.key["recipe"], c.key["driver"], c.key["data_sha256"], c.key["packing"]) for c in snap.cells} == {
        ("hf-kbit", "loop", None, None), ("unsloth", "loop", None, None)}
    code, out, err = bench_inproc(capsys, "gate", results, "--baseline", v1, "--only", "recipe=unsloth", "--json")
    report = json.loads(out)
    assert code == 0 and len(report["cells"]) == 4, err
    assert all(c["label"].startswith("unsloth llama-3.1-8b") and c["verdict"] == "ok" for c in report["cells"])
    code, out, err = bench_inproc(capsys, "gate", results, "--baseline", v1)
    assert code == 0 and "hf-kbit llama-3.1-8b s1024 b1" in out, out + err


# ---------------------------------------------------------------------------------------------
# output


def test_json_output_is_the_only_stdout(cpu_results, cpu_baseline):
    proc = bench_cli("gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss", "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["passed"] is True and report["exit_code"] == 0
    assert {c["cell_id"] for c in report["cells"]} == {r["cell_id"] for r in rows(cpu_results)}
    assert "CPU proxy" in proc.stderr  # warnings go to stderr


def test_summary_markdown_is_appended(cpu_results, cpu_baseline, tmp_path, capsys):
    summary = tmp_path / "step-summary.md"
    summary.write_text("## earlier step\n")
    new = perturbed(cpu_results, tmp_path / "oom.jsonl", lambda d: d[0].update(status="oom", tokens_per_s=None))
    assert bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss",
                        "--summary-md", summary)[0] == 0
    assert bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss",
                        "--summary-md", summary)[0] == 1
    text = summary.read_text()
    assert text.startswith("## earlier step\n")
    assert text.count("### qlora-bench gate: PASS") == 1 and text.count("### qlora-bench gate: FAIL (1 regression)") == 1
    assert "| cell | status | rss baseline → new |" in text
    assert f"- `{rows(cpu_results)[0]['cell_id']}` (status): ok in the baseline, now oom" in text


# ---------------------------------------------------------------------------------------------
# unusable input: exit 2 with one clear line


def _one_error_line(result) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr; `result` is a CompletedProcess or bench_inproc's."""
    code, out, err = result.returncode, result.stdout, result.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, out + err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and out == ""
    return lines[0]


def test_missing_baseline(cpu_results, tmp_path):
    line = _one_error_line(bench_cli("gate", cpu_results, "--baseline", tmp_path / "nope.json", "--metric", "rss"))
    assert "not found" in line and "bench baseline save" in line


def test_corrupt_baseline(cpu_results, cpu_baseline, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text(cpu_baseline.read_text()[:200])
    assert "not valid JSON" in _one_error_line(bench_inproc(capsys, "gate", cpu_results, "--baseline", broken, "--metric", "rss"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmarks": []}))
    assert "not a qlora-bench baseline" in _one_error_line(
        bench_inproc(capsys, "gate", cpu_results, "--baseline", other, "--metric", "rss"))
    data = json.loads(cpu_baseline.read_text())
    data["cells"][0]["peak_rss_bytes"] = "a lot"
    bad_cell = tmp_path / "bad-cell.json"
    bad_cell.write_text(json.dumps(data))
    assert "whole number of bytes" in _one_error_line(
        bench_inproc(capsys, "gate", cpu_results, "--baseline", bad_cell, "--metric", "rss"))


def test_baseline_of_another_version(cpu_results, cpu_baseline, tmp_path, capsys):
    data = json.loads(cpu_baseline.read_text())
    data["version"] = baseline_file.BASELINE_VERSION + 1
    future = tmp_path / "future.json"
    future.write_text(json.dumps(data))
    line = _one_error_line(bench_inproc(capsys, "gate", cpu_results, "--baseline", future, "--metric", "rss"))
    assert f"baseline version {baseline_file.BASELINE_VERSION + 1}" in line


def test_results_of_another_schema_version(cpu_results, cpu_baseline, tmp_path, capsys):
    new = perturbed(cpu_results, tmp_path / "v2.jsonl",
                    lambda data: [r.update(schema_version=SCHEMA_VERSION + 1) for r in data])
    line = _one_error_line(bench_inproc(capsys, "gate", new, "--baseline", cpu_baseline, "--metric", "rss"))
    assert f"schema_version {SCHEMA_VERSION + 1}" in line
    line = _one_error_line(bench_inproc(capsys, "baseline", "save", new, "--out", tmp_path / "b.json"))
    assert f"schema_version {SCHEMA_VERSION + 1}" in line


@pytest.mark.parametrize("args,fragment", [
    (["--max-vram-increase", "-5%"], "percentage >= 0"),
    (["--max-vram-increase", "lots"], "--max-vram-increase 'lots'"),
    (["--max-vram-increase", "5"], "write 5% for a percentage"),
    (["--max-slowdown", "-10%"], "percentage >= 0"),
    (["--max-slowdown", "10"], "--max-slowdown '10'"),
    (["--vram-budget", "15"], "--vram-budget '15'"),
    (["--metric", "vram"], "--metric 'vram'"),
    (["--ignore-key", "steps"], "not a key field"),
])
def test_bad_options(cpu_results, cpu_baseline, args, fragment, capsys):
    line = _one_error_line(bench_inproc(capsys, "gate", cpu_results, "--baseline", cpu_baseline, "--metric", "rss", *args))
    assert fragment in line


def test_nothing_to_gate_and_empty_results(cpu_results, tmp_path, cpu_baseline, capsys):
    assert "nothing to gate" in _one_error_line(bench_inproc(capsys, "gate", cpu_results))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "holds no records" in _one_error_line(bench_inproc(capsys, "gate", empty, "--baseline", cpu_baseline))
    assert "cannot read" in _one_error_line(bench_inproc(capsys, "gate", tmp_path / "absent.jsonl", "--baseline", cpu_baseline))


# ---------------------------------------------------------------------------------------------
# the committed GPU results


def _first_ok(data: list[dict]) -> dict:
    return next(r for r in data if r["status"] == "ok")


@pytest.mark.skipif(not GPU_RESULTS, reason="no GPU results committed under reports/results/")
@pytest.mark.parametrize("results", GPU_RESULTS, ids=[p.name for p in GPU_RESULTS])
def test_gpu_results_gate_on_device_memory(results, tmp_path, capsys):
    base = tmp_path / "base.json"
    assert bench_inproc(capsys, "baseline", "save", results, "--out", base)[0] == 0
    code, out, err = bench_inproc(capsys, "gate", results, "--baseline", base, "--max-slowdown", "10%")
    assert code == 0, out + err
    victim = _first_ok(rows(results))["cell_id"]

    def heavier(data):
        r = next(r for r in data if r["cell_id"] == victim)
        for f in ("peak_device_bytes", "peak_reserved_bytes", "peak_allocated_bytes"):
            r[f] = int(r[f] * 1.06)

    code, out, _ = bench_inproc(capsys, "gate", perturbed(results, tmp_path / "heavier.jsonl", heavier),
                                "--baseline", base, "--max-vram-increase", "5%")
    assert code == 1 and f"REGRESSION [vram] {victim}" in out and "on device" in out
    code, out, _ = bench_inproc(capsys, "gate", perturbed(results, tmp_path / "oom.jsonl",
                                                          lambda d: next(r for r in d if r["cell_id"] == victim).update(
                                                              status="oom", tokens_per_s=None)),
                                "--baseline", base)
    assert code == 1 and f"REGRESSION [status] {victim}: ok in the baseline, now oom" in out


def test_unchanged_rerun_passes_the_interval_rule(tmp_path, capsys):
    """The independent GPU re-run of the baseline recipe (frozen: gate/t4-rerun.jsonl) reads more than 10 %
    slower than its baseline on one cell as a point figure; the 95 % interval of the ratio reaches within
    the tolerance, so the interval rule passes it (a note says why). The same baseline without samples
    (version 2) gates on the point figures, fails the noise, and says so."""
    base = tmp_path / "t4.json"
    assert bench_inproc(capsys, "baseline", "save", FROZEN_RESULTS / "t4-emulated.jsonl", "--out", base).code == 0
    args = ("--only", "recipe=hf-kbit", "--only", "seq_len=1024", "--max-slowdown", "10%", "--json")
    code, out, err = bench_inproc(capsys, "gate", FROZEN_RESULTS / "gate" / "t4-rerun.jsonl", "--baseline", base, *args)
    report = json.loads(out)
    assert code == 0 and report["passed"], out + err
    noisy = [c for c in report["cells"] if c["speed_change"] < -0.10]
    assert noisy and all(c["speed_rule"] == "interval" for c in report["cells"])
    for c in noisy:
        low, high = c["speed_change_interval"]
        assert low < -0.10 < high and "noise, not a regression" in c["findings"][0]["message"]
    data = json.loads(base.read_text())
    data["version"] = 2
    for c in data["cells"]:
        c.pop("step_rates")
    old = tmp_path / "t4-v2.json"
    old.write_text(json.dumps(data))
    code, out, err = bench_inproc(capsys, "gate", FROZEN_RESULTS / "gate" / "t4-rerun.jsonl", "--baseline", old, *args)
    report = json.loads(out)
    assert code == 1 and {f["kind"] for f in report["regressions"]} == {"slowdown"}
    assert "version 2" in err and "without an interval" in err and "point figures" in out


@pytest.mark.skipif(not GPU_RESULTS, reason="no GPU results committed under reports/results/")
def test_gpu_budget_uses_torchs_total_on_the_tier(capsys):
    results = GPU_RESULTS[0]
    data = rows(results)
    code, out, err = bench_inproc(capsys, "gate", results, "--vram-budget", "h200", "--json")
    report = json.loads(out)
    over = {r["cell_id"] for r in data if r["status"] != "ok" or r["peak_device_bytes"] > TIERS["h200"].memory_cap_bytes}
    assert {f["cell_id"] for f in report["regressions"]} == over
    assert code == (1 if over else 0)
    smallest = min(r["peak_device_bytes"] for r in data if r["status"] == "ok")
    code, out, _ = bench_inproc(capsys, "gate", results, "--vram-budget", f"{smallest - 1}B", "--json")
    assert code == 1 and len(json.loads(out)["regressions"]) == len(data)


def test_committed_baselines_match_their_sources():
    """baselines/*.json were saved from results in this repo, and their figures are those results'."""
    for path in sorted((REPO / "baselines").glob("*.json")):
        snap = baseline_file.load_baseline(path)
        sources = [REPO / s for s in snap.sources]
        assert all(s.exists() for s in sources), snap.sources
        by_id = {r.cell_id: r for r in load(sources)}
        for cell in snap.cells:
            record = by_id[cell.cell_id]
            assert (cell.peak_device_bytes, cell.tokens_per_s, cell.status) == (
                record.peak_device_bytes, record.tokens_per_s, record.status)


def test_committed_baselines_resave_byte_identically(tmp_path):
    """Saving the records a committed baseline was made from, at its created_at, writes the same bytes."""
    for path in sorted((REPO / "baselines").glob("*.json")):
        snap = baseline_file.load_baseline(path)
        records = load([REPO / s for s in snap.sources])
        assert snap.version == baseline_file.BASELINE_VERSION, f"{path}: re-save it with `bench baseline save`"
        again = baseline_file.baseline_from_records(records, snap.sources, created_at=snap.created_at,
                                                    reference=snap.reference)
        out = baseline_file.save_baseline(again, tmp_path / path.name)
        assert out.read_bytes() == path.read_bytes(), path


# ---------------------------------------------------------------------------------------------
# the example CI workflow, run locally


def _workflow_steps() -> dict[str, dict]:
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = {}
    for job in wf["jobs"].values():
        for step in job["steps"]:
            if "id" in step:
                steps[step["id"]] = step
    return wf, steps


def test_workflow_commands_run_against_real_files(cpu_results, tmp_path):
    """The workflow's own shell steps, with the `bench run` step swapped for its cpu smoke equivalent."""
    wf, steps = _workflow_steps()
    runs_on = wf["jobs"]["gpu-regression"]["runs-on"]
    assert "self-hosted" in runs_on and "gpu" in runs_on
    measure = steps["measure"]["run"]
    assert "bench run" in measure and '--out "$RESULTS"' in measure and '--recipe "$RECIPES"' in measure
    assert set(wf["env"]["RECIPES"].split(",")) == {"hf-trl", "hf-kbit", "unsloth"}
    # `bench` as the workflow calls it, from this checkout
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bench").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bench \"$@\"\n")
    (bindir / "bench").chmod(0o755)
    work = tmp_path / "checkout"
    (work / "ci-results").mkdir(parents=True)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO), COLUMNS="400")
    env.update({k: str(v) for k, v in wf.get("env", {}).items()})
    env.update(RESULTS=str(work / "ci-results" / "results.jsonl"), BASELINE=str(work / "baselines" / "t4.json"),
               GATE_METRIC="rss", BUDGET_ONLY="recipe=hf-kbit", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
               GITHUB_EVENT_NAME="pull_request")

    def run_step(step_id: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", steps[step_id]["run"]],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)

    shutil.copy(cpu_results, env["RESULTS"])  # stands in for the `measure` step on a GPU runner
    save = run_step("save-baseline")
    assert save.returncode == 0, save.stdout + save.stderr
    assert baseline_file.load_baseline(env["BASELINE"]).cells
    for step_id in ("gate", "budget"):
        proc = run_step(step_id)
        assert proc.returncode == 0, step_id + proc.stdout + proc.stderr
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("### qlora-bench gate: PASS") == 2
    assert json.loads((work / "ci-results" / "gate.json").read_text())["passed"] is True

    # the same steps on a regressed run: the gate step fails and the summary names the cell
    victim = rows(cpu_results)[0]["cell_id"]
    perturbed(cpu_results, Path(env["RESULTS"]), lambda d: d[0].update(status="oom", tokens_per_s=None))
    proc = run_step("gate")
    assert proc.returncode == 1
    assert f"`{victim}` (status): ok in the baseline, now oom" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert run_step("budget").returncode == 1


def test_results_of_two_gpus_are_refused_with_a_message(tmp_path):
    """A cell measured on two GPUs (a real record, its copy relabelled as another GPU's) is two results: a
    baseline or gate of one GPU's cells refuses them with a usage error, not a traceback."""
    import dataclasses

    from bench.schema.store import append_record

    t4 = FROZEN_RESULTS / "t4-emulated.jsonl"
    other = tmp_path / "other-gpu.jsonl"
    for r in read_records(t4):
        append_record(other, dataclasses.replace(r, env={**r.env, "gpu_name": "NVIDIA A100-SXM4-80GB"}))
    for args in (["baseline", "save", str(t4), str(other), "--out", str(tmp_path / "b.json")],
                 ["gate", str(t4), str(other), "--baseline", str(REPO / "baselines" / "t4.json")]):
        proc = run_bench(*args)
        assert proc.returncode == 2, proc.stderr
        assert "more than one GPU" in proc.stderr and "Traceback" not in proc.stderr

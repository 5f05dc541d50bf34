"""MFU / HFU, energy and the GPU's state in the report and the console (real H100 records, tests/golden).

The frozen records are of schema 1: their MFU (the old convention) reads as unknown and must show '-'. The
same records re-saved with today's MFU and HFU (computed here from each record's own tokens/s through
bench.analysis.metrics), an energy figure and a GPU state (format inputs, not measurements) show them."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from bench.analysis import metrics as measure
from bench.analysis.results import load_results, table_specs
from bench.config.models import SHIPPED
from bench.render.console import comparison_tables
from bench.render.report.environment import environment_rows
from bench.render.report.tables import appendix_table, comparison_table
from bench.run.checkpoint import parameter_counts
from bench.schema.record import SCHEMA_VERSION
from bench.schema.store import append_record, read_records
from tests.helpers import REPO

NATIVE = REPO / "tests" / "golden" / "h100-native.jsonl"


def _state(clock_min: int, clock_max: int, temperature: int) -> dict:
    snap = {"sm_clock_mhz": clock_max, "sm_clock_max_mhz": 1980, "temperature_c": temperature,
            "power_limit_w": 700.0, "power_limit_default_w": 700.0, "clock_event_reasons": [], "processes": [],
            "own_pid": 1}
    return {"start": snap, "end": snap, "timed": {"steps": 5, "sm_clock_mhz_min": clock_min,
                                                  "sm_clock_mhz_max": clock_max, "temperature_c_max": temperature}}


def _today(tmp_path):
    """The native H100 records as schema 3, with MFU / HFU from their own tokens/s and an energy figure."""
    config = SHIPPED["llama-3.1-8b"].config_dict()
    counts = parameter_counts(config)
    layers, width = measure.attention_dims(config)
    out = tmp_path / "today.jsonl"
    for n, r in enumerate(read_records(NATIVE)):
        model = measure.flops_per_token(counts["matmul"], layers, width, r.seq_len)
        hardware = measure.hardware_flops_per_token(counts["matmul"], counts["head"], layers, width, r.seq_len,
                                                    checkpointing=r.gradient_checkpointing != "none")
        append_record(out, dataclasses.replace(
            r, schema_version=SCHEMA_VERSION, flops_per_token=model, hardware_flops_per_token=hardware,
            mfu=measure.mfu(model, r.tokens_per_s, r.peak_tflops), hfu=measure.hfu(hardware, r.tokens_per_s, r.peak_tflops),
            energy_j=100.0 * (n + 1), joules_per_1k_tokens=1.5 * (n + 1), gpu_state=_state(1755 + n, 1980, 60 + n)))
    return out


def test_records_before_schema_3_show_no_mfu_no_energy_and_no_gpu_state(tmp_path):
    results = load_results([NATIVE])
    (group,) = results.groups
    table = comparison_table(table_specs(group)[0])
    col = table.header.index("hf-kbit MFU / HFU")
    assert all(row[col] == "-" for row in table.rows)
    assert not any("J / 1k" in h for h in table.header)
    assert not any("J / 1k" in h for h in appendix_table(results, tmp_path).header)
    assert "GPU state" not in [label for label, _ in environment_rows(group, tmp_path)]


def test_today_records_show_mfu_hfu_energy_and_the_gpu_state(tmp_path):
    results = load_results([_today(tmp_path)])
    (group,) = results.groups
    records = {e.record.recipe: e.record for e in group.entries}
    table = comparison_table(table_specs(group)[0])
    row = table.rows[0]
    for recipe, r in records.items():
        assert r.mfu < r.hfu  # gradient checkpointing: the recompute counts in HFU only
        assert row[table.header.index(f"{recipe} MFU / HFU")] == f"{r.mfu * 100:.1f} / {r.hfu * 100:.1f} %"
        assert row[table.header.index(f"{recipe} J / 1k tokens")] == f"{r.joules_per_1k_tokens:.1f}"
    appendix = appendix_table(results, tmp_path)
    j = appendix.header.index("J / 1k tokens")
    assert appendix.header[j - 1] == "tokens/s" and j in appendix.right
    assert sorted(line[j] for line in appendix.rows) == ["1.5", "3.0"]
    rows = dict(environment_rows(group, tmp_path))
    assert rows["GPU state"] == f"{records['hf-kbit'].run_id}: SM clock 1755-1980 MHz (max 1980), up to 61 C, " \
                                "power limit 700 W (2 cells)"


def test_console_table_shows_mfu_and_hfu(tmp_path):
    records = read_records(_today(tmp_path))
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False, color_system=None).print(*comparison_tables(records))
    text = out.getvalue()
    assert "MFU / HFU" in text
    for r in records:
        assert f"{r.mfu * 100:.1f} / {r.hfu * 100:.1f} %" in text


def test_the_environment_shows_the_hosts_cpu_load_and_the_cells_it_warns_of(tmp_path):
    """Records with the host's CPU load (format inputs): the range of cores other processes kept busy, and how
    many cells that many busy cores warns of (bench.schema.host_cpu.HOST_BUSY_SHARE)."""
    out = tmp_path / "host.jsonl"
    for n, r in enumerate(read_records(NATIVE)):
        other = [0.4, 9.0][n]
        append_record(out, dataclasses.replace(r, host_cpu={"cores": 32, "seconds": 10.0, "busy_cores": other + 1,
                                                            "own_cores": 1.0, "other_cores": other}))
    (group,) = load_results([out]).groups
    assert dict(environment_rows(group, tmp_path))["host CPU"] == (
        "other processes kept 0.4-9.0 of 32 cores busy over the timed steps (2 cells; 1 with the busy-host warning: "
        "their speed may be the host's contention)")
    assert "host CPU" not in dict(environment_rows(load_results([NATIVE]).groups[0], tmp_path))

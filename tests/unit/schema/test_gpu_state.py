"""The record's gpu_state: clock-event reason bits to names, what a state warns of, a run's span (pure, on a CPU)."""

from __future__ import annotations

import pynvml

from bench.schema.gpu_state import (CLOCK_EVENT_REASONS, THROTTLING, add_to_span, clock_event_names, gpu_state_span,
                                    other_processes, state_warnings)
from bench.units import GiB


def test_reason_bits_are_nvidia_ml_py_constants():
    """The table is nvidia-ml-py's own: each name's bit is pynvml's nvmlClocksThrottleReason<Name> constant."""
    camel = {"gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
             "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
             "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
             "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting",
             "board_limit": "BoardLimit", "reliability": "Reliability"}
    assert set(camel) == set(CLOCK_EVENT_REASONS.values())
    for bit, name in CLOCK_EVENT_REASONS.items():
        assert getattr(pynvml, f"nvmlClocksThrottleReason{camel[name]}") == bit
        event = getattr(pynvml, f"nvmlClocksEventReason{camel[name]}", None)  # the newer names, where they exist
        assert event is None or event == bit


def test_clock_event_names_decode_each_bit():
    assert clock_event_names(0) == []
    assert clock_event_names(None) is None
    assert clock_event_names(0x1) == ["gpu_idle"]
    assert clock_event_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert clock_event_names(0x2 | 0x800) == ["applications_clocks_setting", "bit_0x800"]  # a bit NVML added later
    assert "gpu_idle" not in THROTTLING and "sync_boost" not in THROTTLING and "hw_slowdown" in THROTTLING


def _snap(**kw):
    base = {"sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "temperature_c": 40, "power_draw_w": 90.0,
            "power_limit_w": 700.0, "power_limit_default_w": 700.0, "clock_event_reasons": [],
            "processes": [{"pid": 100, "used_memory_bytes": 2 * GiB}], "own_pid": 100}
    return {**base, **kw}


def test_an_idle_unthrottled_gpu_warns_of_nothing():
    state = {"start": _snap(clock_event_reasons=["gpu_idle"]), "end": _snap(),
             "timed": {"steps": 3, "clock_event_reasons": ["sync_boost"]}}
    assert state_warnings(state) == []
    assert state_warnings(None) == []


def test_another_process_on_the_gpu_is_a_warning():
    other = {"pid": 7, "used_memory_bytes": 3 * GiB}
    state = {"start": _snap(processes=[{"pid": 100, "used_memory_bytes": GiB}, other]), "end": _snap(), "timed": None}
    assert other_processes(state["start"]) == ([other], True)
    (warning,) = state_warnings(state)
    assert "not idle at the cell's start" in warning and "pid 7 using 3.00 GiB" in warning


def test_pids_of_another_namespace_count_all_but_ours():
    """In a container NVML lists host pids: ours is not found; one listed process is ours, the rest are others'."""
    alone = _snap(processes=[{"pid": 90001, "used_memory_bytes": GiB}])
    assert other_processes(alone) == ([{"pid": 90001, "used_memory_bytes": GiB}], False)
    assert state_warnings({"start": alone, "end": alone}) == []
    crowded = _snap(processes=[{"pid": 90001, "used_memory_bytes": GiB}, {"pid": 90002, "used_memory_bytes": GiB}])
    (warning,) = state_warnings({"start": crowded, "end": alone})
    assert "2 compute processes on it, 1 besides this worker" in warning


def test_throttling_at_any_read_is_a_warning_with_the_power_limit():
    state = {"start": _snap(), "timed": {"steps": 5, "clock_event_reasons": ["sw_power_cap", "sync_boost"]},
             "end": _snap(clock_event_reasons=["hw_thermal_slowdown"], power_limit_w=450.0)}
    (warning,) = state_warnings(state)
    assert "throttled" in warning and "sw_power_cap, hw_thermal_slowdown" in warning and "sync_boost" not in warning
    assert "power limit 450 W, the card's default 700 W" in warning


def test_timed_span_folds_readings():
    span = {}
    for clock, temp, reasons in ((1980, 60, []), (1755, 71, ["sw_power_cap"]), (None, 65, ["sw_power_cap"])):
        span = add_to_span(span, {"sm_clock_mhz": clock, "temperature_c": temp, "power_draw_w": 650.0,
                                  "clock_event_reasons": reasons})
    assert span == {"steps": 3, "sm_clock_mhz_min": 1755, "sm_clock_mhz_max": 1980, "temperature_c_max": 71,
                    "power_draw_w_max": 650.0, "clock_event_reasons": ["sw_power_cap"]}


def test_span_of_a_run_uses_the_timed_clocks():
    """The clock range is the timed reads' (the start snapshot may find the GPU idling at a low clock)."""
    a = {"start": _snap(sm_clock_mhz=345, temperature_c=35), "end": _snap(temperature_c=70),
         "timed": {"steps": 4, "sm_clock_mhz_min": 1830, "sm_clock_mhz_max": 1980, "temperature_c_max": 72}}
    b = {"start": _snap(power_limit_w=600.0), "end": _snap(), "timed": {"steps": 4, "sm_clock_mhz_min": 1755,
                                                                         "sm_clock_mhz_max": 1900}}
    span = gpu_state_span([a, None, b])
    assert (span.sm_clock_mhz_min, span.sm_clock_mhz_max, span.sm_clock_max_mhz) == (1755, 1980, 1980)
    assert (span.temperature_c_max, span.power_limits_w, span.cells) == (72, (600.0, 700.0), 2)
    assert gpu_state_span([None, {}]) is None
    untimed = gpu_state_span([{"start": _snap(sm_clock_mhz=1400), "end": _snap(sm_clock_mhz=1500), "timed": None}])
    assert (untimed.sm_clock_mhz_min, untimed.sm_clock_mhz_max) == (1400, 1500)


def test_the_power_cap_at_the_cards_default_limit_is_no_warning():
    # An H200 training at its default 700 W lowers its clocks a little: a real card of that model does too.
    state = {"start": _snap(), "timed": {"steps": 20, "clock_event_reasons": ["sw_power_cap"]},
             "end": _snap(clock_event_reasons=["sw_power_cap"])}
    assert state_warnings(state) == []
    lowered = {**state, "end": _snap(clock_event_reasons=["sw_power_cap"], power_limit_w=500.0)}
    (warning,) = state_warnings(lowered)
    assert "sw_power_cap" in warning and "power limit 500 W, the card's default 700 W" in warning


def test_reading_a_record_applies_todays_state_rule_to_its_stored_warnings():
    from bench.schema.record import SCHEMA_VERSION, upgrade

    state = {"start": _snap(), "timed": {"steps": 20, "clock_event_reasons": ["sw_power_cap"]}, "end": _snap()}
    stored = ["TRL cast the LoRA weights to bf16",
              "GPU throttled while the cell ran: sw_power_cap (NVML clock-event reasons); power limit 700 W"]
    data = {"schema_version": SCHEMA_VERSION, "gpu_state": state, "warnings": stored}
    assert upgrade(data)["warnings"] == ["TRL cast the LoRA weights to bf16"]
    hot = {**state, "end": _snap(clock_event_reasons=["hw_thermal_slowdown"])}
    assert upgrade({**data, "gpu_state": hot})["warnings"][1].startswith("GPU throttled while the cell ran: "
                                                                         "sw_power_cap, hw_thermal_slowdown")
    assert upgrade({**data, "gpu_state": None})["warnings"] == stored

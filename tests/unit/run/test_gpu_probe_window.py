"""The NVML reads around a cell's timed window (bench.run.device.TimedWindow, GpuProbe).

This machine has no GPU: the real pynvml finds no driver, and the window must read nothing and break
nothing. Which step the energy counter is read at is checked against an NVML stand-in (the pynvml module's
calls, answering as a GPU would; one call answers NVMLError_NotSupported as real boards do)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pynvml
import pytest

from bench.run.device import GpuProbe, TimedWindow
from bench.units import GiB


def test_without_a_gpu_nothing_is_read_and_the_callback_still_runs():
    probe = GpuProbe()
    assert probe.open() is False and not probe.is_open  # no NVML driver on this machine
    assert probe.energy_mj() is None and probe.processes() is None and probe.clock_event_bits() is None
    window = TimedWindow(probe, warmup_steps=1)
    seen = []
    window.begin()
    callback = window.wrap(lambda i, s, loss: seen.append((i, s, loss)))
    for i in range(3):
        callback(i, 0.5, 2.0)
    window.finish()
    assert seen == [(0, 0.5, 2.0), (1, 0.5, 2.0), (2, 0.5, 2.0)]
    assert window.state() is None and window.energy_j is None and window.energy_end_step is None
    assert TimedWindow(None, 0).state() is None


class StandInGpu:
    """The pynvml calls GpuProbe makes, answered from this object's fields (energy in mJ, power in mW)."""

    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, other_pid=None):
        self.energy_mj, self.sm_clock, self.temperature = 5_000_000, 1980, 40
        self.reasons = pynvml.nvmlClocksThrottleReasonGpuIdle
        self.procs = [SimpleNamespace(pid=os.getpid(), usedGpuMemory=GiB)]
        if other_pid:
            self.procs.append(SimpleNamespace(pid=other_pid, usedGpuMemory=2 * GiB))

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle, clock):
        assert clock == pynvml.NVML_CLOCK_SM
        return self.sm_clock

    nvmlDeviceGetMaxClockInfo = nvmlDeviceGetClockInfo

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self.temperature

    def nvmlDeviceGetPowerUsage(self, handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # NVMLError_NotSupported

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle):
        return 700_000

    # an older driver binding: only the deprecated name of the reasons call
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.procs


@pytest.mark.parametrize("warmup", [2, 0])
def test_energy_is_read_at_the_warm_up_end_and_the_last_timed_step(warmup):
    gpu = StandInGpu()
    probe = GpuProbe()
    assert probe.open(nvml=gpu) and probe.energy_mj() == 5_000_000
    window = TimedWindow(probe, warmup_steps=warmup)
    window.begin()
    callback = window.wrap(None)
    timed = 4  # the window may run any number of steps: nothing here is told how many
    for i in range(warmup + timed):
        gpu.energy_mj += 100_000 * (i + 1)  # step i (0-based) draws (i + 1) x 100 J
        gpu.reasons = pynvml.nvmlClocksThrottleReasonSwPowerCap if i == warmup + 1 else 0
        gpu.sm_clock, gpu.temperature = 1980 - 10 * i, 50 + i
        callback(i, 0.1, 1.0)
    gpu.reasons = pynvml.nvmlClocksThrottleReasonGpuIdle
    window.finish()
    assert window.energy_end_step == warmup + timed - 1
    assert window.energy_j == pytest.approx(sum(100 * (i + 1) for i in range(warmup, warmup + timed)))
    state = window.state()
    assert state["start"]["clock_event_reasons"] == ["gpu_idle"] and state["end"]["clock_event_reasons"] == ["gpu_idle"]
    assert state["start"]["power_draw_w"] is None and state["start"]["power_limit_w"] == 700.0  # NotSupported: None
    assert state["start"]["own_pid"] == os.getpid() and state["start"]["processes"][0]["used_memory_bytes"] == GiB
    last = warmup + timed - 1
    assert state["timed"] == {"steps": timed, "sm_clock_mhz_min": 1980 - 10 * last,
                              "sm_clock_mhz_max": 1980 - 10 * warmup, "temperature_c_max": 50 + last,
                              "power_draw_w_max": None, "clock_event_reasons": ["sw_power_cap"]}


def test_a_cell_that_failed_in_the_warm_up_has_no_energy():
    gpu = StandInGpu(other_pid=4242)
    probe = GpuProbe()
    probe.open(nvml=gpu)
    window = TimedWindow(probe, warmup_steps=3)
    window.begin()
    window.wrap(None)(0, 0.1, 1.0)  # then the driver raised
    window.finish()
    assert window.energy_j is None and window.state()["timed"] is None
    assert [p["pid"] for p in window.state()["end"]["processes"]] == [os.getpid(), 4242]

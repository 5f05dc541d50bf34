"""The GPU a worker runs on: detection (NVML), CUDA start-up with the emulated tier's memory cap,
and the samplers and timers used while a cell trains: the memory sampler, the step timer, and the
NVML probe (energy counter, clocks, temperature, power, clock-event reasons, other processes) read
around each cell's timed window (`TimedWindow`; the record's `gpu_state`, bench.schema.gpu_state), and the
host's CPU load over the same window (the record's `host_cpu`, bench.schema.host_cpu).

Nothing here is imported by the launcher's process except `detect_host_gpu` (NVML only, no CUDA
context): CUDA belongs to the worker subprocesses.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from bench.analysis.metrics import energy_between
from bench.config.tiers import HostGpu, torch_memory_fraction
from bench.schema.gpu_state import add_to_span, clock_event_names
from bench.schema.host_cpu import HostCpuSample, host_cpu, proc_stat_jiffies


def detect_host_gpu(index: int = 0, allow_torch: bool = False) -> Optional[HostGpu]:
    """The present NVIDIA GPU via NVML, or None when there is none.

    With allow_torch, fall back to torch where NVML is missing (that creates a CUDA context,
    which the launcher must not hold, so it is off by default).
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            cc = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
            return HostGpu(name=name, total_memory_bytes=total, compute_capability=cc, driver=driver)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    if not allow_torch:
        return None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(index)
            return HostGpu(props.name, int(props.total_memory), (props.major, props.minor))
    except Exception:
        pass
    return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def list_gpus() -> list[dict]:
    """Every NVIDIA GPU of this host as NVML sees it: index, uuid, name, total memory (bytes); [] without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append({"index": i, "uuid": _text(pynvml.nvmlDeviceGetUUID(h)), "name": _text(pynvml.nvmlDeviceGetName(h)),
                        "total_memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)})
        return out
    finally:
        pynvml.nvmlShutdown()


def cuda_visible(gpus: list[dict], visible: Optional[str]) -> list[dict]:
    """The GPUs of `gpus` (list_gpus) that CUDA_VISIBLE_DEVICES=`visible` lets this process use: NVML
    indexes or UUIDs ("GPU-..." or a prefix), read as CUDA reads them (up to the first entry that names
    none); all of them when it is unset (None). Two runs side by side each keep to their own GPUs."""
    if visible is None:
        return list(gpus)
    out = []
    for token in visible.split(","):
        token = token.strip()
        if token.isdigit():
            found = [g for g in gpus if g["index"] == int(token)]
        elif token.startswith("GPU-"):
            found = [g for g in gpus if str(g["uuid"]).startswith(token)]
        else:
            found = []
        if len(found) != 1:
            break
        if found[0] not in out:
            out.append(found[0])
    return out


def visible_gpu_uuid() -> Optional[str]:
    """The NVML UUID ("GPU-...") of the GPU torch calls device 0 in this process (CUDA_VISIBLE_DEVICES
    renumbers devices for CUDA, not for NVML: the UUID names the same card for both)."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"


def setup_device(device: str, memory_limit_bytes: Optional[int], sampler: Optional["NvmlPeakSampler"] = None) -> dict:
    """Start CUDA; when emulating a tier (`memory_limit_bytes`: torch's total on a real card of the tier,
    bench.config.tiers.GpuTier.memory_cap_bytes), cap the torch allocator so that allocator + what this
    process holds outside torch at start-up (the host's CUDA context, standing in for the real card's)
    fit in it (bench.config.tiers.torch_memory_fraction). Returns what it measured and set:
    context_bytes (NVML, after start-up), torch_memory_fraction, non_torch_bytes_at_start."""
    import torch

    info: dict = {}
    if device != "cuda":
        return info
    sampler = sampler or NvmlPeakSampler()
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    info["gpu_uuid"] = visible_gpu_uuid()
    sampler.open(uuid=info["gpu_uuid"])
    used = sampler.read_now()
    info["context_bytes"] = used
    if memory_limit_bytes:
        non_torch = (used or 0) - torch.cuda.memory_reserved()
        total = torch.cuda.get_device_properties(0).total_memory
        fraction = torch_memory_fraction(memory_limit_bytes, non_torch, total)
        torch.cuda.set_per_process_memory_fraction(fraction)
        info["torch_memory_fraction"] = fraction
        info["non_torch_bytes_at_start"] = non_torch
    return info


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:
        return None


def nvml_handle(nvml: Any, uuid: Optional[str], index: int) -> Any:
    """The NVML handle of the GPU named by `uuid` (the one this process's CUDA uses), else of NVML `index`."""
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:  # noqa: BLE001 - an unknown UUID falls back to the index
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


class NvmlPeakSampler:
    """Samples this process's GPU memory through NVML in a background thread; keeps the peak.

    NVML sees what the torch allocator does not (the CUDA context, cuBLAS / bitsandbytes
    allocations outside the caching allocator). Per-process figures are used where NVML
    reports our pid; otherwise the device's used memory (source "nvml-device").
    """

    def __init__(self, device_index: int = 0, interval_s: float = 0.01):
        self.device_index = device_index
        self.interval_s = interval_s
        self.peak_bytes: Optional[int] = None
        self.source: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._nvml = None
        self._handle = None

    def _read(self) -> tuple[Optional[int], Optional[str]]:
        pynvml = self._nvml
        pid = os.getpid()
        for getter in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses"):
            fn = getattr(pynvml, getter, None)
            if fn is None:
                continue
            try:
                for proc in fn(self._handle):
                    if proc.pid == pid and proc.usedGpuMemory is not None:
                        return int(proc.usedGpuMemory), "nvml-process"
                break
            except Exception:
                continue
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used), "nvml-device"
        except Exception:
            return None, None

    def read_now(self) -> Optional[int]:
        """One reading outside the sampling thread (bytes), or None without NVML."""
        if self._nvml is None:
            return None
        return self._read()[0]

    def open(self, uuid: Optional[str] = None) -> bool:
        """Attach to the GPU named by `uuid` (the one this process's CUDA uses), else by device_index."""
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = nvml_handle(pynvml, uuid, self.device_index)
            return True
        except Exception:
            self._nvml = None
            return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            value, source = self._read()
            if value is not None and (self.peak_bytes is None or value > self.peak_bytes):
                self.peak_bytes, self.source = value, source
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.peak_bytes, self.source = None, None
        if self._nvml is None and not self.open():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> Optional[int]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            value, source = self._read() if self._nvml is not None else (None, None)
            if value is not None and (self.peak_bytes is None or value > self.peak_bytes):
                self.peak_bytes, self.source = value, source
        return self.peak_bytes


@dataclass
class StepTimer:
    """Wall-clock timing of one optimizer step, synchronised with the device before reading."""

    synchronize: Any  # callable or None

    def __enter__(self) -> "StepTimer":
        if self.synchronize:
            self.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.synchronize:
            self.synchronize()
        self.seconds = time.perf_counter() - self.start


def _watts(milliwatts: Optional[int]) -> Optional[float]:
    return None if milliwatts is None else milliwatts / 1000.0


class GpuProbe:
    """NVML reads of the GPU this worker's CUDA uses: the total energy counter (millijoules since the driver
    loaded) and the GPU's state (the snapshot and reading of bench.schema.gpu_state). Every read is guarded:
    None where pynvml, the GPU or the call is missing or NVML answers an error (NVMLError_NotSupported: the
    energy counter needs Volta or newer; some figures are missing on some boards)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handle: Any = None

    def open(self, uuid: Optional[str] = None, index: int = 0, nvml: Any = None) -> bool:
        """Attach to the GPU named by `uuid` (the one this process's CUDA uses), else by NVML index; `nvml` is the
        pynvml module (imported here unless given: a test gives a stand-in for a GPU it does not have)."""
        try:
            if nvml is None:
                import pynvml as nvml

            nvml.nvmlInit()
            self._handle = nvml_handle(nvml, uuid, index)
            self._nvml = nvml
        except Exception:
            self._nvml = self._handle = None
        return self.is_open

    @property
    def is_open(self) -> bool:
        return self._nvml is not None and self._handle is not None

    def _call(self, name: str, *args: Any) -> Any:
        """pynvml.`name`(handle, *args), or None where it is missing or raises (NVMLError_NotSupported included)."""
        fn = getattr(self._nvml, name, None) if self.is_open else None
        if fn is None:
            return None
        try:
            return fn(self._handle, *args)
        except Exception:
            return None

    def energy_mj(self) -> Optional[int]:
        """The GPU's total energy counter (millijoules), or None."""
        value = self._call("nvmlDeviceGetTotalEnergyConsumption")
        return None if value is None else int(value)

    def clock_event_bits(self) -> Optional[int]:
        """The current clock-event (throttle) reason bits (the newer call, else the deprecated one), or None."""
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            value = self._call(name)
            if value is not None:
                return int(value)
        return None

    def processes(self) -> Optional[list[dict]]:
        """The compute processes on the GPU ([{pid, used_memory_bytes}], NVML's pids), or None."""
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses"):
            procs = self._call(name)
            if procs is not None:
                return [{"pid": int(p.pid), "used_memory_bytes": None if p.usedGpuMemory is None else int(p.usedGpuMemory)}
                        for p in procs]
        return None

    def reading(self) -> dict:
        """What is cheap to read after every step: SM clock (MHz), temperature (C), power draw (W), reasons."""
        nvml = self._nvml
        sm, gpu = (nvml.NVML_CLOCK_SM, nvml.NVML_TEMPERATURE_GPU) if self.is_open else (None, None)
        return {"sm_clock_mhz": self._call("nvmlDeviceGetClockInfo", sm),
                "temperature_c": self._call("nvmlDeviceGetTemperature", gpu),
                "power_draw_w": _watts(self._call("nvmlDeviceGetPowerUsage")),
                "clock_event_reasons": clock_event_names(self.clock_event_bits())}

    def snapshot(self) -> dict:
        """The reading plus the max SM clock, the power limits (W), the compute processes and our pid."""
        sm = self._nvml.NVML_CLOCK_SM if self.is_open else None
        return {**self.reading(),
                "sm_clock_max_mhz": self._call("nvmlDeviceGetMaxClockInfo", sm),
                "power_limit_w": _watts(self._call("nvmlDeviceGetEnforcedPowerLimit")),
                "power_limit_default_w": _watts(self._call("nvmlDeviceGetPowerManagementDefaultLimit")),
                "processes": self.processes(), "own_pid": os.getpid()}


def read_host_sample(proc_stat: str = "/proc/stat") -> Optional[HostCpuSample]:
    """The host's CPU jiffies, this process's CPU seconds and the clock now; None where /proc/stat is missing."""
    try:
        with open(proc_stat, encoding="ascii") as f:
            jiffies = proc_stat_jiffies(f.read())
    except OSError:
        return None
    if jiffies is None:
        return None
    times = os.times()
    return HostCpuSample(busy_jiffies=jiffies[0], total_jiffies=jiffies[1], own_cpu_s=times.user + times.system,
                         wall_s=time.monotonic())


class TimedWindow:
    """NVML and the host's CPU around one cell: the GPU's state before its first step and after its last
    (`begin`, `finish`), a reading after each timed step, the energy counter at the end of the last warm-up step
    (before the first step when there is none) and at the end of every timed step (the last read stands: the
    timed window may run any number of steps), and the host's CPU time at those same two points (`host_cpu`).
    Without an open probe (a CPU, no NVML) it reads no GPU figure and reports None for them."""

    def __init__(self, probe: Optional[GpuProbe], warmup_steps: int,
                 read_host: Callable[[], Optional[HostCpuSample]] = read_host_sample):
        self.probe = probe if probe is not None and probe.is_open else None
        self.warmup_steps = warmup_steps
        self.read_host = read_host
        self.start: Optional[dict] = None
        self.end: Optional[dict] = None
        self.timed: dict = {}
        self.energy_start_mj: Optional[int] = None
        self.energy_end_mj: Optional[int] = None
        self.energy_end_step: Optional[int] = None  # the step index (warm-up counted) of the last end read
        self.host_start: Optional[HostCpuSample] = None
        self.host_end: Optional[HostCpuSample] = None

    def begin(self) -> None:
        if self.probe is not None:
            self.start = self.probe.snapshot()
        if self.warmup_steps <= 0:
            self._timed_start()

    def _timed_start(self) -> None:
        """The reads where the timed steps start: the energy counter and the host's CPU time."""
        self.host_start = self.read_host()
        if self.probe is not None:
            self.energy_start_mj = self.probe.energy_mj()

    def after_step(self, index: int) -> None:
        """Step `index` (0-based, warm-up counted) finished, synchronised with the device."""
        if index == self.warmup_steps - 1:
            self._timed_start()
        elif index >= self.warmup_steps:
            self.host_end = self.read_host()
            if self.probe is not None:
                self.energy_end_mj, self.energy_end_step = self.probe.energy_mj(), index
                self.timed = add_to_span(self.timed, self.probe.reading())

    def wrap(self, on_step: Optional[Callable[[int, float, float], None]]) -> Callable[[int, float, float], None]:
        """The driver's step callback (step index, seconds, loss) with this window's reads before `on_step`."""
        def callback(index: int, seconds: float, loss: float) -> None:
            self.after_step(index)
            if on_step is not None:
                on_step(index, seconds, loss)
        return callback

    def finish(self) -> None:
        if self.probe is not None:
            self.end = self.probe.snapshot()

    @property
    def energy_j(self) -> Optional[float]:
        """Joules from the end of the warm-up to the last timed step's end, or None."""
        return energy_between(self.energy_start_mj, self.energy_end_mj)

    def host_cpu(self) -> Optional[dict]:
        """The record's host_cpu (bench.schema.host_cpu) over the timed steps, or None."""
        return host_cpu(self.host_start, self.host_end, os.cpu_count())

    def state(self) -> Optional[dict]:
        """The record's gpu_state (bench.schema.gpu_state), or None without a probe."""
        if self.probe is None:
            return None
        return {"start": self.start, "end": self.end, "timed": self.timed or None}

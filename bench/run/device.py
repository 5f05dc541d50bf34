"""The GPU a worker runs on: detection (NVML), CUDA start-up with the emulated tier's memory cap,
and the samplers and timers used while a cell trains.

Nothing here is imported by the launcher's process except `detect_host_gpu` (NVML only, no CUDA
context): CUDA belongs to the worker subprocesses.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from bench.config.tiers import HostGpu, torch_memory_fraction


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
            handle = None
            if uuid:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                except Exception:
                    handle = None
            self._handle = handle or pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
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

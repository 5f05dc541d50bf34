"""Metric math (pure functions) and the memory samplers used while a cell trains.

FLOPs convention (documented here, used for MFU):
  N = weights taking part in a matrix product per token (decoder Linears + lm_head).
  Frozen 4-bit base + LoRA: forward 2N; backward needs activation gradients only (2N, the base
  weights get no gradient); gradient checkpointing recomputes the forward once more (2N).
  So dense FLOPs/token = 6N with checkpointing, 4N without ("~6N" of the usual 6N rule, for a
  different reason: recompute instead of weight gradients). LoRA's own FLOPs (<1 %) are ignored.
  Attention scores and the weighted sum: forward A = 4 * n_layers * seq_len * n_heads * head_dim
  per token (causal masking not discounted, as in PaLM's MFU); backward 2A (gradients for both
  operands); recompute A. So attention FLOPs/token = 4A with checkpointing, 3A without.
  MFU = FLOPs/token * tokens/s / the host GPU's dense peak in the training dtype.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence


def tokens_per_second(tokens_per_step: int, timed_step_s: Sequence[float]) -> Optional[float]:
    """Steady-state throughput: tokens of the timed steps over their total time (tokens/s)."""
    total = sum(timed_step_s)
    if not timed_step_s or total <= 0:
        return None
    return tokens_per_step * len(timed_step_s) / total


def attention_dims(config: dict[str, Any]) -> tuple[int, int]:
    """(n_layers, n_heads * head_dim) of a transformers config dict."""
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    return layers, heads * int(head_dim)


def flops_per_token(matmul_params: int, n_layers: int, attn_width: int, seq_len: int, checkpointing: bool) -> float:
    """Model FLOPs per trained token for QLoRA (frozen base), see the module docstring."""
    dense = (6 if checkpointing else 4) * matmul_params
    attention_fwd = 4 * n_layers * seq_len * attn_width
    return float(dense + (4 if checkpointing else 3) * attention_fwd)


def mfu(flops_per_tok: float, tokens_per_s: Optional[float], peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1], or None when something is unknown."""
    if not tokens_per_s or not peak_tflops:
        return None
    return flops_per_tok * tokens_per_s / (peak_tflops * 1e12)


def speedup(baseline_tokens_per_s: Optional[float], candidate_tokens_per_s: Optional[float]) -> Optional[float]:
    """candidate / baseline throughput (2.0 = twice as fast)."""
    if not baseline_tokens_per_s or not candidate_tokens_per_s:
        return None
    return candidate_tokens_per_s / baseline_tokens_per_s


def memory_reduction(baseline_bytes: Optional[int], candidate_bytes: Optional[int]) -> Optional[float]:
    """Fraction of the baseline's memory the candidate saves (0.6 = 60 % less; negative = more)."""
    if not baseline_bytes or candidate_bytes is None:
        return None
    return 1.0 - candidate_bytes / baseline_bytes


def relative_difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None:
        return None
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


LOSS_RTOL = 1e-3


def parity(
    trainable_a: Optional[int], trainable_b: Optional[int], loss_a: Optional[float], loss_b: Optional[float],
    rtol: float = LOSS_RTOL,
) -> dict[str, Any]:
    """Matched-pair check: equal trainable parameter counts and first-step losses within `rtol`."""
    reasons = []
    if trainable_a is None or trainable_b is None:
        reasons.append("trainable parameter count missing")
    elif trainable_a != trainable_b:
        reasons.append(f"trainable parameters differ: {trainable_a:,} vs {trainable_b:,}")
    rel = relative_difference(loss_a, loss_b)
    if rel is None:
        reasons.append("first-step loss missing")
    elif rel > rtol:
        reasons.append(f"first-step losses differ by {rel:.2e} (> {rtol:.0e}): {loss_a:.5f} vs {loss_b:.5f}")
    return {
        "matched": not reasons,
        "reasons": reasons,
        "trainable_params": [trainable_a, trainable_b],
        "loss_first": [loss_a, loss_b],
        "loss_rel_diff": rel,
        "rtol": rtol,
    }


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


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

    def open(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
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

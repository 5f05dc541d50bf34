"""pytest plugin (entry point `qlora_bench`): VRAM budget assertions for users' own tests.

Two ways to hold a test to a memory budget:

    @pytest.mark.vram_budget("15GiB")            # the whole test body; sizes or a tier name ("t4")
    def test_train_step(): ...

    def test_train_step(vram_budget):            # only the block
        with vram_budget("6GiB") as peak:
            train_step()
        print(peak.bytes, peak.source)

What is measured (the `source` in every message says which):
- On a CUDA GPU: the peak during the body of `device` memory (NVML, this process, CUDA context
  included: what the card must hold, the default), `reserved` (torch caching allocator) or
  `allocated` (torch tensors); choose with `metric=` or `--vram-metric`. Peaks are absolute:
  memory the process already held on the GPU counts, as it would on the card.
- Without a GPU: the growth of this process's peak resident set size over the body (Linux VmHWM,
  reset before the body) as a measurable proxy, labelled "peak RSS growth (CPU proxy, not GPU
  memory)". Growth, not the absolute RSS, since the interpreter and torch alone hold hundreds of MiB.

Each measurement is stored on the test's `user_properties` (so junitxml carries it), in
`benchmark.extra_info` when the test also uses pytest-benchmark's `benchmark` fixture (so
`--benchmark-json` / `--benchmark-autosave` store it with the timings), and summarised at the
end of the session.

Options: --vram-device auto|cuda|cpu (auto: CUDA when torch sees a GPU), --vram-metric
device|reserved|allocated (GPU only).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from bench.analysis.gate import GateError, parse_budget
from bench.render.text import format_bytes
from bench.run.device import NvmlPeakSampler

GPU_METRICS = ("device", "reserved", "allocated")
_MEASUREMENTS = pytest.StashKey[list]()
_MARK_BUDGET = pytest.StashKey[Any]()
RSS_SOURCE = "peak RSS growth (CPU proxy, not GPU memory)"
_SOURCE_LABELS = {
    "device": "peak device memory (NVML, this process)",
    "device-all": "peak device memory (NVML, whole GPU: per-process figures unavailable)",
    "reserved": "peak torch reserved memory",
    "allocated": "peak torch allocated memory",
    "rss": RSS_SOURCE,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qlora-bench", "qlora-bench VRAM budgets")
    group.addoption("--vram-device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="Where vram_budget measures: cuda (GPU memory), cpu (peak RSS growth, a proxy) "
                         "or auto (cuda when torch sees a GPU). Default: auto.")
    group.addoption("--vram-metric", choices=GPU_METRICS, default="device",
                    help="GPU figure vram_budget holds to the budget: device (NVML, CUDA context incl.), "
                         "reserved or allocated (torch). Default: device.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vram_budget(limit, metric=None): fail the test when the peak memory of its body exceeds limit "
        "(15GiB, 16GB, 15360MiB, or a GPU tier name such as t4). On a CUDA GPU peak device memory; "
        "without one, peak RSS growth as a labelled CPU proxy (qlora-bench plugin).",
    )
    config.stash[_MEASUREMENTS] = []


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class Peak:
    """One measured peak: `bytes` over the body, what was measured (`source`), and the budget."""

    bytes: Optional[int] = None
    source: str = ""
    budget_bytes: Optional[int] = None
    budget_label: Optional[str] = None
    device: str = ""  # "cuda" | "cpu"

    @property
    def over_budget(self) -> bool:
        return self.budget_bytes is not None and self.bytes is not None and self.bytes > self.budget_bytes

    def describe(self) -> str:
        text = f"{_SOURCE_LABELS.get(self.source, self.source)} {format_bytes(self.bytes)}"
        if self.budget_bytes is not None:
            label = str(self.budget_label)
            size = "" if label[:1].isdigit() else f", {format_bytes(self.budget_bytes)}"
            text += f" ({'over' if self.over_budget else 'within'} the {label} budget{size})"
        return text

    def as_properties(self) -> dict[str, Any]:
        return {"vram_peak_bytes": self.bytes, "vram_source": self.source, "vram_device": self.device,
                "vram_budget_bytes": self.budget_bytes, "vram_budget": self.budget_label}


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _current_rss_bytes() -> Optional[int]:
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


class RssProbe:
    """Peak RSS growth of this process over a block (Linux).

    Resets the kernel's high-water mark (writing 5 to /proc/self/clear_refs) so VmHWM after the
    block is the peak during it; where that is not allowed, a thread samples VmRSS every 2 ms.
    """

    def __init__(self) -> None:
        self.start_bytes: Optional[int] = None
        self._hwm_reset = False
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _current_rss_bytes() or 0
            self._sampled_peak = max(self._sampled_peak, rss)
            self._stop.wait(0.002)

    def start(self) -> None:
        self.start_bytes = _current_rss_bytes()
        if self.start_bytes is None:
            raise RuntimeError("vram_budget on CPU reads /proc/self/status (Linux only)")
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._sampled_peak = self.start_bytes
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="vram-budget-rss", daemon=True)
        self._thread.start()

    def stop(self) -> Peak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = max(self._sampled_peak, _current_rss_bytes() or 0)
        if self._hwm_reset:
            hwm = _proc_status_kib("VmHWM")
            if hwm is not None:
                peak = max(peak, hwm * 1024)
        return Peak(bytes=max(0, peak - (self.start_bytes or 0)), source="rss", device="cpu")


class CudaProbe:
    """Peak GPU memory over a block: NVML (`device`), or torch's `reserved` / `allocated` peaks."""

    def __init__(self, metric: str, device_index: int = 0) -> None:
        self.metric = metric
        self.device_index = device_index
        self._sampler = None

    def start(self) -> None:
        import torch

        torch.cuda.synchronize(self.device_index)
        torch.cuda.reset_peak_memory_stats(self.device_index)
        if self.metric == "device":
            self._sampler = NvmlPeakSampler(self.device_index, interval_s=0.005)
            self._sampler.start()

    def stop(self) -> Peak:
        import torch

        torch.cuda.synchronize(self.device_index)
        if self.metric == "device" and self._sampler is not None:
            value = self._sampler.stop()
            if value is not None:
                source = "device" if self._sampler.source == "nvml-process" else "device-all"
                return Peak(bytes=int(value), source=source, device="cuda")
            # NVML unavailable: say so through the source, fall back to torch's reserved peak.
        if self.metric == "allocated":
            return Peak(bytes=int(torch.cuda.max_memory_allocated(self.device_index)), source="allocated", device="cuda")
        return Peak(bytes=int(torch.cuda.max_memory_reserved(self.device_index)), source="reserved", device="cuda")


def _resolve_device(config: pytest.Config) -> str:
    choice = config.getoption("--vram-device")
    if choice != "auto":
        return choice
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _make_probe(config: pytest.Config, metric: Optional[str]):
    device = _resolve_device(config)
    if device == "cuda":
        metric = metric or config.getoption("--vram-metric")
        if metric not in GPU_METRICS:
            raise ValueError(f"vram_budget metric {metric!r}: use one of {', '.join(GPU_METRICS)}")
        return CudaProbe(metric)
    return RssProbe()


def _parse_budget(limit: Any) -> Optional[tuple[int, str]]:
    """(bytes, label) of a budget given as whole bytes, a size text or a tier name; None for no budget."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool):
        if limit < 0:
            raise ValueError(f"vram_budget({limit!r}): a budget cannot be negative")
        return limit, f"{limit} B"
    try:
        b = parse_budget(str(limit), option="vram_budget")
    except GateError as exc:
        raise ValueError(str(exc)) from None
    return b.bytes, b.label


def _budget_and_probe(config: pytest.Config, limit: Any, metric: Optional[str], where: str):
    """(budget, probe) for `limit` and `metric`; fails the test as '`where`: problem' on bad arguments."""
    try:
        return _parse_budget(limit), _make_probe(config, metric)
    except ValueError as exc:
        problem = str(exc)
    pytest.fail(f"{where}: {problem}", pytrace=False)  # outside `except`: no chained traceback


def _record(item: pytest.Item, peak: Peak) -> None:
    for name, value in peak.as_properties().items():
        item.user_properties.append((name, value))
    bench_fixture = getattr(item, "funcargs", {}).get("benchmark")
    extra = getattr(bench_fixture, "extra_info", None)
    if isinstance(extra, dict):
        extra.update(peak.as_properties())
    item.config.stash[_MEASUREMENTS].append((item.nodeid, peak))


# ---------------------------------------------------------------------------------------------
# the marker


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("vram_budget")
    if mark is None:
        return
    if len(mark.args) != 1 or set(mark.kwargs) - {"metric"}:
        pytest.fail("vram_budget marker: use @pytest.mark.vram_budget(limit, metric=None), e.g. "
                    "vram_budget('15GiB') or vram_budget('t4')", pytrace=False)
    item.stash[_MARK_BUDGET] = _budget_and_probe(item.config, mark.args[0], mark.kwargs.get("metric"),
                                                 "vram_budget marker")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    entry = item.stash.get(_MARK_BUDGET, None)
    if entry is None:
        return (yield)
    (budget_bytes, budget_label), probe = entry
    probe.start()
    try:
        result = yield
    finally:
        peak = probe.stop()
        peak.budget_bytes, peak.budget_label = budget_bytes, budget_label
        _record(item, peak)
    if peak.over_budget:
        pytest.fail(f"vram_budget: {peak.describe()}", pytrace=False)
    return result


# ---------------------------------------------------------------------------------------------
# the fixture


class VramBudget:
    """`with vram_budget("6GiB") as peak:` measures the block and fails the test over budget."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    def __call__(self, limit: Any = None, metric: Optional[str] = None) -> "_Block":
        budget, probe = _budget_and_probe(self._request.config, limit, metric, "vram_budget")
        return _Block(self._request.node, probe, budget)


class _Block:
    def __init__(self, item: pytest.Item, probe, budget) -> None:
        self._item, self._probe = item, probe
        self.peak = Peak()
        if budget is not None:
            self.peak.budget_bytes, self.peak.budget_label = budget

    def __enter__(self) -> Peak:
        self._probe.start()
        return self.peak

    def __exit__(self, exc_type, exc, tb) -> bool:
        measured = self._probe.stop()
        self.peak.bytes, self.peak.source, self.peak.device = measured.bytes, measured.source, measured.device
        _record(self._item, self.peak)
        if exc_type is None and self.peak.over_budget:
            pytest.fail(f"vram_budget: {self.peak.describe()}", pytrace=False)
        return False


@pytest.fixture
def vram_budget(request: pytest.FixtureRequest) -> VramBudget:
    """Measure a block's peak memory and fail over budget: `with vram_budget("6GiB") as peak: ...`."""
    return VramBudget(request)


# ---------------------------------------------------------------------------------------------
# summary


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    measurements = config.stash.get(_MEASUREMENTS, [])
    if not measurements:
        return
    terminalreporter.section("qlora-bench VRAM budgets")
    for nodeid, peak in measurements:
        mark = "OVER" if peak.over_budget else "ok"
        terminalreporter.write_line(f"{mark:4} {nodeid}: {peak.describe()}")
    if any(p.device == "cpu" for _, p in measurements):
        terminalreporter.write_line(f"(cpu: {RSS_SOURCE}; run on a CUDA GPU for device memory)")

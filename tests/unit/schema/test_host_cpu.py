"""The host's CPU load over a cell's timed steps (bench.schema.host_cpu): /proc/stat arithmetic on known samples,
the warning's threshold, and the real reads around a CPU cell (bench.run.device.TimedWindow)."""

import dataclasses
import json
import os

import pytest

from bench.run.device import TimedWindow, read_host_sample
from bench.schema.host_cpu import HOST_BUSY_SHARE, HostCpuSample, host_cpu, host_cpu_warnings, proc_stat_jiffies
from bench.schema.record import ResultRecord
from bench.schema.store import read_records
from tests.helpers import FROZEN_RESULTS

PROC_STAT = """cpu  1000 50 300 8000 100 20 30 0 40 0
cpu0 500 25 150 4000 50 10 15 0 20 0
intr 12345
"""


def test_proc_stat_busy_is_everything_but_idle_and_iowait_guest_counted_once():
    assert proc_stat_jiffies(PROC_STAT) == (1000 + 50 + 300 + 20 + 30 + 0, 1400 + 8000 + 100)
    assert proc_stat_jiffies("cpu0 1 2 3 4\n") is None and proc_stat_jiffies("") is None


def test_cores_kept_busy_by_this_worker_and_by_the_others():
    # 4 cores, 10 s: the host was busy for half its CPU time (2 cores), this process used 1.5 CPU-seconds/s
    start = HostCpuSample(busy_jiffies=0, total_jiffies=0, own_cpu_s=3.0, wall_s=100.0)
    end = HostCpuSample(busy_jiffies=2000, total_jiffies=4000, own_cpu_s=18.0, wall_s=110.0)
    assert host_cpu(start, end, cores=4) == {"cores": 4, "seconds": 10.0, "busy_cores": 2.0, "own_cores": 1.5,
                                             "other_cores": 0.5}
    # own time counted on another clock than the host's jiffies can read above the host's: the others are 0, not < 0
    busy_self = dataclasses.replace(end, own_cpu_s=3.0 + 25.0)
    assert host_cpu(start, busy_self, cores=4)["other_cores"] == 0.0
    assert host_cpu(None, end, 4) is None and host_cpu(start, None, 4) is None and host_cpu(end, end, 4) is None


@pytest.mark.parametrize("cores, other, warned", [
    (32, 8.0, True), (32, 7.9, False),   # a quarter of a large host
    (2, 0.9, False), (2, 1.0, True),     # at least one core on a small one
    (32, None, False),
])
def test_warning_when_other_processes_kept_a_quarter_of_the_cores_busy(cores, other, warned):
    state = {"cores": cores, "seconds": 10.0, "busy_cores": 9.0, "own_cores": 1.0, "other_cores": other}
    warnings = host_cpu_warnings(state)
    assert bool(warnings) == warned
    if warned:
        assert f"{other:.1f} of {cores} cores" in warnings[0] and HOST_BUSY_SHARE == 0.25
    assert host_cpu_warnings(None) == []


def test_the_window_reads_the_host_from_the_warmups_end_to_the_last_timed_step():
    reads = iter(HostCpuSample(busy_jiffies=100 * k, total_jiffies=400 * k, own_cpu_s=float(k), wall_s=float(k))
                 for k in range(1, 10))
    window = TimedWindow(None, warmup_steps=2, read_host=lambda: next(reads))
    window.begin()  # with a warm-up, nothing is read before it ends
    for i in range(5):
        window.after_step(i)  # step 1 ends the warm-up (read 1); steps 2-4 read 2-4, the last stands
    state = window.host_cpu()
    assert state["seconds"] == 3.0 and state["own_cores"] == 1.0
    assert state["busy_cores"] == pytest.approx(os.cpu_count() / 4, abs=0.01)


def test_real_reads_on_this_machine():
    first = read_host_sample()
    assert first is not None and first.total_jiffies > 0 and first.own_cpu_s > 0
    x = 0
    for i in range(3_000_000):  # some CPU time of our own between the two reads
        x += i
    state = host_cpu(first, read_host_sample(), os.cpu_count())
    assert state is not None and state["cores"] == os.cpu_count() and state["own_cores"] > 0
    assert read_host_sample("/nonexistent/stat") is None


def test_the_field_travels_in_the_record_and_older_records_read_none():
    old = read_records(FROZEN_RESULTS / "t4-emulated.jsonl")[0]
    assert old.host_cpu is None
    rec = dataclasses.replace(old, host_cpu={"cores": 2, "seconds": 1.0, "busy_cores": 1.0, "own_cores": 1.0,
                                             "other_cores": 0.0})
    assert ResultRecord.from_dict(json.loads(rec.to_json())).host_cpu["cores"] == 2

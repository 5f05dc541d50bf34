"""Worker groups on a Dask cluster (`bench run --executor dask --scheduler tcp://HOST:8786`).

One Dask task per worker group (bench.run.groups): the task runs the suite's own worker subprocess on
the Dask worker that took it and streams every event back through a `distributed.Queue`; the client
(this process) is the only writer of the results file, so `--resume` works as with one GPU.

Placement uses Dask resources: a GPU group asks for `GPU=1` and `GPU_MEM_GIB=<the tier's memory>`, so
it lands on a worker that advertises a GPU large enough (`dask worker ... --resources "GPU=1,
GPU_MEM_GIB=80"`); a native-tier group also asks for the tier's own label (`h100=1`), which only workers
on such a card advertise; CPU groups ask for nothing. A worker lost while running a group (killed,
crashed, disconnected) makes that group's unfinished cells `error` records naming the worker, the
task is cancelled rather than retried elsewhere, and the run goes on; `--resume` runs them again.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable

from bench.run.executors import OnEvent
from bench.run.groups import GpuSlot, GroupJob, GroupRun, where

POLL_S = 0.2


def resources_for(job: GroupJob, device: str, tier: str, mode: str, memory_gib: float) -> dict:
    """The Dask resources a group's task needs (see the module docstring)."""
    if device != "cuda":
        return {}
    res = {"GPU": 1, "GPU_MEM_GIB": math.ceil(memory_gib)}
    if mode == "native":
        res[tier] = 1
    return res


def run_group_task(job: GroupJob, queue_name: str) -> str:
    """The Dask task: run one group here, each event onto the client's queue; returns where it ran."""
    from distributed import Queue, get_worker

    queue = Queue(queue_name)
    here = f"{where()} ({get_worker().address})"
    queue.put({"kind": "task_start", "job": job.log_path, "worker": get_worker().address, "where": here})
    GroupRun(job, lambda ev: queue.put(dict(ev, job=job.log_path)), GpuSlot()).run()
    queue.put({"kind": "task_done", "job": job.log_path})
    return here


class DaskExecutor:
    def __init__(self, scheduler, resources_of: Callable[[GroupJob], dict] = lambda job: {}, timeout_s: float = 30.0):
        """`scheduler`: an address (tcp://HOST:8786) or a distributed Cluster object (LocalCluster, SLURMCluster...)."""
        self.scheduler = scheduler
        self.resources_of = resources_of
        self.timeout_s = timeout_s

    def run(self, jobs: list[GroupJob], on_event: OnEvent) -> None:
        from distributed import Client, Queue

        if not jobs:
            return
        with Client(self.scheduler, timeout=self.timeout_s) as client:
            queue = Queue(f"qlora-bench-{jobs[0].run_id}-repeat{jobs[0].repeat}", client=client)
            by_key = {job.log_path: job for job in jobs}
            futures = {job.log_path: client.submit(run_group_task, job, queue.name,
                                                   key=f"group-{job.run_id}-repeat{job.repeat}-{i}",
                                                   resources=self.resources_of(job) or None, pure=False)
                       for i, job in enumerate(jobs)}
            _Drain(client, queue, by_key, futures, on_event).run()


def alive_workers(client) -> set[str]:
    """The addresses of the scheduler's workers, asked of the scheduler now. Not client.scheduler_info(): it
    returns the client's cached identity, which a periodic refresh (distributed 2025+) overwrites with one
    that lists no workers, so under load every running group once read as lost."""
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # distributed before identity(n_workers)
        info = client.sync(client.scheduler.identity)
    return set(info.get("workers", {}))


class _Drain:
    """Reads the queue until every group finished or was lost; turns lost groups into error records."""

    def __init__(self, client, queue, jobs: dict, futures: dict, on_event: OnEvent):
        self.client, self.queue, self.jobs, self.futures, self.on_event = client, queue, jobs, futures, on_event
        self.workers: dict[str, str] = {}  # job -> Dask worker address it started on
        self.places: dict[str, dict] = {}
        self.recorded: dict[str, set] = {key: set() for key in jobs}
        self.done: set[str] = set()

    def run(self) -> None:
        while len(self.done) < len(self.jobs):
            self._drain_queue()
            self._check_lost()
            self._check_failed()
            time.sleep(POLL_S)
        self._drain_queue()

    def _drain_queue(self) -> None:
        while self.queue.qsize():
            ev = self.queue.get()
            key = ev.get("job")
            if key not in self.jobs or key in self.done and ev["kind"] != "record":
                continue
            if ev["kind"] == "task_start":
                self.workers[key] = ev["worker"]
                self.places[key] = {"executor": "dask", "host": ev["where"], "gpu_index": None, "gpu_uuid": None}
            elif ev["kind"] == "task_done":
                self.done.add(key)
            else:
                if ev["kind"] == "record":
                    self.recorded[key].add(ev["record"]["cell_id"])
                self.on_event(self.jobs[key], ev, self.places.get(key, {"executor": "dask"}))

    def _check_lost(self) -> None:
        alive = alive_workers(self.client)
        for key, address in self.workers.items():
            if key not in self.done and address not in alive:
                self._lose(key, f"Dask worker {address} was lost while running this group")

    def _check_failed(self) -> None:
        for key, fut in self.futures.items():
            if key not in self.done and fut.status in ("error", "cancelled"):
                self._drain_queue()
                if key not in self.done:
                    exc = fut.exception() if fut.status == "error" else "cancelled"
                    self._lose(key, f"the group's Dask task failed: {exc}")

    def _lose(self, key: str, why: str) -> None:
        self.futures[key].cancel()
        self._drain_queue()
        job = self.jobs[key]
        run = GroupRun(job, lambda ev: None)
        for cell in run.cells:
            if cell.cell_id in self.recorded[key] or cell.cell_id in set(job.finished):
                continue
            record = run.failure_record(cell, "error", f"lost: {why}")
            self.on_event(job, {"kind": "record", "record": asdict(record)},
                          self.places.get(key, {"executor": "dask"}))
        self.done.add(key)

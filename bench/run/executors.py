"""Where worker groups run: one after another on the visible GPU (SerialExecutor, the default), over
several local GPUs at once (LocalGpuExecutor, `--gpus`), or on a Dask cluster (bench.run.dask_executor).

An executor calls `on_event(job, event, placement)` for every event of every group (bench.run.groups);
the launcher is the only one that writes records, so an executor never touches the results file.
`placement` says where the group ran: executor, host, GPU index and UUID.
"""

from __future__ import annotations

import queue
import socket
import threading
from contextlib import nullcontext
from typing import Callable, Optional, Protocol

from bench.run.groups import GpuSlot, GroupJob, GroupRun

OnEvent = Callable[[GroupJob, dict, dict], None]


class Executor(Protocol):
    def run(self, jobs: list[GroupJob], on_event: OnEvent) -> None: ...


def placement(executor: str, slot: GpuSlot, host: Optional[str] = None) -> dict:
    return {"executor": executor, "host": host or socket.gethostname(), "gpu_index": slot.index,
            "gpu_uuid": slot.uuid}


class SerialExecutor:
    """Every group in this process's thread, in plan order, on whatever GPU is visible."""

    def run(self, jobs: list[GroupJob], on_event: OnEvent) -> None:
        for job in jobs:
            where = placement("serial", GpuSlot())
            GroupRun(job, lambda ev, job=job: on_event(job, ev, where)).run()


class LocalGpuExecutor:
    """Groups spread over local GPUs: one worker per GPU at a time (CUDA_VISIBLE_DEVICES), groups taken in
    plan order by whichever GPU is free. With `exclusive`, workers still load in parallel but only one
    cell is measured at a time across all GPUs (speed figures with no neighbour on the host's CPU)."""

    def __init__(self, slots: list[GpuSlot], exclusive: bool = False):
        if not slots:
            raise ValueError("no GPU to run on")
        self.slots = slots
        self.exclusive = exclusive

    def run(self, jobs: list[GroupJob], on_event: OnEvent) -> None:
        todo: "queue.Queue[GroupJob]" = queue.Queue()
        for job in jobs:
            todo.put(job)
        measure_lock = threading.Lock() if self.exclusive else None
        errors: list[BaseException] = []

        def serve(slot: GpuSlot) -> None:
            where = dict(placement("local", slot), exclusive=self.exclusive)
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    GroupRun(job, lambda ev, job=job: on_event(job, ev, where), slot,
                             cell_lock=measure_lock or nullcontext()).run()
                except BaseException as exc:  # noqa: BLE001 - reported after the other GPUs finish
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=serve, args=(slot,), name=f"gpu{slot.index}", daemon=True)
                   for slot in self.slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


def gpu_slots(spec: str, gpus: list[dict]) -> list[GpuSlot]:
    """`--gpus all` or '0,2' -> the slots of those local GPUs (NVML indexes); ValueError naming what is wrong."""
    by_index = {g["index"]: g for g in gpus}
    if not gpus:
        raise ValueError("--gpus: no NVIDIA GPU found (NVML)")
    if spec.strip().lower() == "all":
        wanted = sorted(by_index)
    else:
        try:
            wanted = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--gpus {spec!r}: write all, or GPU indexes such as 0,1") from None
        missing = [i for i in wanted if i not in by_index]
        if missing or not wanted:
            raise ValueError(f"--gpus {spec!r}: this host has GPUs {sorted(by_index)}")
    names = {by_index[i]["name"] for i in wanted}
    if len(names) > 1:  # one run is one GPU model: cells measured on two models would be compared as one
        raise ValueError(f"--gpus {spec!r}: these GPUs are not one model ({', '.join(sorted(names))}); "
                         "pick GPUs of one model (e.g. --gpus 0,1), or run once per model")
    return [GpuSlot(i, by_index[i]["uuid"], by_index[i]["name"]) for i in dict.fromkeys(wanted)]

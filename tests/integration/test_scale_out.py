"""Past one GPU, on the CPU: the GPU-assignment planner with fake GPU lists, the local multi-GPU executor
running real tiny-model cells on two lanes, and a real Dask LocalCluster running `bench run --executor dask`
end to end, with a worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bench.config.request import RunRequest, to_config
from bench.run.executors import LocalGpuExecutor, gpu_slots
from bench.run.groups import GpuSlot
from bench.run.launcher import Runner, make_plan
from bench.schema.store import read_records
from tests.helpers import run_bench

FAKE_GPUS = [{"index": i, "uuid": f"GPU-fake-{i}", "name": "NVIDIA H200", "total_memory_bytes": 141 << 30}
             for i in range(3)]


def test_gpu_slots_from_the_option():
    assert [s.index for s in gpu_slots("all", FAKE_GPUS)] == [0, 1, 2]
    assert [(s.index, s.uuid) for s in gpu_slots("2,0", FAKE_GPUS)] == [(2, "GPU-fake-2"), (0, "GPU-fake-0")]
    for bad, message in (("3", "has GPUs"), ("x", "GPU indexes"), ("", "has GPUs")):
        with pytest.raises(ValueError, match=message):
            gpu_slots(bad, FAKE_GPUS)
    with pytest.raises(ValueError, match="no NVIDIA GPU"):
        gpu_slots("all", [])
    mixed = [*FAKE_GPUS, {"index": 3, "uuid": "GPU-fake-3", "name": "NVIDIA H100", "total_memory_bytes": 80 << 30}]
    with pytest.raises(ValueError, match="not one model"):
        gpu_slots("all", mixed)
    assert [s.index for s in gpu_slots("0,1", mixed)] == [0, 1]


def _plan(tmp_path, recipes="hf-kbit,hf-trl", seq="16,32", batch="1"):
    config = to_config(RunRequest(tier="t4", device="cpu", model="tiny-llama", seq_len=seq, batch_size=batch,
                                  recipe=recipes, train={"steps": 1, "warmup_steps": 1}))
    return make_plan(config)


def _content(records):
    """What a run measured, without timings, placement or run ids."""
    return sorted((r.cell_id, r.status, r.loss_first, r.trainable_params, tuple(r.step_tokens)) for r in records)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("serial") / "r.jsonl"
    runner = Runner(_plan(out.parent), out, cache_dir=cache_dir)
    return runner.run(), out


def test_groups_spread_over_gpus_in_order_with_one_writer(tmp_path, cache_dir, serial_run):
    """Two fake GPUs run the two worker groups side by side (CPU cells: CUDA_VISIBLE_DEVICES is ignored)."""
    out = tmp_path / "r.jsonl"
    runner = Runner(_plan(tmp_path), out, cache_dir=cache_dir,
                    executor=LocalGpuExecutor([GpuSlot(0, "GPU-a"), GpuSlot(1, "GPU-b")]))
    records = runner.run()
    assert _content(records) == _content(serial_run[0])  # the same cells and losses as a serial run
    lanes = {}
    for r in read_records(out):  # one file, every line a whole record: one writer
        lanes.setdefault(r.recipe, set()).add(r.placement["gpu_index"])
        assert r.placement["executor"] == "local" and r.placement["cells_beside"] in (0, 1)
    assert all(len(v) == 1 for v in lanes.values()) and set().union(*lanes.values()) == {0, 1}
    for recipe in lanes:  # cells of a group keep their order (smallest first) on their GPU
        seqs = [r.seq_len for r in read_records(out) if r.recipe == recipe]
        assert seqs == sorted(seqs)


def test_resume_and_skip_dominated_across_gpus(tmp_path, cache_dir):
    plan = _plan(tmp_path, recipes="hf-kbit,hf-trl", seq="16,32,64", batch="1")
    out = tmp_path / "r.jsonl"
    first = Runner(plan, out, cache_dir=cache_dir).records  # empty: nothing run yet
    assert first == {}
    # a previous run: hf-kbit ran out of memory at seq 32 (written as the launcher would)
    runner = Runner(plan, out, cache_dir=cache_dir)
    small, mid = [c for c in plan.cells if c.recipe == "hf-kbit"][:2]
    from bench.run.groups import GroupRun

    job = runner.group_job("hf-kbit", plan.models[0], [c for c in plan.cells if c.recipe == "hf-kbit"])
    runner.write(GroupRun(job, lambda ev: None).failure_record(mid, "oom", "OOM at 15.00 GiB cap"))
    resumed = Runner(plan, out, resume=True, cache_dir=cache_dir,
                     executor=LocalGpuExecutor([GpuSlot(0, "GPU-a"), GpuSlot(1, "GPU-b")]))
    records = {r.cell_id: r for r in resumed.run()}
    big = [c for c in plan.cells if c.recipe == "hf-kbit"][2]
    assert records[mid.cell_id].status == "oom"  # kept, not run again
    assert records[big.cell_id].status == "skipped" and mid.cell_id in records[big.cell_id].error
    assert records[small.cell_id].status == "ok"
    assert all(records[c.cell_id].status == "ok" for c in plan.cells if c.recipe == "hf-trl")


# -- Dask -----------------------------------------------------------------------------------------------
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      worker_class=distributed.Nanny) as c:
            yield c


def test_alive_workers_asks_the_scheduler_not_the_clients_cache(cluster):
    """The client's periodic refresh leaves its cached identity without workers (distributed 2026.8): a run
    under load once read both groups as lost. The scheduler itself still lists them."""
    from bench.run.dask_executor import alive_workers

    with distributed.Client(cluster.scheduler_address) as client:
        client.sync(client._update_scheduler_info, n_workers=0)  # what the periodic refresh does
        assert client._scheduler_identity["workers"] == {}
        # the race's outcome: the refresh lands between scheduler_info()'s fetch and its return
        client.scheduler_info = lambda *a, **k: client._scheduler_identity
        assert alive_workers(client) == set(cluster.scheduler_info["workers"]) and len(alive_workers(client)) == 2


def test_dask_run_through_the_cli_matches_a_serial_run(cluster, tmp_path, cache_dir, serial_run):
    out = tmp_path / "dask.jsonl"
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "16,32",
                     "--batch-size", "1", "--recipe", "hf-kbit,hf-trl", "--steps", "1", "--warmup-steps", "1",
                     "--executor", "dask", "--scheduler", cluster.scheduler_address, "--out", str(out),
                     "--cache-dir", str(cache_dir), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = read_records(out)
    assert _content(records) == _content(serial_run[0])
    assert {r.placement["executor"] for r in records} == {"dask"}


def test_a_killed_dask_worker_makes_its_cells_errors_and_the_run_finishes(cluster, tmp_path, cache_dir):
    """The slow group's Dask worker is killed while its first cell trains: its cells become error records
    naming the lost worker, the other group finishes, and --resume would run the lost cells again."""
    from bench.run.dask_executor import DaskExecutor

    slow = dict(json.loads((Path(__file__).resolve().parents[2] / "bench/config/architectures/tiny-llama.json")
                           .read_text()), hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=8, head_dim=64)
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    config = to_config(RunRequest(tier="t4", device="cpu", model=f"tiny-llama,{tmp_path / 'slow.json'}",
                                  seq_len="512", batch_size="1", recipe="hf-kbit", driver="loop",
                                  train={"steps": 40, "warmup_steps": 1}))
    out = tmp_path / "r.jsonl"
    runner = Runner(make_plan(config), out, cache_dir=cache_dir, executor=DaskExecutor(cluster.scheduler_address))

    def kill_the_slow_worker():
        """When the fast group has finished, kill the Dask worker whose task is the slow group's (the second)."""
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.5)
            done = out.exists() and any(r.model == "tiny-llama" for r in read_records(out))
            busy = [ws for ws in cluster.scheduler.workers.values()
                    if any(str(ts.key).endswith("-1") for ts in ws.processing)]
            if done and busy:
                time.sleep(3)  # the slow model is loading or training its first cell
                os.kill(busy[0].pid, signal.SIGKILL)
                return

    killer = threading.Thread(target=kill_the_slow_worker, daemon=True)
    killer.start()
    records = {r.model: r for r in runner.run()}
    killer.join(timeout=5)
    assert records["tiny-llama"].status == "ok"
    assert records["slow"].status == "error" and "lost" in records["slow"].error


def test_gpus_keep_to_what_cuda_visible_devices_leaves():
    # Two runs side by side (CUDA_VISIBLE_DEVICES=0 and =1, each `--gpus all`) must not share a GPU.
    from bench.run.device import cuda_visible

    assert cuda_visible(FAKE_GPUS, None) == FAKE_GPUS
    assert [g["index"] for g in cuda_visible(FAKE_GPUS, "1")] == [1]
    assert [g["index"] for g in cuda_visible(FAKE_GPUS, "2,0")] == [2, 0]
    assert [g["index"] for g in cuda_visible(FAKE_GPUS, "GPU-fake-1")] == [1]
    assert [g["index"] for g in cuda_visible(FAKE_GPUS, "0,7,1")] == [0]  # CUDA stops at the first unknown
    assert cuda_visible(FAKE_GPUS, "") == [] and cuda_visible(FAKE_GPUS, "-1") == []
    assert [s.index for s in gpu_slots("all", cuda_visible(FAKE_GPUS, "1"))] == [1]

"""GPU-only: both backends on a tiny model, matched. Skipped without CUDA."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_both_backends_train_matched_on_the_gpu(tmp_path):
    from bench.schema.store import load
    from bench.run.device import detect_host_gpu
    from tests.helpers import run_bench

    host = detect_host_gpu()
    tier = host.tier.name if host and host.tier else "t4"
    out = tmp_path / "gpu.jsonl"
    proc = run_bench("run", "--gpu-tier", tier, "--model", "llama-3.2-1b", "--seq-len", "512", "--batch-size", "1",
                     "--steps", "2", "--warmup-steps", "1", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = load([out])
    assert {r.backend for r in records} == {"hf", "unsloth"}
    for r in records:
        assert r.status == "ok" and r.matched is True
        assert r.peak_allocated_bytes > 0 and r.peak_device_bytes >= r.peak_allocated_bytes

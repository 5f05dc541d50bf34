"""A worker sees one GPU (bench.run.workerproc): TRL's SFTTrainer refuses nn.DataParallel, which Trainer
uses when a process sees several GPUs (seen on a two-GPU host: kernels-check's hf-liger worker failed)."""

from bench.run.workerproc import first_visible_gpu, worker_env


def test_the_first_visible_gpu():
    assert first_visible_gpu(None) == "0"
    assert first_visible_gpu("2,3") == "2"
    assert first_visible_gpu("GPU-abc, GPU-def") == "GPU-abc"
    assert first_visible_gpu("") == ""  # none visible stays none


def test_worker_env_pins_one_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert worker_env({})["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_env({})["CUDA_VISIBLE_DEVICES"] == "0"

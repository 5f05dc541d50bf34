"""Backends build a 4-bit + LoRA model from one Cell; `load_backend` imports only the one asked for.

Never import two backends in one process: Unsloth patches transformers globally on import.
"""

from __future__ import annotations

from bench.run.backends.base import BackendSettings, LoadedModel


def load_backend(name: str, path: str, settings: BackendSettings) -> LoadedModel:
    if name == "hf":
        from bench.run.backends.hf import load
    elif name == "unsloth":
        from bench.run.backends.unsloth import load
    else:
        raise ValueError(f"unknown backend {name!r}")
    return load(path, settings)


__all__ = ["BackendSettings", "LoadedModel", "load_backend"]

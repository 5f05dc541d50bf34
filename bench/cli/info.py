"""`bench tiers` and `bench models`: the GPU tier table and the shipped architectures."""

from __future__ import annotations

import typer

from bench.analysis.estimate import model_shape
from bench.cli.common import console
from bench.render.console import fitted_table
from bench.config.models import SHIPPED, TARGET_MODULES
from bench.config.tiers import TIERS
from bench.run.device import detect_host_gpu
from bench.units import GiB


def tiers():
    """The GPU tiers: memory, bandwidth, tensor throughput, features, price."""
    host = detect_host_gpu()
    rows = []
    for tier in TIERS.values():
        here = ""
        if host is not None:
            if host.tier is not None and host.tier.name == tier.name:
                here = "native"
            else:
                here = "emulated" if host.total_memory_bytes >= tier.memory_cap_bytes else "too large"
        rows.append([tier.name, tier.marketing_name, f"{tier.usable_vram_bytes / GiB:.1f}",
                     f"{tier.memory_bandwidth_gbps:.0f}", f"{tier.fp16_tflops:g}",
                     "-" if tier.bf16_tflops is None else f"{tier.bf16_tflops:g}",
                     "%d.%d" % tier.compute_capability, "yes" if tier.supports_bf16 else "no",
                     "yes" if tier.supports_fp8 else "no", "yes" if tier.supports_flash_attention_2 else "no",
                     f"{tier.price_per_hour_usd:.2f}", here])
    columns = [("tier", 9), ("GPU", 4), ("usable GiB", 8), ("GB/s", 3), ("fp16 TF/s", 5), ("bf16 TF/s", 2),
               ("cc", 1), ("bf16", 6), ("fp8", 6), ("FA2", 1), ("$/h", 5), ("here", 7)]
    console.print(fitted_table("GPU tiers (datasheet figures; price indicative)", columns, rows, console.width,
                               right=("usable GiB", "GB/s", "fp16 TF/s", "bf16 TF/s", "$/h")))
    console.print(f"present GPU: {host.name if host else 'none'}")


def models():
    """The shipped architectures (configs only; weights are synthesised)."""
    rows = []
    for m in SHIPPED.values():
        cfg = m.config_dict()
        n = model_shape(cfg).total_params  # from the config's shapes (tests check it against transformers)
        rows.append([m.name, m.mirrors, cfg["model_type"], f"{n / 1e9:.2f}B" if n > 1e8 else f"{n / 1e6:.2f}M",
                     str(cfg["num_hidden_layers"]), str(cfg["hidden_size"]), str(cfg["vocab_size"]),
                     str(cfg.get("max_position_embeddings")), "yes" if m.unsloth_fast_path else "no",
                     ",".join(TARGET_MODULES.get(cfg["model_type"], ())).replace("_proj", "")])
    columns = [("name", 9), ("mirrors", 2), ("model_type", 7), ("params", 8), ("layers", 4), ("hidden", 3),
               ("vocab", 3), ("max pos", 5), ("Unsloth fast path", 6), ("LoRA targets (_proj)", 1)]
    console.print(fitted_table("Shipped architectures", columns, rows, console.width,
                               right=("params", "layers", "hidden", "vocab", "max pos")))


def register(app: typer.Typer) -> None:
    app.command()(tiers)
    app.command()(models)

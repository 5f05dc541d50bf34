"""qlora-bench: matched benchmarks of vanilla Hugging Face QLoRA and Unsloth QLoRA."""

__version__ = "0.1.0"

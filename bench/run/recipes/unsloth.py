"""Unsloth's recipes: FastLanguageModel.from_pretrained (4-bit NF4 for `unsloth`, 16-bit weights for
`unsloth-lora16`) + FastLanguageModel.get_peft_model with Unsloth's checkpointing, as its notebooks do.

Import this module only in a process that runs nothing else: `import unsloth` patches
transformers and peft globally. The worker imports unsloth before anything else.
"""

from __future__ import annotations

import io
import logging
import os
from contextlib import redirect_stdout

from bench.run.recipes.base import RecipeSettings, LoadedModel, count_4bit_linears
from kernels_check.static import parse_unsloth_log

# Unsloth's own statistics ping and update checks have nothing to reach offline.
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")


def load(path: str, s: RecipeSettings, *, load_in_4bit: bool = True) -> LoadedModel:
    import torch
    import unsloth
    from unsloth import FastLanguageModel

    if s.device != "cuda":
        raise RuntimeError("Unsloth's recipes need a CUDA GPU")
    dtype = getattr(torch, s.dtype)
    banner = io.StringIO()

    class Tee(io.TextIOBase):  # keep Unsloth's banner for the record and still print it to the log
        def write(self, text):
            banner.write(text)
            return os.sys.__stdout__.write(text)

    handler = logging.StreamHandler(banner)  # "patched N layers ..." goes through transformers' logger
    tf_logger = logging.getLogger("transformers")
    tf_logger.addHandler(handler)
    with redirect_stdout(Tee()):
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=path,
            max_seq_length=s.max_seq_len,
            dtype=dtype,
            load_in_4bit=load_in_4bit,
            **({} if load_in_4bit else {"load_in_16bit": True}),
            trust_remote_code=s.trust_remote_code,
        )
        checkpointing = {"unsloth": "unsloth", "standard": True, "none": False}[s.checkpointing]
        model = FastLanguageModel.get_peft_model(
            model,
            r=s.lora_r,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=list(s.target_modules),
            bias="none",
            use_gradient_checkpointing=checkpointing,
            random_state=s.seed,
            max_seq_length=s.max_seq_len,
        )
    tf_logger.removeHandler(handler)
    text = banner.getvalue()
    log = parse_unsloth_log(text)  # "Unsloth X: Fast Y patching", "... patched N layers with ..."
    patched = log["patched"]
    return LoadedModel.of(model, tokenizer, {
        "unsloth_version": getattr(unsloth, "__version__", None),
        "model_class": type(model.base_model.model).__name__ if hasattr(model, "base_model") else type(model).__name__,
        "linear4bit_modules": count_4bit_linears(model),
        "patching_banner": log["fast_name"],
        "embedding_device": str(model.get_input_embeddings().weight.device),
        "compiled_fallback": os.environ.get("UNSLOTH_USE_NEW_MODEL") == "1",
        "patched_layers": {k: patched[k] for k in ("layers", "qkv", "o", "mlp")} if patched else None,
        "banner": text[-3000:],
    })

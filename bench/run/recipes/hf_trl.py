"""The Hugging Face recipes users run today: a model from AutoModelForCausalLM, LoRA attached by TRL's
SFTTrainer from a LoraConfig (hf-trl; hf-lora16 without quantisation; hf-liger with Liger's kernels).

The model is handed to `trl.SFTTrainer(peft_config=LoraConfig(...))` once, at load, so that TRL itself
does what it does to a model (TRL 1.15 `trainer/sft_trainer.py`): get_peft_model (adapters in
fp32), enable_input_require_grads, and for a quantised model every trainable weight cast to bf16
(lines 871-880); it never calls prepare_model_for_kbit_training, so embeddings, lm_head and norms
stay in the load dtype. Gradient checkpointing is turned on as transformers' Trainer.train() does
(use_reentrant=False). Each cell then builds its own SFTTrainer on this PeftModel (bench.run.drivers).
hf-liger applies Liger's kernels with transformers' own integration and the configuration TRL
chooses (fused linear cross-entropy off: TRL keeps its own fused loss).
"""

from __future__ import annotations

import gc

from bench.run.recipes.base import LoadedModel, RecipeSettings, count_4bit_linears


def load(path: str, s: RecipeSettings, *, quantize: bool, liger: bool = False) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = getattr(torch, s.dtype)
    kwargs = {}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, device_map={"": 0 if s.device == "cuda" else "cpu"},
        attn_implementation=s.attn_implementation, trust_remote_code=s.trust_remote_code, **kwargs)
    model.config.use_cache = False
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=s.trust_remote_code)
    if s.checkpointing == "unsloth":
        raise ValueError("gradient checkpointing 'unsloth' exists only in Unsloth's recipes")
    model = attach_lora_with_trl(model, tokenizer, s)
    if liger:
        from transformers.integrations.liger import apply_liger_kernel

        apply_liger_kernel(model, {"fused_linear_cross_entropy": False})
    lora_dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    return LoadedModel.of(model, tokenizer, {
        "linear4bit_modules": count_4bit_linears(model), "lora_dtype": ",".join(lora_dtypes),
        "embedding_dtype": str(model.get_input_embeddings().weight.dtype).removeprefix("torch."),
        "gradient_checkpointing": "transformers (use_reentrant=False), as Trainer.train enables it"
        if s.checkpointing != "none" else "off",
        "liger": liger})


def attach_lora_with_trl(model, tokenizer, s: RecipeSettings):
    """The PeftModel TRL's SFTTrainer makes of `model` from a LoraConfig (see the module docstring)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    lora = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      target_modules=list(s.target_modules), bias="none", task_type="CAUSAL_LM")
    one_row = Dataset.from_dict({"input_ids": [[0, 1]]})
    args = SFTConfig(output_dir="/tmp/qlora-bench-sft", max_steps=1, report_to="none", save_strategy="no",
                     seed=s.seed, use_cpu=s.device != "cuda", bf16=False, fp16=False,
                     gradient_checkpointing=s.checkpointing != "none", max_length=None, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=one_row, processing_class=tokenizer,
                         peft_config=lora)
    peft_model = trainer.model
    del trainer
    gc.collect()
    if s.checkpointing != "none":
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if s.device == "cuda":
        torch.cuda.empty_cache()
    return peft_model

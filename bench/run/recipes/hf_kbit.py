"""The classic QLoRA recipe (QLoRA paper, PEFT docs), hf-kbit: transformers + bitsandbytes NF4, then
peft's prepare_model_for_kbit_training (every non-4-bit parameter cast to fp32, gradient checkpointing
on) and get_peft_model."""

from __future__ import annotations

from bench.run.recipes.base import RecipeSettings, LoadedModel, count_4bit_linears


def load(path: str, s: RecipeSettings) -> LoadedModel:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = getattr(torch, s.dtype)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=quant,
        dtype=dtype,
        device_map={"": 0 if s.device == "cuda" else "cpu"},
        attn_implementation=s.attn_implementation,
        trust_remote_code=s.trust_remote_code,
    )
    model.config.use_cache = False
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=s.trust_remote_code)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.checkpointing != "none")
    if s.checkpointing == "unsloth":
        raise ValueError("gradient checkpointing 'unsloth' exists only in the unsloth backend")
    torch.manual_seed(s.seed)
    lora = LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=list(s.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    return LoadedModel.of(model, tokenizer, {
        "linear4bit_modules": count_4bit_linears(model),
        "gradient_checkpointing": "transformers gradient_checkpointing_enable via prepare_model_for_kbit_training"
        if s.checkpointing != "none" else "off"})

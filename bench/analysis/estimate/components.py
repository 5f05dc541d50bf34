"""An estimate's breakdown grouped into a few stable components: where the memory of a recipe goes,
so that two recipes' estimates show where their difference comes from (the report's ladder).
Bytes throughout; every term `model.estimate_recipe` can put in a breakdown belongs to one component.
"""

from __future__ import annotations

from bench.analysis.estimate.model import Estimate
from bench.analysis.estimate.shapes import EstimateError

#: The components, in the order a ladder lists them, with what each holds.
COMPONENTS: dict[str, str] = {
    "weights": "base weights: NF4 (or 16-bit) decoder Linears; embeddings, lm_head and norms in the load dtype",
    "fp32_upcasts": "what peft's fp32 upcast adds (hf-kbit): the fp32 embeddings / lm_head / norms and the "
                    "16-bit copy of the fp32 lm_head autocast makes",
    "lora": "LoRA weights and their gradients",
    "optimizer_states": "AdamW states of the LoRA weights and the optimizer step's temporaries",
    "checkpointed_activations": "checkpointed layer inputs (or what stays on the GPU when Unsloth offloads "
                                "them), the recomputed layer's saved tensors, all layers' without checkpointing",
    "logits_and_loss": "the lm_head and loss: full fp32 logits, TRL's chunked fused head or Unsloth's fused "
                       "cross-entropy",
    "kernels_working_set": "the backward's gradient buffers of one layer and the dequantised-weight buffer",
    "allocator_slack": "the caching allocator's reserved-but-unallocated memory (calibrated)",
    "cuda_context": "CUDA context, kernel modules and library handles outside torch (calibrated)",
}

#: Breakdown term -> component.
TERM_COMPONENT: dict[str, str] = {
    "weights_nf4": "weights", "weights_16bit": "weights", "weights_unquantized": "weights",
    "fp32_upcast_weights": "fp32_upcasts", "lm_head_weight_copy": "fp32_upcasts",
    "lora_weights": "lora", "lora_grads": "lora",
    "optimizer_states": "optimizer_states", "optimizer_step_temporaries": "optimizer_states",
    "checkpointed_layer_inputs": "checkpointed_activations", "checkpoint_hidden_on_gpu": "checkpointed_activations",
    "activations_all_layers": "checkpointed_activations", "layer_activations": "checkpointed_activations",
    "logits_and_loss": "logits_and_loss", "lm_head_input_copy": "logits_and_loss",
    "backward_workspace": "kernels_working_set", "dequant_buffer": "kernels_working_set",
    "allocator_slack": "allocator_slack", "cuda_context_and_libraries": "cuda_context",
}


def breakdown_by_component(estimate: Estimate) -> dict[str, int]:
    """Bytes per component (every name of COMPONENTS, in its order, 0 where nothing falls); the values
    sum to `estimate.total_bytes`."""
    out = dict.fromkeys(COMPONENTS, 0)
    for term, nbytes in estimate.breakdown.items():
        if term not in TERM_COMPONENT:
            raise EstimateError(f"breakdown term {term!r} has no component")
        out[TERM_COMPONENT[term]] += int(nbytes)
    return out

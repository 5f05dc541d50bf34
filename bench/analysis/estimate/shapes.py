"""Model shapes the estimator needs, read from a transformers config dict (no torch, no weights).

Sizes are element counts: H = hidden_size, I = intermediate_size, L = num_hidden_layers,
V = vocab_size, qd = heads * head_dim, kvd = kv_heads * head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional


class EstimateError(ValueError):
    """A request the estimator cannot answer (CLI exit code 2)."""


#: Where a decoder Linear's input comes from (projections with the same source share one input tensor):
#: the attention norm's output, the attention output, the MLP norm's output, the MLP activation.
ATTN_IN, ATTN_OUT, MLP_IN, MLP_ACT = "attn_norm", "attn_out", "mlp_norm", "mlp_act"


@dataclass(frozen=True)
class LinearShape:
    name: str  # module name inside a decoder layer (the LoRA target name)
    in_features: int
    out_features: int
    bias: bool = False
    source: str = ATTN_IN  # which tensor it reads: ATTN_IN, ATTN_OUT, MLP_IN or MLP_ACT

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a transformers config dict (no torch needed)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    max_positions: Optional[int]
    layer_linears: tuple[LinearShape, ...]
    norms_per_layer: int  # H-sized norm weight vectors per decoder layer
    norm_bias: bool  # LayerNorm (weight + bias) instead of RMSNorm (weight)
    extra_layer_params: int = 0  # per-layer parameters outside linears and H-sized norms (qk-norms)
    gated_mlp: bool = True  # SwiGLU / GeGLU (gate * up) vs a plain MLP (GPT-NeoX)
    sliding_window: Optional[int] = None  # a window narrower than the sequence needs an explicit mask
    final_logit_softcapping: Optional[float] = None

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """lm_head weights not shared with the input embedding (0 when tied)."""
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        per = self.hidden_size * (2 if self.norm_bias else 1)
        return (self.norms_per_layer * self.num_layers + 1) * per + self.extra_layer_params * self.num_layers

    @property
    def bias_params(self) -> int:
        return self.num_layers * sum(lin.out_features for lin in self.layer_linears if lin.bias)

    @property
    def quantized_params(self) -> int:
        """Weights of every decoder Linear: what load_in_4bit turns into NF4 (lm_head is skipped)."""
        return self.num_layers * sum(lin.weight_params for lin in self.layer_linears)

    @property
    def unquantized_params(self) -> int:
        """Parameters kept in 16/32-bit: embeddings, an untied lm_head, norms, biases."""
        return self.embedding_params + self.lm_head_params + self.norm_params + self.bias_params

    @property
    def total_params(self) -> int:
        return self.quantized_params + self.unquantized_params

    @property
    def matmul_params(self) -> int:
        """Decoder Linears plus lm_head (a tied head counts once), as bench.config.models.parameter_counts."""
        return self.quantized_params + self.embedding_params

    def targets(self, target_modules: Optional[Iterable[str]]) -> list[LinearShape]:
        """The decoder Linears a LoRA target list selects (None: every projection)."""
        if target_modules is None:
            return list(self.layer_linears)
        names = set(target_modules)
        chosen = [lin for lin in self.layer_linears if lin.name in names]
        unknown = names - {lin.name for lin in self.layer_linears}
        if unknown:
            raise EstimateError(
                f"target modules {sorted(unknown)} are not projections of a {self.model_type} layer "
                f"({', '.join(lin.name for lin in self.layer_linears)})")
        return chosen

    def lora_tensors(self, r: int, target_modules: Optional[Iterable[str]]) -> list[int]:
        """Element counts of every LoRA tensor: A (r x in) and B (out x r) per targeted Linear per layer."""
        out = []
        for lin in self.targets(target_modules):
            out += [r * lin.in_features, lin.out_features * r]
        return out * self.num_layers

    def lora_params(self, r: int, target_modules: Optional[Iterable[str]]) -> int:
        return sum(self.lora_tensors(r, target_modules))


def _field(config: dict[str, Any], name: str, default: Any) -> Any:
    """config[name], or `default` where the config leaves it out or sets it to None."""
    value = config.get(name)
    return default if value is None else value


def model_shape(config: dict[str, Any]) -> ModelShape:
    """Shapes of a transformers config dict for the architectures the suite ships.

    llama / mistral / qwen2 / qwen3 / gemma / gemma2: q, k, v, o, gate, up, down projections;
    phi3: fused qkv_proj and gate_up_proj; gpt_neox: query_key_value, dense, dense_h_to_4h,
    dense_4h_to_h with biases and LayerNorms.
    """
    mt = config.get("model_type")
    try:
        H = int(config["hidden_size"])
        L = int(config["num_hidden_layers"])
        nh = int(config["num_attention_heads"])
        V = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EstimateError(f"config lacks a usable {exc} field") from None
    I = int(_field(config, "intermediate_size", 4 * H))
    nkv = int(_field(config, "num_key_value_heads", nh))
    hd = int(_field(config, "head_dim", H // nh))
    tied = bool(config.get("tie_word_embeddings", mt in ("gemma", "gemma2")))
    max_pos = config.get("max_position_embeddings")
    window = config.get("sliding_window")
    if mt == "qwen2" and not config.get("use_sliding_window", False):
        window = None
    if mt in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"):
        attn_bias = bool(config.get("attention_bias", False)) or mt == "qwen2"
        o_bias = bool(config.get("attention_bias", False)) if mt in ("llama",) else False
        mlp_bias = bool(config.get("mlp_bias", False))
        linears = (
            LinearShape("q_proj", H, nh * hd, attn_bias, ATTN_IN),
            LinearShape("k_proj", H, nkv * hd, attn_bias, ATTN_IN),
            LinearShape("v_proj", H, nkv * hd, attn_bias, ATTN_IN),
            LinearShape("o_proj", nh * hd, H, o_bias, ATTN_OUT),
            LinearShape("gate_proj", H, I, mlp_bias, MLP_IN),
            LinearShape("up_proj", H, I, mlp_bias, MLP_IN),
            LinearShape("down_proj", I, H, mlp_bias, MLP_ACT),
        )
        norms = 4 if mt == "gemma2" else 2
        extra = 2 * hd if mt == "qwen3" else 0
        return ModelShape(mt, H, I, L, nh, nkv, hd, V, tied, max_pos, linears, norms, False, extra, True,
                          window, config.get("final_logit_softcapping"))
    if mt == "phi3":
        linears = (
            LinearShape("qkv_proj", H, (nh + 2 * nkv) * hd, False, ATTN_IN),
            LinearShape("o_proj", nh * hd, H, False, ATTN_OUT),
            LinearShape("gate_up_proj", H, 2 * I, False, MLP_IN),
            LinearShape("down_proj", I, H, False, MLP_ACT),
        )
        return ModelShape(mt, H, I, L, nh, nkv, hd, V, tied, max_pos, linears, 2, False, 0, True, window)
    if mt == "gpt_neox":
        linears = (
            LinearShape("query_key_value", H, 3 * H, True, ATTN_IN),
            LinearShape("dense", H, H, True, ATTN_OUT),
            LinearShape("dense_h_to_4h", H, I, True, MLP_IN),
            LinearShape("dense_4h_to_h", I, H, True, MLP_ACT),
        )
        return ModelShape(mt, H, I, L, nh, nh, hd, V, tied, max_pos, linears, 2, True, 0, False, None)
    raise EstimateError(
        f"the estimator has no shape model for model_type {mt!r} "
        "(known: llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt_neox)")

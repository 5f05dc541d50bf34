"""The estimator per recipe: what each recipe and driver changes (its profile), the breakdown grouped
into components for every recipe, driver and checkpointing, TRL's fused loss by hand, and the ladder
hf-kbit -> hf-trl -> hf-liger -> unsloth read off the components."""

from __future__ import annotations

import pytest

from bench.analysis import estimate as E
from bench.analysis.estimate import formulas as F
from bench.analysis.estimate.recipes import ATTACHED_BY_TRL, FP32_UPCAST, LIGER, LIGER_MODEL_TYPES
from bench.config.models import SHIPPED
from bench.config.recipes import DRIVERS, RECIPES

LLAMA8 = SHIPPED["llama-3.1-8b"].config_dict()


def test_recipe_tables_name_known_recipes():
    for table in (ATTACHED_BY_TRL, FP32_UPCAST, LIGER):
        assert set(table) <= set(RECIPES)
    from bench.run.recipes import MODULES  # what the runner loads each recipe with

    assert set(ATTACHED_BY_TRL) == {name for name, (module, _) in MODULES.items() if module == "hf_trl"}


@pytest.mark.parametrize("recipe, driver, dtype, expected", [
    ("hf-kbit", "loop", "bfloat16", dict(fp32_upcast=True, lora_param_bytes=4, loss="full_logits", quantized=True)),
    # Through SFTTrainer a 4-bit model's adapters are cast to bf16 and the loss is TRL's fused head.
    ("hf-kbit", "trainer", "bfloat16", dict(fp32_upcast=True, lora_param_bytes=2, loss="trl_chunked")),
    ("hf-trl", "trainer", "bfloat16", dict(fp32_upcast=False, lora_param_bytes=2, loss="trl_chunked")),
    ("hf-trl", "loop", "bfloat16", dict(lora_param_bytes=2, loss="full_logits")),  # cast at load by TRL
    ("hf-trl", "trainer", "float16", dict(lora_param_bytes=4)),  # re-cast to fp32 for the gradient scaler
    ("hf-liger", "trainer", "bfloat16", dict(liger=True, lora_param_bytes=2, loss="trl_chunked")),
    ("hf-lora16", "trainer", "bfloat16", dict(quantized=False, lora_param_bytes=4, loss="trl_chunked")),
    ("unsloth", "trainer", "bfloat16", dict(family="unsloth", lora_param_bytes=4, loss="unsloth_fused")),
    ("unsloth-lora16", "loop", "float16", dict(quantized=False, lora_param_bytes=4, loss="unsloth_fused")),
])
def test_recipe_profiles(recipe, driver, dtype, expected):
    p = E.recipe_profile(recipe, driver, dtype, "llama")
    for name, value in expected.items():
        assert getattr(p, name) == value, name


def test_liger_only_where_liger_has_kernels():
    assert "gpt_neox" not in LIGER_MODEL_TYPES
    p = E.recipe_profile("hf-liger", "trainer", "bfloat16", "gpt_neox")
    assert not p.liger and "predicted as hf-trl" in p.notes[0]
    pythia = SHIPPED["pythia-1b"].config_dict()
    assert E.estimate_recipe(pythia, "hf-liger", 1024, 1).total_bytes == E.estimate_recipe(
        pythia, "hf-trl", 1024, 1).total_bytes


@pytest.mark.parametrize("name", ["llama-3.1-8b", "phi-3-mini", "pythia-1b", "gemma-2-9b"])
def test_every_term_has_a_component(name):
    cfg = SHIPPED[name].config_dict()
    for recipe in RECIPES:
        for driver in DRIVERS:
            for gc in ("auto", "none", "standard"):
                for dtype in ("bfloat16", "float16"):
                    e = E.estimate_recipe(cfg, recipe, 2048, 2, driver=driver, gradient_checkpointing=gc, dtype=dtype)
                    parts = E.breakdown_by_component(e)
                    assert list(parts) == list(E.COMPONENTS)
                    assert sum(parts.values()) == e.total_bytes


def test_trl_chunked_loss_by_hand():
    shape = E.model_shape(LLAMA8)
    n, H = 4095, 4096
    # bf16 hidden states and lm_head: the gathered hidden states and the gradient returned (2 x 2 B),
    # the fp32 accumulator (4 B) per token and hidden unit; one 4096 x 32768 bf16 tile; 12 B per token.
    expected = 2 * F.granule(2 * n * H) + F.granule(4 * n * H) + F.granule(2 * 4095 * 32768) + 3 * F.granule(4 * n)
    assert F.trl_chunked_loss_bytes(shape, n, 2, 2, 2) == expected
    # hf-kbit's fp32 hidden states and lm_head: no returned copy (.to is a no-op), one bf16 chunk of
    # each instead.
    upcast = F.trl_chunked_loss_bytes(shape, 8192, 2, 4, 4)
    assert upcast == (2 * F.granule(4 * 8192 * H) + F.granule(2 * 4096 * 32768) + F.granule(2 * 4096 * H)
                      + F.granule(2 * 32768 * H) + 3 * F.granule(4 * 8192))


def test_ladder_components_say_where_the_difference_comes_from():
    """hf-kbit (the classic recipe) -> hf-trl -> hf-liger -> unsloth at 8B, batch 2 x 2048: each step
    needs less, and the step from hf-kbit to hf-trl is the fp32 upcast and the full logits."""
    ladder = [E.estimate_recipe(LLAMA8, "hf-kbit", 2048, 2, driver="loop")] + [
        E.estimate_recipe(LLAMA8, r, 2048, 2) for r in ("hf-trl", "hf-liger", "unsloth")]
    totals = [e.total_bytes for e in ladder]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    kbit, trl = (E.breakdown_by_component(e) for e in ladder[:2])
    saved = kbit["fp32_upcasts"] + kbit["logits_and_loss"] - trl["fp32_upcasts"] - trl["logits_and_loss"]
    assert saved > 0.7 * (ladder[0].total_bytes - ladder[1].total_bytes)
    assert trl["weights"] == kbit["weights"]  # same NF4 weights: the recipe, not the quantisation, differs

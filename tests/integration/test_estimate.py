"""The VRAM estimator: shapes against transformers, byte counts against real bitsandbytes objects, the
HF recipes' activation coefficients against what a real decoder layer saves, and the predictions
against every measured GPU cell committed under reports/results (the accuracy target)."""

from __future__ import annotations

import json
import math

import pytest

from bench.config.tiers import TIERS
from bench.analysis import estimate as E
from bench.analysis.calibration import calibrated, calibration_from_records
from bench.analysis.estimate import formulas as F
from bench.config.models import SHIPPED, resolve_model
from bench.config.recipes import DEFAULT_RECIPES, RECIPES
from bench.run.checkpoint import parameter_counts
from bench.schema.store import load
from bench.units import GiB, MiB
from tests.helpers import run_bench

CFG = {name: m.config_dict() for name, m in SHIPPED.items()}
LLAMA8 = CFG["llama-3.1-8b"]


# -- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shapes_match_transformers_parameter_counts(name):
    shape = E.model_shape(CFG[name])
    counts = parameter_counts(CFG[name])  # meta-device instance of the real transformers class
    assert shape.total_params == counts["total"]
    assert shape.matmul_params == counts["matmul"]


def test_lora_parameter_count_by_hand():
    # Llama-3.1-8B, r=16 on all seven projections: per layer 16 * (4096+4096 + 2*(4096+1024) + 4096+4096
    # + 2*(4096+14336) + 14336+4096) = 1,310,720; 32 layers.
    assert E.model_shape(LLAMA8).lora_params(16, None) == 32 * 1_310_720 == 41_943_040
    tiny = E.model_shape(CFG["tiny-llama"])
    assert tiny.lora_params(16, ["q_proj", "v_proj"]) == 2 * 16 * ((64 + 64) + (64 + 32))
    with pytest.raises(E.EstimateError, match="not projections"):
        tiny.lora_params(16, ["qkv_proj"])


def test_lora_counts_match_measured_trainable_parameters(gpu_results_files):
    records = [r for r in load(gpu_results_files, allow_empty=True) if r.trainable_params]
    if not records:
        pytest.skip("no committed GPU results")
    for r in records:
        shape = E.model_shape(resolve_model(r.model).config)
        assert shape.lora_params(r.lora_r, r.target_modules) == r.trainable_params, r.cell_id


# -- byte counts against the real libraries -------------------------------------------------------


def test_nf4_bytes_by_hand():
    n = 4096 * 4096
    # packed 4-bit: n/2; absmax uint8 per 64: n/64; fp32 scale per 256 absmax; offset and nf4 code
    # tables each one 512 B allocator block.
    expected = n // 2 + n // 64 + (n // 64 // 256) * 4 + 512 + 512
    assert F.nf4_tensor_bytes(n) == expected == 8_655_872
    assert F.nf4_tensor_bytes(n, double_quant=False) == n // 2 + (n // 64) * 4 + 512


@pytest.mark.parametrize("numel", [64 * 4096, 300 * 256 * 64 + 64, 1000 * 64 + 7])
def test_nf4_bytes_match_real_bitsandbytes_quant_state(numel):
    torch = pytest.importorskip("torch")
    from bitsandbytes.functional import quantize_4bit

    packed, state = quantize_4bit(torch.randn(numel, dtype=torch.bfloat16), blocksize=64, compress_statistics=True,
                                  quant_type="nf4")
    assert state.blocksize == F.NF4_BLOCKSIZE and state.state2.blocksize == F.NF4_NESTED_BLOCKSIZE
    pieces = [packed, state.absmax, state.state2.absmax, state.offset.reshape(1), state.code]
    real = sum(F.granule(t.numel() * t.element_size()) for t in pieces)  # state2.code is shared: not counted
    assert F.nf4_tensor_bytes(numel) == real


def test_optimizer_state_bytes_match_real_bitsandbytes_and_torch():
    torch = pytest.importorskip("torch")
    import bitsandbytes as bnb

    sizes = [16 * 64, 16 * 4096, 4096 * 16, 14336 * 16]  # the first is under min_8bit_size: fp32 states
    for name, cls in (("adamw_8bit", bnb.optim.AdamW8bit), ("adamw_torch", torch.optim.AdamW)):
        params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
        opt = cls(params, lr=1e-3)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        real = 0
        for p in params:
            for key, t in opt.state[p].items():
                if torch.is_tensor(t) and t.numel() > 1 and not key.startswith("qmap"):  # qmaps are shared
                    real += F.granule(t.numel() * t.element_size())
        assert F.optimizer_state_bytes(sizes, name) == real, name


def test_unquantized_weights_16bit_and_the_fp32_upcast_on_top():
    shape = E.model_shape(LLAMA8)
    # embed_tokens + untied lm_head = 2 * 128256 * 4096; norms 65 * 4096.
    params = 2 * 128256 * 4096 + 65 * 4096
    assert shape.unquantized_params == params
    assert F.unquantized_weight_bytes(shape, 2) == 2 * params
    assert F.fp32_upcast_bytes(shape, 2) == 2 * params  # hf-kbit: 4 B each in all
    assert F.fp32_upcast_bytes(shape, 4) == 0


def test_unsloth_ce_rows_follow_fused_linear_rows():
    # n*H/V = 65.4 -> 64, raised to the floor pow2(512*151936/128256) = 512.
    assert F.unsloth_ce_rows(2048, 4096, 128256) == 512
    assert F.unsloth_ce_rows(32768, 4096, 128256) == 1024
    assert F.unsloth_ce_rows(300, 4096, 128256) == 300  # never more rows than tokens
    assert F.unsloth_ce_rows(10**6, 4096, 128256) == 4096  # _MAX_ROWS
    assert F.unsloth_ce_rows(10**6, 3584, 256000) == 2097  # capped at 2 GiB / (256000 * 4 B) rows


#: (variant, what it does to the model, expected bytes per token beyond the formula when not
#: checkpointed: the layer input where the layer's first op saves it, under the fp32 upcast)
LAYER_VARIANTS = {
    "hf-kbit": dict(quantize=True, prepare=True, lora_bf16=False),
    "hf-trl": dict(quantize=True, prepare=False, lora_bf16=True),  # TRL's cast of a 4-bit model's adapters
    "hf-lora16": dict(quantize=False, prepare=False, lora_bf16=False),
}


@pytest.mark.parametrize("variant", sorted(LAYER_VARIANTS))
def test_hf_layer_coefficients_match_saved_tensors(tmp_path, variant):
    """Bytes a real transformers + peft (+ bitsandbytes NF4) decoder layer saves for backward under
    bf16 autocast, per token, equal `hf_layer_activation_bytes_per_token` for the recipe's casts (plus
    the fp32 layer input, 4H, under hf-kbit's upcast, where the first norm saves it itself); with
    gradient checkpointing, only the layer input (4H upcast, 2H in bf16). Measured as the slope over
    sequence length of the difference between a 2-layer and a 1-layer model, so constant tensors
    (LoRA weight casts, the lm_head weight copy, the rotary tables) cancel."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    how = LAYER_VARIANTS[variant]
    cfg = dict(hidden_size=256, intermediate_size=768, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
               vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=False)
    seqs = (64, 192)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    def load(layers: int, gc: bool):
        config = AutoConfig.for_model("llama", num_hidden_layers=layers, **cfg)
        path = tmp_path / f"l{layers}"
        if not path.exists():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(path)
        kw = {}
        if how["quantize"]:
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map={"": "cpu"},
                                                     attn_implementation="sdpa", **kw)
        model.config.use_cache = False
        if how["prepare"]:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
        if how["lora_bf16"]:
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        if gc and not how["prepare"]:  # as transformers' Trainer enables it for TRL's recipes
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        return model

    def saved_bytes(layers: int) -> dict[tuple[bool, int], int]:
        out = {}
        for gc in (True, False):
            model = load(layers, gc)
            for seq in seqs:
                seen, total = set(), 0

                def pack(t):
                    nonlocal total
                    key = t.untyped_storage().data_ptr()
                    if key not in seen:
                        seen.add(key)
                        total += t.untyped_storage().nbytes()
                    return t

                ids = torch.randint(0, 512, (1, seq))
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(input_ids=ids, labels=ids)
                out[(gc, seq)] = total
        return out

    one, two = saved_bytes(1), saved_bytes(2)
    shape = E.model_shape(dict(cfg, model_type="llama", num_hidden_layers=1))
    resid = 4 if how["prepare"] else 2
    formula = F.hf_layer_activation_bytes_per_token(shape, 16, None, compute_bytes=2, residual_bytes=resid,
                                                    lora_param_bytes=2 if how["lora_bf16"] else 4)
    layer_input = resid * 256
    for gc, expected in ((False, formula + (layer_input if how["prepare"] else 0)), (True, layer_input)):
        per_layer = {s: two[(gc, s)] - one[(gc, s)] for s in seqs}
        slope = (per_layer[seqs[1]] - per_layer[seqs[0]]) / (seqs[1] - seqs[0])
        assert slope == pytest.approx(expected, rel=0.01), (variant, gc, slope, expected)


# -- properties of the estimate -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.2-1b", "phi-3-mini", "pythia-1b", "gemma-2-9b"])
@pytest.mark.parametrize("recipe", [*RECIPES, "hf"])  # "hf": a library family, read as hf-kbit with the loop
def test_estimate_grows_with_tokens_and_breakdown_sums(name, recipe):
    # From 1024 tokens up: below, Unsloth keeps small hidden states on the GPU instead of offloading
    # them (under 2 MiB, or seq < 512), which is cheaper or dearer depending on the model.
    previous = 0
    for seq in [s for s in (1024, 2048, 4096, 8192) if s <= CFG[name]["max_position_embeddings"]]:
        e = E.estimate(CFG[name], recipe, seq, 1)
        assert sum(e.breakdown.values()) == e.total_bytes
        assert sum(E.breakdown_by_component(e).values()) == e.total_bytes
        assert e.total_bytes > previous
        assert e.peak_allocated_bytes == e.phases[e.peak_phase] == max(e.phases.values())
        previous = e.total_bytes
    assert E.estimate(CFG[name], recipe, 1024, 2).total_bytes > E.estimate(CFG[name], recipe, 1024, 1).total_bytes


def test_recipes_differ_where_the_libraries_differ():
    kbit = E.estimate_recipe(LLAMA8, "hf-kbit", 2048, 1, driver="loop")
    assert E.estimate(LLAMA8, "hf", 2048, 1) == kbit  # how version-1 records are read
    un = E.estimate_recipe(LLAMA8, "unsloth", 2048, 1)
    assert kbit.breakdown["weights_nf4"] == un.breakdown["weights_nf4"]
    assert kbit.breakdown["weights_unquantized"] == un.breakdown["weights_unquantized"]
    assert kbit.breakdown["fp32_upcast_weights"] == kbit.breakdown["weights_unquantized"]  # peft's fp32 upcast
    assert "fp32_upcast_weights" not in un.breakdown
    assert "logits_and_loss" in kbit.breakdown and kbit.peak_phase == "loss"  # fp32 logits dominate
    # 12 B per logit: fp32 log-softmax, its gradient and the input gradient.
    assert kbit.breakdown["logits_and_loss"] == F.granule(12 * 2048 * 128256)
    assert un.total_bytes < kbit.total_bytes

    # TRL's recipe: nothing upcast, bf16 adapters, the fused LM head instead of full logits.
    trl = E.estimate_recipe(LLAMA8, "hf-trl", 2048, 1)
    assert "fp32_upcast_weights" not in trl.breakdown and trl.driver == "trainer"
    assert trl.phases["loss"] < trl.phases["layer"] == trl.peak_allocated_bytes
    lora = E.model_shape(LLAMA8).lora_tensors(16, None)
    assert trl.breakdown["lora_weights"] == F.lora_bytes(lora, 2) == kbit.breakdown["lora_weights"] // 2
    labels = 2047  # TRL's fused head scores every token but the row's last
    assert trl.phases["loss"] - trl.persistent_bytes - trl.breakdown["checkpointed_layer_inputs"] == \
        F.trl_chunked_loss_bytes(E.model_shape(LLAMA8), labels, 2, 2, 2) < F.granule(12 * 2048 * 128256) // 10
    assert trl.total_bytes < kbit.total_bytes
    # ... also through the loop driver the upcast and fp32 adapters are what hf-kbit adds.
    trl_loop = E.estimate_recipe(LLAMA8, "hf-trl", 2048, 1, driver="loop")
    assert trl_loop.breakdown["logits_and_loss"] == kbit.breakdown["logits_and_loss"]
    assert trl_loop.total_bytes < kbit.total_bytes
    # fp16 (T4): the suite casts TRL's bf16 adapters back to fp32, and says so.
    fp16 = E.estimate_recipe(LLAMA8, "hf-trl", 2048, 1, dtype="float16")
    assert fp16.breakdown["lora_weights"] == F.lora_bytes(lora, 4) and any("trl#4901" in n for n in fp16.notes)

    # Liger keeps less per layer; 16-bit LoRA holds 16-bit decoder weights and no dequantised buffer.
    liger = E.estimate_recipe(LLAMA8, "hf-liger", 2048, 1)
    assert liger.breakdown["layer_activations"] < trl.breakdown["layer_activations"]
    lora16 = E.estimate_recipe(LLAMA8, "hf-lora16", 2048, 1)
    assert "weights_nf4" not in lora16.breakdown and "dequant_buffer" not in lora16.breakdown
    assert lora16.breakdown["weights_16bit"] == 2 * E.model_shape(LLAMA8).quantized_params
    un16 = E.estimate_recipe(LLAMA8, "unsloth-lora16", 2048, 1)
    assert un16.breakdown["weights_16bit"] == lora16.breakdown["weights_16bit"] and un16.total_bytes > un.total_bytes


def test_checkpointing_modes_order():
    none = E.estimate(LLAMA8, "hf", 2048, 1, gradient_checkpointing="none").total_bytes
    std = E.estimate(LLAMA8, "hf", 2048, 1).total_bytes
    assert none > std
    for recipe in ("hf-trl", "hf-liger", "hf-lora16"):
        assert E.estimate(LLAMA8, recipe, 2048, 1, gradient_checkpointing="none").total_bytes > \
            E.estimate(LLAMA8, recipe, 2048, 1).total_bytes
    offl = E.estimate(LLAMA8, "unsloth", 8192, 1).total_bytes
    plain = E.estimate(LLAMA8, "unsloth", 8192, 1, gradient_checkpointing="standard").total_bytes
    assert plain > offl
    # Unsloth turns its offloaded checkpointing into plain checkpointing below seq 512.
    assert E.estimate(LLAMA8, "unsloth", 256, 1).gradient_checkpointing == "standard"
    for recipe in ("hf", "hf-trl"):
        with pytest.raises(E.EstimateError, match="only in Unsloth's recipes"):
            E.estimate(LLAMA8, recipe, 1024, 1, gradient_checkpointing="unsloth")


def test_max_fit_is_the_boundary_of_the_verdict():
    usable = 15 * GiB
    for recipe in ("hf", "hf-trl", "hf-kbit", "unsloth"):
        s = E.max_fit_seq_len(LLAMA8, recipe, 1, usable, multiple_of=64)
        assert E.estimate(LLAMA8, recipe, s, 1).total_bytes <= usable < E.estimate(LLAMA8, recipe, s + 64, 1).total_bytes
        b = E.max_fit_batch_size(LLAMA8, recipe, 1024, usable)
        assert E.estimate(LLAMA8, recipe, 1024, b).total_bytes <= usable < E.estimate(LLAMA8, recipe, 1024, b + 1).total_bytes
    assert E.max_fit_seq_len(LLAMA8, "hf", 1, 4 * GiB) is None  # the weights alone do not fit
    assert E.max_fit_seq_len(LLAMA8, "hf-lora16", 1, 15 * GiB) is None  # 16-bit weights alone: 15 GiB
    assert E.max_fit_seq_len(CFG["tiny-llama"], "hf", 1, 15 * GiB) == 1024  # capped at max positions


def test_bad_requests_raise():
    for kwargs in ({"seq_len": 0, "batch_size": 1}, {"seq_len": 1024, "batch_size": -1},
                   {"seq_len": 200_000, "batch_size": 1}):
        with pytest.raises(E.EstimateError):
            E.estimate(LLAMA8, "hf", **kwargs)
    with pytest.raises(E.EstimateError, match="unknown backend"):
        E.estimate(LLAMA8, "vllm", 1024, 1)
    with pytest.raises(E.EstimateError, match="unknown recipe"):
        E.estimate_recipe(LLAMA8, "hf", 1024, 1)  # a family is not a recipe
    with pytest.raises(E.EstimateError, match="unknown driver"):
        E.estimate_recipe(LLAMA8, "hf-trl", 1024, 1, driver="accelerate")
    with pytest.raises(E.EstimateError, match="no shape model"):
        E.model_shape({"model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
                       "vocab_size": 8})


# -- against the measured cells -------------------------------------------------------------------


def _gpu_records(files):
    return [r for r in load(files, allow_empty=True) if r.peak_device_bytes is not None]


def test_every_measured_cell_within_the_target(gpu_results_files):
    """|predicted - measured peak_device_bytes| <= max(10 % of measured, 0.5 GiB) on every ok GPU cell."""
    records = _gpu_records(gpu_results_files)
    rows, skipped = E.validate_records(records, lambda m: resolve_model(m).config)
    if not rows:
        pytest.skip("no committed GPU results")
    misses = [f"{r.cell_id}: predicted {r.predicted_bytes / GiB:.2f}, measured {r.measured_bytes / GiB:.2f} GiB"
              for r in rows if not r.within]
    assert not misses, misses
    assert {"hf-kbit", "unsloth"} <= {r.recipe for r in rows}  # version-1 records read as these recipes
    assert not skipped, skipped


def test_fit_verdicts_agree_with_measured_outcomes(gpu_results_files):
    verdicts = E.fit_verdicts(_gpu_records(gpu_results_files), lambda m: resolve_model(m).config)
    if not verdicts:
        pytest.skip("no committed GPU results")
    # Near the tier's memory (within the accuracy target) either verdict is within the stated error.
    wrong = [v for v in verdicts if not v["agree"] and not v["near_limit"]]
    assert not wrong, wrong


def test_calibrated_constants_agree_with_the_records(gpu_results_files):
    records = _gpu_records(gpu_results_files)
    if not records:
        pytest.skip("no committed GPU results")
    cal = calibration_from_records(records, E.calibration_predictor(lambda m: resolve_model(m).config))["measured"]
    used = calibrated()
    hopper = [r for r in records if E.compute_capability_of(r.env.get("gpu_name")) == (9, 0)]
    if hopper:
        hf_outside = used.non_torch_bytes_by_compute_capability["9.0"]
        assert abs(cal["non_torch_bytes_by_compute_capability"]["9.0"] - hf_outside) <= 48 * MiB
        assert abs(cal["non_torch_bytes_by_compute_capability"]["9.0"] + cal["unsloth_extra_non_torch_bytes"]
                   - hf_outside - used.unsloth_extra_non_torch_bytes) <= 48 * MiB
    for backend, value in cal["allocator_slack_of_transient"].items():
        assert abs(value - used.allocator_slack_of_transient[backend]) <= 0.02, backend
        assert abs(cal["allocator_slack_base_bytes"][backend] - used.allocator_slack_base_bytes[backend]) <= 64 * MiB


# -- the command line -----------------------------------------------------------------------------


def test_cli_json_has_one_object_per_recipe_with_verdict_and_components():
    proc = run_bench("estimate", "--model", "llama-3.1-8b", "--gpu-tier", "t4", "--seq-len", "1024", "--batch-size",
                     "1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [d["recipe"] for d in data] == list(DEFAULT_RECIPES) and {d["driver"] for d in data} == {"trainer"}
    for d in data:
        assert sum(d["breakdown"].values()) == d["total_bytes"] == sum(d["components"].values())
        assert list(d["components"]) == list(E.COMPONENTS)
        assert d["usable_bytes"] == TIERS["t4"].memory_cap_bytes and d["fits"] is (d["total_bytes"] <= d["usable_bytes"])
        assert d["margin_bytes"] == d["usable_bytes"] - d["total_bytes"] and d["dtype"] == "float16"
        assert d["total_bytes"] == E.estimate_recipe(LLAMA8, d["recipe"], 1024, 1, dtype="float16",
                                                     compute_capability=(7, 5)).total_bytes


def test_cli_backend_reads_as_the_recipe_of_version_1_records():
    proc = run_bench("estimate", "--model", "llama-3.1-8b", "--gpu-tier", "t4", "--backend", "hf,unsloth",
                     "--seq-len", "1024", "--batch-size", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(d["recipe"], d["backend"], d["driver"]) for d in data] == [("hf-kbit", "hf", "loop"),
                                                                      ("unsloth", "unsloth", "loop")]
    assert data[0]["total_bytes"] == E.estimate(LLAMA8, "hf", 1024, 1, dtype="float16",
                                                compute_capability=(7, 5)).total_bytes


def test_cli_max_fit_and_table():
    proc = run_bench("estimate", "--model", "llama-3.1-8b", "--gpu-tier", "t4", "--max-fit", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {(r["recipe"], r["kind"]): r for r in json.loads(proc.stdout)}
    assert {r for r, _ in rows} == set(DEFAULT_RECIPES)
    seq = rows[("unsloth", "max_seq_len")]["max_seq_len"]
    assert seq == E.max_fit_seq_len(LLAMA8, "unsloth", 1, TIERS["t4"].memory_cap_bytes, multiple_of=64, dtype="float16",
                                    compute_capability=(7, 5))
    assert rows[("hf-kbit", "max_seq_len")]["max_seq_len"] < rows[("hf-trl", "max_seq_len")]["max_seq_len"] < seq
    table = run_bench("estimate", "--gpu-tier", "a10g", "--seq-len", "2048,4096", "--recipe", "hf-kbit",
                      "--driver", "loop")
    assert table.returncode == 0 and "breakdown at the peak" in table.stdout and "logits_and_loss" in table.stdout
    assert "fp32_upcasts" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model", "--gpu-tier", "t4"], "unknown model"),
    (["--gpu-tier", "t5"], "unknown GPU tier"),
    (["--gpu-tier", "t4", "--seq-len", "0"], "must be > 0"),
    (["--gpu-tier", "t4", "--batch-size", "-2"], "must be > 0"),
    (["--gpu-tier", "t4", "--seq-len", "300000"], "positions"),
    (["--gpu-tier", "t4", "--dtype", "bfloat16"], "has no bf16"),
    (["--gpu-tier", "t4", "--optimizer", "sgd"], "unknown optimizer"),
    (["--gpu-tier", "t4", "--seq-len", "abc"], "not a whole number"),
    (["--gpu-tier", "t4", "--recipe", "hf-fast"], "unknown recipe"),
    (["--gpu-tier", "t4", "--backend", "vllm"], "unknown backend"),
    (["--gpu-tier", "t4", "--recipe", "hf-trl", "--backend", "hf"], "not both"),
    (["--gpu-tier", "t4", "--driver", "accelerate"], "unknown driver"),
    (["--gpu-tier", "t4", "--recipe", "hf-trl", "--gradient-checkpointing", "unsloth"], "only in Unsloth's"),
])
def test_cli_bad_input_exits_2(args, message):
    proc = run_bench("estimate", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_nothing_fits_is_a_verdict_exit_1_not_bad_input(tmp_path):
    huge = dict(LLAMA8, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)
    (tmp_path / "llama-70b.json").write_text(json.dumps(huge))
    proc = run_bench("estimate", "--model", str(tmp_path / "llama-70b.json"), "--gpu-tier", "t4", "--max-fit")
    assert proc.returncode == 1 and "nothing fits" in proc.stderr
    proc = run_bench("estimate", "--gpu-tier", "t4", "--seq-len", "8192", "--batch-size", "64")
    assert proc.returncode == 1 and "nothing fits" in proc.stderr and "recipe" in proc.stdout


def test_cli_validate_writes_the_report(gpu_results_files, tmp_path):
    if not _gpu_records(gpu_results_files):
        pytest.skip("no committed GPU results")
    out = tmp_path / "estimator.md"
    files = list(map(str, gpu_results_files))
    proc = run_bench("estimate", "--validate", *files[1:], "--validate-on", files[0], "--hold-out", "seq_len>=30000",
                     "--out", str(out), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert text.startswith("# VRAM estimator: calibrated on one set, validated on another")
    assert f"`bench estimate --validate {' '.join(files[1:])} --validate-on {files[0]} --hold-out seq_len>=30000`" in text
    assert "| set | recipe | cells | within bound | median abs error % |" in text and "**NO**" not in text
    assert "| held-out | **unsloth (all)** |" in text and "| in-sample | **hf (all)** |" in text
    assert "| hf-kbit | loop | llama-3.1-8b |" in text  # version-1 records: hf-kbit / unsloth, loop driver
    assert "## Predictions that err low" in text and "- not covered: 3 architectures (measured 1: llama)" in text
    assert "## Cells left out" in text and "out of memory" in text and "pinned by the emulated cap" in text
    assert "## Recipes without measured cells" in text and "`hf-trl`" in text
    assert "errs low (unsafe side): held-out:" in proc.stdout and "not covered:" in proc.stdout
    payload = json.loads(run_bench("estimate", "--validate", *files[1:], "--validate-on", files[0], "--json").stdout)
    assert payload["held_out"] and payload["in_sample"] and payload["left_out_counts"]["oom"] >= 1
    assert {c["cell_id"] for c in payload["held_out"]}.isdisjoint(c["cell_id"] for c in payload["in_sample"])
    assert run_bench("estimate", "--validate").returncode == 2
    bad = run_bench("estimate", "--validate", *files, "--hold-out", "colour=red")
    assert bad.returncode == 2 and "unknown key" in bad.stderr
    one_family = run_bench("estimate", "--validate", *files, "--hold-out", "recipe=unsloth")
    assert one_family.returncode == 2 and "cannot calibrate" in one_family.stderr
    assert run_bench("estimate", "--hold-out", "tier=t4", "--gpu-tier", "t4").returncode == 2


def test_error_bound():
    assert E.error_bound_bytes(2 * GiB) == 0.5 * GiB
    assert E.error_bound_bytes(20 * GiB) == 2 * GiB
    assert E.error_bound_bytes(5 * GiB) == 0.5 * GiB
    assert math.isclose(E.error_bound_bytes(6 * GiB), 0.6 * GiB, abs_tol=1)

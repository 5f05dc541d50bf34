"""kernels_check on CPU: the pattern table against names read from the installed libraries, the
classification and coverage math, trace extraction from a real profiler export, the static check
on a real tiny HF + peft + bitsandbytes model, the worker and CLI failure paths as subprocesses,
and (once committed) the GPU trace fixtures written by scripts/gpu/kernels.sh."""

from __future__ import annotations

import ast
import functools
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench.analysis.fallback import model_pairs
from bench.config.recipes import get_recipe
from bench.config.models import SHIPPED, TARGET_MODULES, resolve_model
from bench.run.checkpoint import ensure_synthetic_checkpoint
from bench.config.tiers import get_tier, plan_tier
from bench.render.kernels import benchmark_markdown, coverage_markdown
from bench.run.drivers import TrainSpec
from bench.run.drivers.loop import train_loop
from bench.run.recipes import RecipeSettings, load_recipe
from bench.run.kernels import CheckOptions, make_job, result_stem, run_worker
from bench.schema.record import SCHEMA_VERSION, ResultRecord
from kernels_check import format_fast_paths, static_fast_paths, summarize_fast_paths
from kernels_check.benchmarks import load_benchmark, parse_pytest_log
from kernels_check.classify import (UNSLOTH_KERNEL_PATHS, KernelStat, classify, compare_static_trace,
                                    count_kernel_paths, count_unsloth_paths, kernel_origin, merge_fast_paths,
                                    trace_fast_paths)
from kernels_check.heuristic import (LIKELY_FAST, NO_DATA, SUSPECT, f2_verdict, heuristic_vs_trace,
                                    summarize_pairs)
from kernels_check.patterns import PatternError, load_patterns, match_kernel, parse_patterns
from kernels_check.result import RESULT_FORMAT, analyse, load_results
from tests.helpers import REPO
from kernels_check.static import expected_fast_paths, inspect_model, parse_unsloth_log
from kernels_check.trace import (TraceError, aggregate, kernel_stats, kernels_from_document, load_kernels,
                                 make_excerpt, profile_last_step, profile_step, trace_events)

FIXTURES = REPO / "tests" / "fixtures" / "kernels"
PATTERNS_JSON = REPO / "kernels_check" / "kernel_patterns.json"


def _env():
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "PYTHONPATH": str(REPO)})
    return env


def run_bench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


# -- the pattern table ----------------------------------------------------------------------------
def test_every_example_classifies_to_its_own_entry():
    """No entry is shadowed by an earlier one: each example name lands on the entry that lists it."""
    patterns = load_patterns()
    assert len(patterns) > 20
    for p in patterns:
        assert p.examples, f"{p.id} has no example kernel name"
        assert p.source, f"{p.id} does not say where its names come from"
        for name in p.examples:
            hit = match_kernel(name, patterns)
            assert hit is not None and hit.id == p.id, f"{name!r}: expected {p.id}, got {hit and hit.id}"


@pytest.mark.parametrize("broken, message", [
    ({"patterns": []}, "no 'patterns'"),
    ({"patterns": [{"id": "a", "regex": "x", "origin": "nvidia", "fast_path": "norm", "source": "s"}]}, "origin"),
    ({"patterns": [{"id": "a", "regex": "x", "origin": "aten", "fast_path": "vibes", "source": "s"}]}, "fast path"),
    ({"patterns": [{"id": "a", "regex": "(", "origin": "aten", "fast_path": "norm", "source": "s"}]}, "regex"),
    ({"patterns": [{"id": "a", "regex": "x", "origin": "aten", "fast_path": "norm", "source": "s"}] * 2}, "duplicate"),
    ({"patterns": [{"id": "a", "regex": "x", "origin": "aten", "fast_path": "norm"}]}, "source"),
])
def test_bad_pattern_tables_are_refused(broken, message):
    with pytest.raises(PatternError, match=message):
        parse_patterns(broken)


def _bnb_cuda_libraries() -> list[Path]:
    spec = importlib.util.find_spec("bitsandbytes")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(list(spec.submodule_search_locations)[0]).glob("libbitsandbytes_cuda*.so"))


def test_every_bitsandbytes_cuda_kernel_is_classified_as_bitsandbytes():
    """The __global__ kernels compiled into the installed bitsandbytes CUDA library (their
    __device_stub__ symbols), as the profiler names them: none unknown, none misattributed."""
    libs = _bnb_cuda_libraries()
    if not libs:
        pytest.skip("the installed bitsandbytes ships no CUDA library")
    data = libs[-1].read_bytes()
    names = set()
    for m in re.finditer(rb"__device_stub__Z(\d+)([A-Za-z_][A-Za-z0-9_]*)", data):
        n = int(m.group(1))
        names.add(m.group(2)[:n].decode())
    assert {"kDequantizeBlockwise", "kOptimizerStatic8bit2StateBlockwise"} <= names, sorted(names)
    for name in sorted(names):
        shown = f"void {name}<__nv_bfloat16, 64, 2>(float*, unsigned char*, int)"  # demangled form
        p = match_kernel(shown)
        assert p is not None and p.origin == "bitsandbytes", f"{name}: {p and p.id}"
    assert match_kernel("void kDequantizeBlockwise<__nv_bfloat16, 512, 64, 8, 2>(float*)").fast_path == "nf4_dequant"
    assert match_kernel("void kOptimizerStatic8bit2StateBlockwise<float, 0, 256, 1>(float*)").fast_path == "optimizer"


def _unsloth_source() -> Path | None:
    for cand in (os.environ.get("QLORA_BENCH_UNSLOTH_SRC"), "/work/unsloth-src/site"):
        if cand and (Path(cand) / "unsloth" / "kernels").is_dir():
            return Path(cand)
    spec = importlib.util.find_spec("unsloth")  # locates without importing (no GPU needed)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).parent
    return None


def _launched_triton_kernels(files: list[Path]) -> dict[str, Path]:
    """@triton.jit functions (also `f = triton.jit(f)`, and functions decorated by a wrapper that returns
    `triton.jit(fn)`, as TRL 1.16's `@_jit` does) that no other jit function calls: the launched kernels."""
    trees = {f: ast.parse(f.read_text(encoding="utf-8")) for f in files}
    wrappers = {node.name for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and any(isinstance(c, ast.Call) and ast.unparse(c.func) == "triton.jit" and c.args
                        and isinstance(c.args[0], ast.Name) and c.args[0].id in {a.arg for a in node.args.args}
                        for c in ast.walk(node))}
    jit: dict[str, Path] = {}
    bodies = []
    for f, tree in trees.items():
        defs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        for node in defs.values():
            if any("triton.jit" in ast.unparse(d) or ast.unparse(d) in wrappers for d in node.decorator_list):
                jit[node.name] = f
                bodies.append(node)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) == "triton.jit" and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in defs):
                jit[node.args[0].id] = f
                if node.args[0].id in defs:
                    bodies.append(defs[node.args[0].id])
    called = set()
    for body in bodies:
        for sub in ast.walk(body):
            if isinstance(sub, ast.Call):
                fn = sub.func
                name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if name in jit and name != body.name:
                    called.add(name)
    return {n: f for n, f in jit.items() if n not in called}


def test_every_unsloth_triton_kernel_is_classified_as_unsloth():
    """Kernel names read from the installed Unsloth source: every launched @triton.jit kernel of
    unsloth/kernels and of unsloth_zoo's fused CE is attributed to origin unsloth."""
    src = _unsloth_source()
    if src is None:
        pytest.skip("Unsloth's source is not installed here (set QLORA_BENCH_UNSLOTH_SRC to its site dir)")
    files = sorted((src / "unsloth" / "kernels").rglob("*.py"))
    fused = src / "unsloth_zoo" / "fused_losses" / "fused_linear.py"
    files += [fused] if fused.is_file() else []
    launched = _launched_triton_kernels(files)
    assert len(launched) > 30
    wrong = {n: (match_kernel(n).id if match_kernel(n) else None) for n in launched
             if match_kernel(n) is None or match_kernel(n).origin != "unsloth"}
    assert not wrong, f"Unsloth kernels not attributed to unsloth: {wrong}"
    expected = {"_rms_layernorm_forward": "norm", "_rms_layernorm_backward": "norm", "_rope_embedding_QK": "rope",
                "_fg_kernel": "mlp_act", "_DWf_DW_dfg_kernel": "mlp_act", "_approx_forward_kernel": "mlp_act",
                "_nf4_dequant_kernel": "nf4_dequant", "_cross_entropy_forward": "cross_entropy",
                "_fl_forward_kernel": "cross_entropy", "_fl_backward_kernel": "cross_entropy"}
    for name, path in expected.items():
        assert name in launched, f"{name} is no longer a launched kernel in {src}"
        assert match_kernel(name).fast_path == path


def _liger_source() -> Path | None:
    """liger_kernel's ops/ directory: QLORA_BENCH_LIGER_SRC (a site dir), else the installed package (located,
    not imported: it needs triton)."""
    cand = os.environ.get("QLORA_BENCH_LIGER_SRC")
    if cand and (Path(cand) / "liger_kernel" / "ops").is_dir():
        return Path(cand) / "liger_kernel" / "ops"
    spec = importlib.util.find_spec("liger_kernel")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "ops"
    return None


#: @triton.jit functions of Liger that are inlined helpers, not launched kernels (recipes-research.md section 6).
LIGER_DEVICE_HELPERS = {"_keyed_add"}


def test_every_liger_triton_kernel_is_classified_as_liger():
    """Kernel names read from the installed Liger source (ops/, its Triton kernels; the CuTe / cuTile / Ascend
    backends are not Triton): each is attributed to origin liger, except `_jsd_kernel`, whose name TRL uses
    too, and `matmul_kernel` (experimental, the Triton tutorial's name), which stay unattributed."""
    ops = _liger_source()
    if ops is None:
        pytest.skip("Liger's source is not installed here (set QLORA_BENCH_LIGER_SRC to its site dir)")
    skip = ("cute", "cutile", "_ascend", "_cutedsl")
    files = sorted(f for f in ops.rglob("*.py") if not any(part.startswith(skip) for part in f.relative_to(ops).parts))
    launched = set(_launched_triton_kernels(files)) - LIGER_DEVICE_HELPERS
    assert len(launched) > 60
    shared = {"_jsd_kernel": "other", "matmul_kernel": None}
    wrong = {n: (match_kernel(n).origin if match_kernel(n) else None) for n in launched
             if (match_kernel(n).origin if match_kernel(n) else None) != shared.get(n, "liger")}
    assert not wrong, f"Liger kernels not attributed as expected: {wrong}"
    expected = {"_triton_rope": "rope", "_rms_norm_forward_kernel": "norm", "_rms_norm_backward_kernel": "norm",
                "_block_rms_norm_forward_kernel": "norm", "_swiglu_forward_kernel": "mlp_act",
                "_swiglu_backward_kernel": "mlp_act", "_swiglu_forward_kernel_tiled": "mlp_act",
                "liger_cross_entropy_kernel": "cross_entropy", "element_mul_kernel": "cross_entropy"}
    for name, path in expected.items():
        assert name in launched, f"{name} is no longer a launched kernel in {ops}"
        assert match_kernel(name).fast_path == path


def test_trl_loss_kernels_are_trl_not_liger():
    """The installed TRL's own Triton kernels (trl/kernels: the chunked LM-head loss every SFTTrainer run of
    an HF model launches) are origin trl on the cross-entropy path, never liger; `_jsd_kernel` is Liger's
    name too, so it is neither's."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl is not installed")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "kernels").glob("*.py"))
    launched = _launched_triton_kernels(files)
    assert {"_forward_kernel", "_backward_kernel"} <= set(launched), sorted(launched)
    for name in launched:
        hit = match_kernel(name)
        assert hit is not None and hit.fast_path == "cross_entropy", name
        assert hit.origin == ("other" if name == "_jsd_kernel" else "trl"), (name, hit.id)
    # Unsloth's GeGLU kernels share the _forward_kernel / _backward_kernel suffix: still Unsloth's
    assert match_kernel("_exact_forward_kernel").origin == "unsloth"
    assert match_kernel("_approx_backward_kernel").origin == "unsloth"


def test_inductor_kernel_categories_match_the_installed_torch():
    """Inductor names kernels triton_<category[:3]>_fused_<original aten ops>_<n>: the category
    abbreviations and the 'original_aten' naming the table relies on, read from the installed torch."""
    from torch._inductor import config
    from torch._inductor.wrapper_benchmark import _kernel_category_choices

    table = PATTERNS_JSON.read_text()
    for category in _kernel_category_choices + ["unknown"]:
        assert category[:3] in re.search(r'"\^triton_\((\w+(?:\|\w+)*)\)_"', table).group(1).split("|")
    assert config.triton.descriptive_names == "original_aten"
    assert match_kernel("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0").fast_path == "norm"
    assert match_kernel("triton_poi_fused_mul_silu_3").fast_path == "mlp_act"
    assert match_kernel("triton_poi_fused_add_cat_mul_neg_slice_2").fast_path == "rope"
    assert match_kernel("triton_poi_fused_add_mul_1").fast_path == "other"


# -- classification -------------------------------------------------------------------------------
def _k(name, us, count=1):
    return KernelStat(name, float(us), count)


LLAMA_LIKE = [
    _k("_rms_layernorm_forward", 30), _k("_rms_layernorm_backward", 50), _k("_rope_embedding_QK", 40),
    _k("_fg_kernel", 20), _k("triton_poi_fused__to_copy_add_mul_rsub_sigmoid_6", 60),
    _k("_nf4_dequant_kernel", 100), _k("_fl_forward_kernel", 70),
    _k("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 500),
    _k("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64> >(Flash_fwd_params)", 80),
    _k("void kOptimizerStatic8bit2StateBlockwise<float, 0, 256, 1>(float*)", 30),
    _k("triton_poi_fused_add_0", 15), _k("some_vendor_kernel_nobody_knows", 5),
]


LIGER_LIKE = [
    _k("_rms_norm_forward_kernel", 30), _k("_rms_norm_backward_kernel", 50), _k("_triton_rope", 40),
    _k("_swiglu_forward_kernel", 20), _k("_swiglu_backward_kernel", 25),
    _k("void kDequantizeBlockwise<__nv_bfloat16, 512, 64, 8, 2>(float*)", 100),
    _k("_forward_kernel", 60), _k("_backward_kernel", 70),  # TRL's chunked loss, not Liger's
    _k("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 500),
    _k("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64> >(Flash_fwd_params)", 80),
    _k("void kOptimizerStatic8bit2StateBlockwise<float, 0, 256, 1>(float*)", 25),
]


def test_a_liger_step_counts_liger_kernel_paths():
    fp = merge_fast_paths(trace_fast_paths(classify(LIGER_LIKE)), {"lora_matmul": "eager"})
    assert {p: fp[p] for p in ("norm", "rope", "mlp_act", "cross_entropy", "nf4_dequant")} == {
        "norm": "liger", "rope": "liger", "mlp_act": "liger", "cross_entropy": "trl", "nf4_dequant": "bitsandbytes"}
    assert kernel_origin(fp) == "liger" and count_kernel_paths(fp) == (3, 3) == count_kernel_paths(fp, "liger")
    assert count_unsloth_paths(fp) == (0, 6)
    assert format_fast_paths(fp) == "Liger kernel paths 3/3"
    # a Liger run whose RMSNorm fell back to compiled code: 2 of 3, named
    fell = [k for k in LIGER_LIKE if not k.name.startswith("_rms_norm")] + [
        _k("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", 80)]
    fp = dict(merge_fast_paths(trace_fast_paths(classify(fell)), None), _origin="liger")
    assert count_kernel_paths(fp) == (2, 3)
    assert format_fast_paths(fp, detail=True) == "Liger kernel paths 2/3 (norm compiled)"
    # summaries before Liger (no _origin, Unsloth's paths) read as Unsloth's
    assert kernel_origin({"norm": "unsloth", "rope": "compiled"}) == "unsloth"
    assert format_fast_paths({"norm": "compiled"}) == "fast paths 0/1"


def test_classification_shares_verdicts_and_unknown_kernels():
    c = classify(LLAMA_LIKE)
    assert c.total_us == pytest.approx(1000.0)
    assert c.paths["norm"].share == pytest.approx(0.08)
    assert c.paths["matmul"].verdict == "cublas"
    # Unsloth's forward kernel took 25 % of the SwiGLU time, Inductor's backward 75 %: still Unsloth's path.
    assert c.paths["mlp_act"].dominant == "inductor" and c.paths["mlp_act"].verdict == "unsloth"
    assert [k.name for k in c.unknown] == ["some_vendor_kernel_nobody_knows"]
    assert c.unknown_share == pytest.approx(0.005)
    assert sum(s.total_us for s in c.paths.values()) + c.unknown_us == pytest.approx(c.total_us)
    fp = trace_fast_paths(c)
    assert fp == {"norm": "unsloth", "rope": "unsloth", "mlp_act": "unsloth", "nf4_dequant": "unsloth",
                  "matmul": "cublas", "attention": "flash", "cross_entropy": "unsloth", "optimizer": "bitsandbytes"}


def test_a_fallback_step_is_called_a_fallback():
    kernels = [_k("triton_per_fused_native_layer_norm_2", 40), _k("triton_poi_fused_gelu_4", 30),
               _k("triton_poi_fused_add_cat_mul_neg_1", 20), _k("void kDequantizeBlockwise<__nv_bfloat16>(float*)", 90),
               _k("_fl_forward_kernel", 50), _k("_rms_layernorm_forward", 1)]  # a stray Unsloth launch: < 5 %
    fp = merge_fast_paths(trace_fast_paths(classify(kernels)), {"lora_matmul": "compiled", "norm": "unsloth"})
    assert fp["norm"] == "compiled" and fp["rope"] == "compiled" and fp["mlp_act"] == "compiled"
    assert fp["nf4_dequant"] == "bitsandbytes" and fp["cross_entropy"] == "unsloth"
    assert fp["lora_matmul"] == "compiled" and fp["_source"] == "trace+static"
    assert count_unsloth_paths(fp) == (1, 6)
    assert format_fast_paths(fp) == "fast paths 1/6"
    assert format_fast_paths(fp, detail=True).startswith("fast paths 1/6 (norm compiled, rope compiled")
    assert format_fast_paths(merge_fast_paths(None, {"norm": "unsloth"})) == "fast paths 1/1 (static check)"
    assert format_fast_paths({"_error": "RuntimeError: x"}) == "fast paths - (error)"
    assert format_fast_paths(None) == "fast paths -"
    agree = compare_static_trace({"norm": "unsloth", "rope": "compiled"}, fp)
    assert agree == {"norm": {"expected": "unsloth", "observed": "compiled", "agree": False},
                     "rope": {"expected": "compiled", "observed": "compiled", "agree": True}}


def test_f2_heuristic_and_its_agreement_with_the_trace():
    assert f2_verdict(0.10) == SUSPECT and f2_verdict(0.30) == LIKELY_FAST and f2_verdict(None) == NO_DATA
    all_unsloth = {p: "unsloth" for p in UNSLOTH_KERNEL_PATHS}
    fell_back = dict(all_unsloth, norm="compiled")
    assert heuristic_vs_trace(SUSPECT, fell_back) is True
    assert heuristic_vs_trace(SUSPECT, all_unsloth) is False  # the heuristic is wrong here
    assert heuristic_vs_trace(LIKELY_FAST, fell_back) is False
    assert heuristic_vs_trace(NO_DATA, fell_back) is None


def _record(recipe, model, peak, tps, seq=512, matched=True):
    key = f"h100-native-{model}-s{seq}-b1-x"
    return ResultRecord(schema_version=SCHEMA_VERSION, run_id="r", cell_id=f"{key}-{recipe}", pair_key=key,
                        backend=get_recipe(recipe).family, recipe=recipe, driver="loop", model=model,
                        model_source="synthetic", tier="h100", mode="native",
                        seq_len=seq, batch_size=1, grad_accum=1, lora_r=16, lora_alpha=16, lora_dropout=0.0,
                        target_modules=["q_proj"], optimizer="adamw_8bit", learning_rate=2e-4,
                        gradient_checkpointing="unsloth", dtype="bfloat16", attn_implementation="sdpa", steps=2,
                        warmup_steps=1, seed=1, status="ok", peak_allocated_bytes=peak, tokens_per_s=tps,
                        matched=matched)


def test_model_summary_uses_the_f2_metric_and_leaves_unmatched_pairs_out():
    records = [_record("hf-kbit", "m", 1000, 100.0), _record("unsloth", "m", 800, 150.0),  # 20 % saved
               _record("hf-kbit", "m", 1000, 100.0, seq=1024, matched=False),
               _record("unsloth", "m", 100, 400.0, seq=1024, matched=False)]
    s = summarize_pairs(model_pairs(records, "m"))
    assert s["pairs"] == 1 and s["memory_reduction"] == pytest.approx(0.2) and s["speedup"] == pytest.approx(1.5)
    assert s["f2"] == SUSPECT and not s["unmatched"]
    assert summarize_pairs(model_pairs(records, "other"))["f2"] == NO_DATA


# -- traces ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_peft(tmp_path_factory):
    """tiny-llama through the suite's own HF QLoRA backend on CPU: bitsandbytes NF4 + peft LoRA."""
    ref = resolve_model("tiny-llama")
    path, _ = ensure_synthetic_checkpoint(ref, cache_dir=tmp_path_factory.mktemp("kc-cache"))
    settings = RecipeSettings(dtype="float32", device="cpu", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                               target_modules=TARGET_MODULES["llama"], checkpointing="none", max_seq_len=64, seed=1)
    return load_recipe("hf-kbit", str(path), settings), ref


def _one_step(model, ref, steps=1, on_step=None):
    spec = TrainSpec(device="cpu", dtype="float32", optimizer="adamw_torch", learning_rate=1e-4, seed=1, batch_size=1,
                     seq_len=16, grad_accum=1, total_steps=steps, vocab_size=ref.vocab_size, checkpointing="none",
                     recipe="hf-kbit")
    return train_loop(model, spec, on_step=on_step)


def test_cpu_profiler_trace_of_a_training_step(tiny_peft, tmp_path):
    """A real torch.profiler Chrome export of one tiny training step: CPU ops are read, and there
    are no GPU kernels, which the CLI refuses and the run summary degrades on."""
    loaded, ref = tiny_peft
    trace, seconds = profile_step(lambda: _one_step(loaded.model, ref), device="cpu")
    assert seconds > 0
    ops = aggregate(trace_events(trace, ("cpu_op",)))
    names = {k.name for k in ops}
    assert {"aten::mm", "aten::embedding"} & names and any("backward" in n.lower() for n in names), sorted(names)[:40]
    assert all(k.total_us >= 0 and k.count >= 1 for k in ops)
    assert sum(k.count for k in ops) == len(trace_events(trace, ("cpu_op",)))
    assert kernel_stats(trace) == []
    # the same file through the saved-trace path (gzip, as torch writes *.json.gz)
    path = tmp_path / "cpu_trace.json.gz"
    path.write_bytes(gzip.compress(json.dumps(trace).encode()))
    kernels, meta = load_kernels(path)
    assert kernels == [] and meta["source"] == "chrome trace"
    proc = run_bench("kernels-check", "--from-trace", str(path))
    assert proc.returncode == 2 and "no GPU kernels" in proc.stderr


def test_profile_last_step_records_only_the_last_step(tiny_peft):
    loaded, ref = tiny_peft
    steps = []

    def run(step_done):
        _one_step(loaded.model, ref, steps=2, on_step=lambda i, s, loss: (steps.append(i), step_done()))

    trace, seconds = profile_last_step(run, warmup=1, device="cpu")
    assert steps == [0, 1] and seconds > 0
    marks = [e[0] for e in trace_events(trace, ("user_annotation",))]
    assert [m for m in marks if m.startswith("ProfilerStep#")] == ["ProfilerStep#1"], marks
    assert len([m for m in marks if m.startswith("Optimizer.step")]) == 1, "the warm-up step was recorded"


def test_excerpt_round_trip_and_bad_documents(tmp_path):
    kernels = aggregate([("_rope_embedding_QK", "kernel", 2.0), ("_rope_embedding_QK", "kernel", 3.0),
                         ("Memcpy HtoD (Pinned -> Device)", "gpu_memcpy", 1.0)])
    assert kernels[0] == KernelStat("_rope_embedding_QK", 5.0, 2, "kernel")
    doc = make_excerpt(kernels, {"model": "m"})
    back, meta = kernels_from_document(json.loads(json.dumps(doc)))
    assert back == kernels and meta == {"model": "m"}
    for junk in ({"traceEvents": 3}, [1, 2], {"kernels": [{"nom": 1}]}, "text"):
        with pytest.raises(TraceError):
            kernels_from_document(junk)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TraceError):
        load_kernels(bad)


# -- static check ---------------------------------------------------------------------------------
def test_static_check_on_plain_hf_peft_reports_no_unsloth_patches(tiny_peft):
    loaded, _ = tiny_peft
    r = inspect_model(loaded.model, env={})
    assert r["unsloth_path"] == "none"
    assert r["patched_forwards"] == {} and r["block_compiled"] == {}
    assert r["fused_lora"] == {"qkv": 0, "o": 0, "mlp": 0} and r["compiled_lora_layers"] == 0
    assert r["lora_layers"] == 14 and r["linear4bit_layers"] == 14  # 2 layers x 7 projections
    assert any("no unsloth patches" in n for n in r["notes"])
    assert expected_fast_paths(r) == {"norm": "eager", "rope": "eager", "mlp_act": "eager",
                                      "nf4_dequant": "bitsandbytes", "lora_matmul": "eager", "cross_entropy": "eager"}
    assert static_fast_paths(loaded.model)["_source"] == "static"
    json.dumps(r)  # stored in results as is


def test_static_check_sees_unsloth_shaped_patches(tiny_peft):
    """The same model with patches laid out exactly as Unsloth installs them (llama.py:3300, 5340-5425,
    _block_compile.py:999): instance-level fused LoRA, a gated + block-compiled decoder forward."""
    loaded, _ = tiny_peft
    layers = loaded.model.base_model.model.model.layers

    def apply_lora_qkv(self, X):  # names as in unsloth/kernels/fast_lora.py
        raise AssertionError("never called")

    def apply_lora_o(self, X):
        raise AssertionError("never called")

    def apply_lora_mlp_swiglu(self, X):
        raise AssertionError("never called")

    def LlamaDecoderLayer_fast_forward(self, *a, **k):
        raise AssertionError("never called")

    @functools.wraps(LlamaDecoderLayer_fast_forward)
    def gated(self, *a, **k):
        raise AssertionError("never called")

    gated._unsloth_gated = True

    @functools.wraps(gated)
    def compiled(self, *a, **k):
        raise AssertionError("never called")

    compiled._unsloth_block_compiled = True
    compiled._unsloth_block_original = gated
    original_cls = type(layers[0])
    patched_cls = type(original_cls.__name__, (original_cls,), {"forward": compiled})
    try:
        for layer in layers:
            layer.self_attn.apply_qkv = apply_lora_qkv
            layer.self_attn.apply_o = apply_lora_o
            layer.mlp.forward = types.MethodType(apply_lora_mlp_swiglu, layer.mlp)
            layer.__class__ = patched_cls
        for m in loaded.model.modules():
            m._unsloth_fast_path = True
        log = (FIXTURES / "unsloth-log-llama-3.2-1b.txt").read_text(encoding="utf-8")
        r = inspect_model(loaded.model, log_text=log, env={"UNSLOTH_USE_NEW_MODEL": "0"})
        assert r["unsloth_path"] == "fast"
        assert r["fused_lora"] == {"qkv": 2, "o": 2, "mlp": 2} and r["fused_mlp_kind"] == "swiglu"
        assert r["patched_forwards"]["LlamaDecoderLayer"] == "LlamaDecoderLayer_fast_forward"
        assert r["block_compiled"] == {"LlamaDecoderLayer": "LlamaDecoderLayer_fast_forward"}
        # Unsloth's message (16 layers of the real 1B model) differs from this 2-layer model: said so
        assert any("16 QKV" in n for n in r["notes"])
        assert expected_fast_paths(r)["norm"] == "unsloth" and expected_fast_paths(r)["lora_matmul"] == "unsloth"
        assert expected_fast_paths(dict(r, env={"UNSLOTH_BNB_TRITON": "0"}))["nf4_dequant"] == "bitsandbytes"
    finally:
        for layer in layers:
            layer.__class__ = original_cls
            for attr in ("apply_qkv", "apply_o"):
                layer.self_attn.__dict__.pop(attr, None)
            layer.mlp.__dict__.pop("forward", None)
        for m in loaded.model.modules():
            m.__dict__.pop("_unsloth_fast_path", None)
    assert inspect_model(loaded.model, env={})["unsloth_path"] == "none"


def _as_liger_defines(fn, owner: str, module: str):
    """`fn` named as the Liger method it stands for (liger_kernel 0.8.5 binds `<owner>.forward` itself)."""
    fn.__module__, fn.__qualname__ = module, f"{owner}.forward"
    return fn


def test_static_check_sees_liger_shaped_patches(tiny_peft, monkeypatch):
    """The same model with patches laid out as Liger installs them: every RMSNorm's and MLP's instance
    `forward` bound to LigerRMSNorm.forward / LigerSwiGLUMLP.forward (monkey_patch.py:67
    _bind_method_to_module), modeling_llama.apply_rotary_pos_emb replaced (monkey_patch.py:290)."""
    loaded, ref = tiny_peft
    import transformers.models.llama.modeling_llama as modeling_llama

    def norm_forward(self, hidden_states):
        raise AssertionError("never called")

    def mlp_forward(self, x):
        raise AssertionError("never called")

    def liger_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        raise AssertionError("never called")

    norm_fwd = _as_liger_defines(norm_forward, "LigerRMSNorm", "liger_kernel.transformers.rms_norm")
    mlp_fwd = _as_liger_defines(mlp_forward, "LigerSwiGLUMLP", "liger_kernel.transformers.swiglu")
    liger_rotary_pos_emb.__module__ = "liger_kernel.transformers.rope"
    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", liger_rotary_pos_emb)
    norms = [m for m in loaded.model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    mlps = [m for m in loaded.model.modules() if type(m).__name__ == "LlamaMLP"]
    try:
        for m in norms:
            m.forward = types.MethodType(norm_fwd, m)
        for m in mlps:
            m.forward = types.MethodType(mlp_fwd, m)
        r = inspect_model(loaded.model, env={})
        assert r["unsloth_path"] == "none"
        assert r["liger"] == {"norm": len(norms), "mlp_act": len(mlps), "other": 0, "rope": 1} and len(norms) == 5
        assert any("Liger patches: 5 norm and 2 MLP forwards" in n for n in r["notes"])
        assert expected_fast_paths(r) == {"norm": "liger", "rope": "liger", "mlp_act": "liger", "cross_entropy": "eager",
                                          "nf4_dequant": "bitsandbytes", "lora_matmul": "eager"}
        fp = static_fast_paths(loaded.model)
        assert fp["_origin"] == "liger" and format_fast_paths(fp) == "Liger kernel paths 3/3 (static check)"
        fp = summarize_fast_paths(loaded.model, lambda: None)  # no GPU kernels: the static check, still Liger's
        assert fp["_source"] == "static" and fp["_origin"] == "liger"
    finally:
        for m in norms + mlps:
            m.__dict__.pop("forward", None)
        monkeypatch.undo()
    assert inspect_model(loaded.model, env={})["liger"] == {"norm": 0, "mlp_act": 0, "other": 0, "rope": 0}


def test_unsloth_messages_from_the_h100_smoke_logs():
    """Banner excerpts the suite logged on an H100 (fixtures copied from its worker logs)."""
    llama = parse_unsloth_log((FIXTURES / "unsloth-log-llama-3.2-1b.txt").read_text(encoding="utf-8"))
    assert llama["fast_name"] == "Llama" and llama["version"]
    assert llama["patched"]["qkv"] == llama["patched"]["layers"] and llama["patched"]["reason"] is None
    assert llama["block_compiled"] == ["LlamaDecoderLayer"] and llama["fallback_messages"] == []
    for name, fast_name in (("pythia-1b", "Gpt_Neox"), ("phi-3-mini", "Phi3")):
        log = parse_unsloth_log((FIXTURES / f"unsloth-log-{name}.txt").read_text(encoding="utf-8"))
        assert log["fast_name"] == fast_name and log["patched"] is None
        assert any("generic FastModel path" in m for m in log["fallback_messages"])


def test_run_summary_degrades_to_the_static_check_without_gpu_kernels(tiny_peft):
    loaded, ref = tiny_peft
    fp = summarize_fast_paths(loaded.model, lambda: _one_step(loaded.model, ref))
    assert fp["_source"] == "static" and "no GPU kernels" in fp["_profile_error"]
    assert fp["norm"] == "eager" and format_fast_paths(fp) == "fast paths 0/6 (static check)"


# -- worker and CLI -------------------------------------------------------------------------------
def test_worker_without_unsloth_writes_a_load_failure(tmp_path):
    plan = plan_tier(get_tier("t4"), None, "cpu")
    job = make_job(resolve_model("tiny-llama"), plan, CheckOptions(seq_len=16, cache_dir=str(tmp_path)))
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = _env()
    env["PYTHONPATH"] = str(REPO)  # no GPU site: unsloth is not importable here
    proc = subprocess.run([sys.executable, "-m", "bench.run.kernels_worker", "--job", str(tmp_path / "job.json"),
                           "--out", str(tmp_path / "r.json")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["format"] == RESULT_FORMAT and result["status"] == "load_failed"
    assert "unsloth" in result["error"] and result["kernels"] == []
    assert (result["recipe"], result["backend"]) == ("unsloth", "unsloth")


def test_liger_worker_loads_without_unsloth_and_names_its_recipe(tmp_path):
    """--recipe hf-liger: the worker never imports unsloth, resolves the recipe's own checkpointing, and
    its result names the recipe (here it stops at the missing GPU, as a load failure)."""
    plan = plan_tier(get_tier("t4"), None, "cpu")
    job = make_job(resolve_model("tiny-llama"), plan,
                   CheckOptions(recipe="hf-liger", seq_len=16, cache_dir=str(tmp_path)))
    assert job["recipe"] == "hf-liger" and job["backend_settings"]["checkpointing"] == "standard"
    assert make_job(resolve_model("tiny-llama"), plan, CheckOptions())["backend_settings"]["checkpointing"] == "unsloth"
    hang = tmp_path / "site" / "unsloth"  # an unsloth whose import would hang: never imported for hf-liger
    hang.mkdir(parents=True)
    (hang / "__init__.py").write_text("import time\ntime.sleep(600)\n")
    env = dict(_env(), PYTHONPATH=f"{REPO}{os.pathsep}{hang.parent}")
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "bench.run.kernels_worker", "--job", str(tmp_path / "job.json"),
                           "--out", str(tmp_path / "r.json")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["recipe"], result["backend"], result["status"]) == ("hf-liger", "hf", "load_failed")
    assert "no CUDA GPU: kernels-check profiles hf-liger" in result["error"]
    assert result_stem("meta/llama", "hf-liger") == "meta_llama.hf-liger" and result_stem("m", "unsloth") == "m"


@pytest.mark.parametrize("args, message", [
    (("--model", "no-such-model"), "unknown model"),
    (("--model", "tiny-llama"), "no CUDA GPU"),
    ((), "exactly one of"),
    (("--model", "tiny-llama", "--all-models"), "not both"),
    (("--from-results", "/nonexistent/dir.json"), "cannot read"),
    (("--model", "tiny-llama", "--recipe", "hf-kbit"), "kernels-check profiles a recipe with kernels of its own"),
    (("--model", "tiny-llama", "--recipe", "hf-liger"), "no CUDA GPU found: kernels-check profiles hf-liger"),
    (("--from-results", str(REPO / "reports" / "kernels"), "--recipe", "hf-liger"), "saved results name their recipe"),
])
def test_cli_bad_input_exits_2(args, message):
    proc = run_bench("kernels-check", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr


def _synthetic_result(model, kernels, static=None, status="ok", profile="ok"):
    return {"format": RESULT_FORMAT, "model": model, "model_type": "llama", "status": status,
            "error": None if status == "ok" else "RuntimeError: boom",
            "profile": {"status": profile, "error": None if profile == "ok" else "RuntimeError: CUPTI"},
            "kernels": [k.to_dict() for k in kernels], "static": static,
            "cell": {"seq_len": 512, "batch_size": 1, "dtype": "bfloat16", "tier": "h100", "mode": "native"}}


def test_from_trace_and_coverage_markdown(tmp_path):
    excerpt = tmp_path / "llama-like.json"
    excerpt.write_text(json.dumps(make_excerpt(LLAMA_LIKE, {"model": "llama-like"})))
    out = tmp_path / "kernels.md"
    proc = run_bench("kernels-check", "--from-trace", str(excerpt), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fast paths 5/5" in proc.stdout
    md = out.read_text()
    assert "| fast path | llama-like |" in md and "unsloth kernel" in md and "some_vendor_kernel_nobody_knows" in md


def test_coverage_table_shows_fallbacks_failures_and_static_only(tiny_peft):
    loaded, _ = tiny_peft
    static = inspect_model(loaded.model, env={})
    fallback = [_k("triton_per_fused_native_layer_norm_2", 40), _k("void kDequantizeBlockwise<float>(float*)", 90)]
    results = [_synthetic_result("fast-one", LLAMA_LIKE),
               _synthetic_result("fallback-one", fallback, static=static),
               _synthetic_result("no-profile", [], static=static, profile="failed"),
               _synthetic_result("broken", [], status="load_failed")]
    records = [_record("hf-kbit", "fallback-one", 1000, 100.0), _record("unsloth", "fallback-one", 900, 110.0)]
    md = coverage_markdown(results, records, generated_at="T")
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "unsloth kernel" in rows["norm (RMSNorm / LayerNorm)"].split(" | ")[1]
    assert rows["norm (RMSNorm / LayerNorm)"].split(" | ")[2].startswith("compiled")
    assert "eager (static only)" in rows["norm (RMSNorm / LayerNorm)"]
    assert "fell back" in rows["fast paths k/n"].split(" | ")[2]
    assert "disagree: norm expected eager, ran compiled" in rows["static check vs trace"]
    assert "10 %" in rows["memory reduction (peak allocated, median)"]
    f2_row = next(v for k, v in rows.items() if k.startswith("F2 heuristic"))
    assert "suspect fallback (agrees with the trace)" in f2_row
    assert "**load_failed**" in rows["status"] and "profiler failed" in rows["status"]
    assert "1 kernels" in rows["unknown kernels"].split(" | ")[1]


def test_coverage_table_with_a_liger_column(tiny_peft):
    """An hf-liger result beside an Unsloth one of the same model: its own column, Liger's k/n, the speed-up
    and memory of hf-liger against the reference (hf-trl), and no F2 verdict (a claim about Unsloth)."""
    loaded, _ = tiny_peft
    static = inspect_model(loaded.model, env={})
    liger_static = dict(static, liger={"norm": 5, "mlp_act": 2, "other": 0, "rope": 1})
    results = [_synthetic_result("m", LLAMA_LIKE),
               dict(_synthetic_result("m", LIGER_LIKE, static=liger_static), recipe="hf-liger")]
    records = [_record("hf-trl", "m", 1000, 100.0), _record("hf-kbit", "m", 2000, 80.0),
               _record("unsloth", "m", 500, 200.0), _record("hf-liger", "m", 900, 125.0)]
    md = coverage_markdown(results, records, generated_at="T")
    assert md.startswith("# Unsloth and Liger kernel coverage")
    assert "| fast path | m (llama) | m (llama, hf-liger) |" in md
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")]
             for line in md.splitlines() if line.startswith("| ")]
    rows = {c[0]: c[1:] for c in cells}
    assert rows["Liger patches (static)"][1].startswith("5 norms, 2 MLPs, RoPE yes")
    assert rows["norm (RMSNorm / LayerNorm)"][1].startswith("liger kernel;")
    assert rows["cross-entropy / lm_head"][1].startswith("TRL kernel;")
    assert rows["fast paths k/n"][0] == "5/5" and rows["fast paths k/n"][1].startswith("Liger 3/3")
    assert rows["speed-up (run records, median)"][0] == "2.00x (1 pairs)"  # unsloth against hf-trl, not hf-kbit
    assert rows["speed-up (run records, median)"][1] == "1.25x (1 pairs)"
    assert rows["memory reduction (peak allocated, median)"][1] == "10 %"
    assert rows[next(k for k in rows if k.startswith("F2"))][1].startswith("- (F2 is a claim about Unsloth)")
    assert "## m (hf-liger)" in md and "run records (hf-liger against hf-trl):" in md
    assert "run records (unsloth against hf-trl):" in md


# -- GPU fixtures (committed from scripts/gpu/kernels.sh) -------------------------------------------
def _fixture(name: str) -> dict:
    """A kernels-check result written on a GPU by scripts/gpu/kernels.sh, frozen in tests/fixtures/kernels."""
    return load_results([FIXTURES / f"{name}.json"])[0]


def test_gpu_fixture_llama_runs_unsloth_kernels():
    a = analyse(_fixture("llama-3.2-1b"))
    assert a.ok and a.profiled, a.result.get("error") or a.result.get("profile")
    assert "recipe" not in a.result and (a.recipe, a.origin) == ("unsloth", "unsloth")  # written before recipes
    unknown = [(k.name[:120], k.total_us) for k in a.classification.unknown[:15]]
    assert a.classification.unknown_share < 0.05, f"unknown kernels: {unknown}"
    assert a.result["static"]["unsloth_path"] == "fast"
    for path in ("norm", "rope", "cross_entropy"):
        assert a.observed.get(path) == "unsloth", (path, a.classification.paths.get(path))
    assert not a.disagreements or set(a.disagreements) <= {"mlp_act", "nf4_dequant"}, a.agreement


def test_gpu_fixture_pythia_falls_back():
    a = analyse(_fixture("pythia-1b"))
    assert a.ok and a.profiled, a.result.get("error") or a.result.get("profile")
    unknown = [(k.name[:120], k.total_us) for k in a.classification.unknown[:15]]
    assert a.classification.unknown_share < 0.05, f"unknown kernels: {unknown}"
    assert a.result["static"]["unsloth_path"] == "generic"
    assert a.observed.get("norm") != "unsloth" and a.observed.get("rope") != "unsloth"
    k, n = count_unsloth_paths(a.fast_paths)
    assert k < n


def test_gpu_fixtures_render_a_coverage_table():
    results = [_fixture("llama-3.2-1b"), _fixture("pythia-1b")]
    md = coverage_markdown(results, generated_at="T")
    assert "| fast path | llama-3.2-1b (llama) | pythia-1b (gpt_neox) |" in md


def test_worker_timeout_is_a_result_not_a_hang(tmp_path, monkeypatch):
    """A worker that hangs (here: an `unsloth` on the path whose import never returns) is killed at
    the timeout, with its process group, and reported as this model's timeout."""
    hang = tmp_path / "hang" / "unsloth"
    hang.mkdir(parents=True)
    (hang / "__init__.py").write_text("import time\nprint('importing', flush=True)\ntime.sleep(600)\n")
    monkeypatch.setenv("PYTHONPATH", str(hang.parent))
    plan = plan_tier(get_tier("t4"), None, "cpu")
    job = make_job(resolve_model("tiny-llama"), plan, CheckOptions(seq_len=16, cache_dir=str(tmp_path)))
    timeout_s = 10  # past the worker's imports before `import unsloth` (torch: ~3 s on a busy CPU)
    result = run_worker(job, tmp_path / "w.log", timeout_s=timeout_s)
    assert result["status"] == "timeout" and result["format"] == RESULT_FORMAT, result
    assert f"over {timeout_s} s" in result["error"] and "importing" in result["log_tail"]


def test_parse_pytest_log_reads_failures_and_the_outcome():
    text = "\n".join([
        "=================================== FAILURES ===================================",
        "_______________________ test_rope[unsloth-fp16] _______________________",
        "    def test_rope(...):",
        "E       AssertionError: rope Q: relative max error 3.0e-03 > 2.0e-03 (seed 1)",
        "E       second line",
        "FAILED kernels_check/test_kernels.py::test_rope[unsloth-fp16] - AssertionError: rope Q ...",
        "=========== 1 failed, 12 passed, 2 warnings in 9.10s ===========",
    ])
    failures, summary = parse_pytest_log(text)
    assert failures == {"test_rope[unsloth-fp16]": "AssertionError: rope Q: relative max error 3.0e-03 > 2.0e-03 (seed 1)"}
    assert summary == "1 failed, 12 passed, 2 warnings"
    assert parse_pytest_log("12 passed in 3.0s") == ({}, "12 passed")


def test_cli_benchmark_bad_input_exits_2(tmp_path):
    not_json = tmp_path / "b.json"
    not_json.write_text("{oops")
    other = tmp_path / "o.json"
    other.write_text(json.dumps({"machine_info": {}}))
    for args, message in [(("--benchmark", str(not_json)), "not a readable pytest-benchmark JSON"),
                          (("--benchmark", str(other)), "no 'benchmarks' list"),
                          (("--test-log", str(not_json)), "--test-log goes with --benchmark")]:
        proc = run_bench("kernels-check", "--from-results", str(REPO / "reports" / "kernels"), *args,
                         "--out", str(tmp_path / "k.md"))
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert message in " ".join(proc.stderr.split()), proc.stderr
        assert not (tmp_path / "k.md").exists()

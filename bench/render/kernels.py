"""Coverage table: fast path x architecture, what ran ("unsloth kernel / compiled / eager" ...), with the
measured speed-up and memory reduction from run records, as markdown for reports/kernels.md (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Optional

from kernels_check.classify import ORIGIN_LABEL, UNSLOTH_KERNEL_PATHS, UNSLOTH_MIN_SHARE, count_unsloth_paths
from bench.analysis.fallback import model_pairs
from kernels_check.heuristic import F2_THRESHOLD, NO_DATA, f2_verdict, heuristic_vs_trace, summarize_pairs
from kernels_check.result import Analysis, analyse

DISPLAY = {"unsloth": "unsloth kernel", "compiled": "compiled", "eager": "eager", "bitsandbytes": "bitsandbytes",
           "cublas": "cuBLAS", "cudnn": "cuDNN", "flash": "flash (SDPA)", "mem_efficient": "mem-efficient (SDPA)",
           "memcpy": "memcpy", "other": "other", "none": "-"}
ROW_PATHS = ("norm", "rope", "mlp_act", "nf4_dequant", "lora_matmul", "cross_entropy", "attention", "matmul",
             "optimizer", "other")
PATH_TITLES = {"norm": "norm (RMSNorm / LayerNorm)", "rope": "RoPE", "mlp_act": "MLP activation (SwiGLU / GeGLU / GELU)",
               "nf4_dequant": "NF4 dequantisation", "lora_matmul": "LoRA matmuls (static check)",
               "cross_entropy": "cross-entropy / lm_head", "attention": "attention", "matmul": "GEMMs (cuBLAS / bnb)",
               "optimizer": "optimizer", "other": "everything else"}
MIX_MIN = 0.10  # a second origin is shown when it has at least this share of a fast path's time


def _pct(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def path_cell(a: Analysis, path: str) -> str:
    """One table cell: what ran on `path` and its share of the step's GPU time."""
    if path == "lora_matmul":
        v = a.expected.get(path)
        return "-" if v is None else f"{DISPLAY.get(v, v)} (static)"
    if a.classification is None:
        v = a.expected.get(path)
        return "not profiled" if v is None else f"{DISPLAY.get(v, v)} (static only)"
    s = a.classification.paths.get(path)
    if s is None or s.total_us <= 0:
        return "-"
    shares = s.origin_shares()
    parts = [(o, sh) for o, sh in shares.items() if sh >= MIX_MIN or o == s.verdict]
    parts.sort(key=lambda t: (t[0] != s.verdict, -t[1]))
    if len(parts) == 1:
        what = DISPLAY[ORIGIN_LABEL[parts[0][0]]]
    else:
        what = " + ".join(f"{DISPLAY[ORIGIN_LABEL[o]]} {sh * 100:.0f} %" for o, sh in parts)
    return f"{what}; {_pct(s.share)}"


def _column_title(a: Analysis) -> str:
    mt = a.result.get("model_type")
    return f"{a.model} ({mt})" if mt else a.model


def _status_row(a: Analysis) -> str:
    if not a.ok:
        return f"**{a.result.get('status')}**: {(a.result.get('error') or '').splitlines()[0][:120]}"
    prof = a.result.get("profile") or {}
    if prof.get("status") != "ok":
        return f"profiler failed, static check only ({(prof.get('error') or '').splitlines()[0][:100]})"
    return "ok"


def _path_row(a: Analysis) -> str:
    s = a.result.get("static") or {}
    path = s.get("unsloth_path", "-")
    name = (s.get("log") or {}).get("fast_name")
    return f"{path}" + (f" (Fast {name})" if name else "")


def _kn_row(a: Analysis) -> str:
    if not a.ok:
        return "not measured (the step failed)"
    if not a.fast_paths:
        return "-"
    k, n = count_unsloth_paths(a.fast_paths)
    fell = [p for p in UNSLOTH_KERNEL_PATHS if p in a.fast_paths and a.fast_paths[p] != "unsloth"]
    return f"{k}/{n}" + (f" (fell back: {', '.join(fell)})" if fell else "")


def _agreement_row(a: Analysis) -> str:
    if not a.agreement:
        return "-"
    bad = a.disagreements
    if not bad:
        return "agree"
    return "disagree: " + "; ".join(f"{p} expected {a.agreement[p]['expected']}, ran {a.agreement[p]['observed']}"
                                    for p in bad)


def _unknown_row(a: Analysis) -> str:
    c = a.classification
    if c is None:
        return "-"
    return f"{len(c.unknown)} kernels, {_pct(c.unknown_share)}"


def _cell_row(a: Analysis) -> str:
    c = a.result.get("cell") or {}
    if not c:
        return "-"
    return f"s{c.get('seq_len')} b{c.get('batch_size')} {c.get('dtype')}, {c.get('tier')} ({c.get('mode')})"


def coverage_markdown(results: Iterable, records: Optional[list] = None, title: str = "Unsloth kernel coverage",
                      generated_at: Optional[str] = None, extra_sections: Optional[list[str]] = None) -> str:
    """The whole report: the coverage table, how to read it, extra sections (kernel micro-benchmarks),
    and per-architecture details. `results`: kernels-check result dicts, or their `Analysis`."""
    analyses = [r if isinstance(r, Analysis) else analyse(r) for r in results]
    records = list(records or [])
    pairs = {a.model: model_pairs(records, a.model) for a in analyses}
    summaries = {a.model: summarize_pairs(pairs[a.model]) for a in analyses}
    when = generated_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# {title}", ""]
    lines += _provenance(analyses, records, when)
    header = ["fast path"] + [_column_title(a) for a in analyses]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")

    def row(name: str, cells: list[str]) -> None:
        lines.append("| " + " | ".join([name] + [c.replace("|", "\\|") for c in cells]) + " |")

    row("status", [_status_row(a) for a in analyses])
    row("Unsloth path (static)", [_path_row(a) for a in analyses])
    for p in ROW_PATHS:
        row(PATH_TITLES[p], [path_cell(a, p) for a in analyses])
    row("unknown kernels", [_unknown_row(a) for a in analyses])
    row("fast paths k/n", [_kn_row(a) for a in analyses])
    row("static check vs trace", [_agreement_row(a) for a in analyses])
    row("speed-up (run records, median)", [_speedup(summaries[a.model]) for a in analyses])
    row("memory reduction (peak allocated, median)", [_reduction(summaries[a.model]) for a in analyses])
    row(f"F2 heuristic (< {F2_THRESHOLD:.0%} saved -> suspect fallback)",
        [_f2(summaries[a.model], a) for a in analyses])
    row("profiled step", [_cell_row(a) for a in analyses])
    lines.append("")
    lines += _legend()
    if extra_sections:
        lines += [""] + list(extra_sections)
    for a in analyses:
        lines += model_details(a, pairs=pairs[a.model] if records else None)
    return "\n".join(lines).rstrip() + "\n"


def _speedup(s: dict) -> str:
    if s["speedup"] is None:
        return "no run record"
    return f"{s['speedup']:.2f}x ({s['pairs']} pairs{', UNMATCHED' if s['unmatched'] else ''})"


def _reduction(s: dict) -> str:
    if s["memory_reduction"] is None:
        return "no run record"
    lo, hi = s["memory_reduction_range"]
    rng = f", {lo * 100:.0f}-{hi * 100:.0f} %" if s["pairs"] > 1 else ""
    return f"{s['memory_reduction'] * 100:.0f} %{rng}"


def _f2(s: dict, a: Analysis) -> str:
    if s["f2"] == NO_DATA:
        return NO_DATA
    agree = heuristic_vs_trace(s["f2"], a.fast_paths)
    if agree is None:
        return s["f2"]
    return f"{s['f2']} ({'agrees with' if agree else 'CONTRADICTS'} the trace)"


def _provenance(analyses: list[Analysis], records: list, when: str) -> list[str]:
    gpus = sorted({(a.result.get("env") or {}).get("gpu_name") or "an unrecorded GPU" for a in analyses})
    pk = {}
    for a in analyses:
        for k, v in ((a.result.get("env") or {}).get("packages") or {}).items():
            if v:
                pk.setdefault(k, set()).add(v)
    versions = ", ".join(f"{k} {'/'.join(sorted(pk[k]))}" for k in ("torch", "transformers", "peft", "bitsandbytes",
                                                                    "triton", "unsloth", "unsloth_zoo") if k in pk)
    commits = sorted({(a.result.get("env") or {}).get("git_commit") or "?" for a in analyses})
    out = [f"Generated {when} by `bench kernels-check` from {len(analyses)} results (one profiled training "
           f"step each) on {', '.join(gpus)}."]
    if versions:
        out.append(f"Software: {versions}. Suite commit {', '.join(c[:12] for c in commits)}.")
    out.append(f"Speed-up and memory columns come from {len(records)} run records" if records else
               "No run records were given (`--results`), so speed-up, memory reduction and F2 are empty.")
    out.append("")
    return out


def _legend() -> list[str]:
    return [
        "How to read it: each cell says which code ran that fast path in the profiled step and that path's share "
        "of the step's GPU kernel time. *unsloth kernel*: Unsloth's hand-written Triton kernels; *compiled*: "
        "Triton kernels generated by torch.compile/Inductor; *eager*: stock PyTorch (ATen) CUDA kernels; "
        "library names where a library kernel ran (bitsandbytes, cuBLAS, flash / mem-efficient SDPA, cuDNN). "
        f"A path counts as *unsloth* when Unsloth's kernels took at least {UNSLOTH_MIN_SHARE * 100:.0f} % of its time; "
        f"a second origin is shown with its share when it took {MIX_MIN * 100:.0f} % or more. *LoRA matmuls* come from the static check (the GEMMs "
        "are cuBLAS either way; the question is whether Unsloth's fused LoRA autograd ran them). *fast paths "
        "k/n*: of the paths Unsloth has a hand-written kernel for, how many ran it. Unknown kernels matched no "
        "entry of kernels_check/kernel_patterns.json and are listed below, not dropped.",
        "",
    ]


def model_details(a: Analysis, top: int = 3, unknown_top: int = 10, pairs: Optional[list[dict]] = None) -> list[str]:
    """Per-architecture section: top kernels per path, unknown kernels, static notes, run-record pairs."""
    out = [f"## {a.model}", ""]
    if not a.ok:
        out += [f"Status **{a.result.get('status')}**: {a.result.get('error')}", ""]
    prof = a.result.get("profile") or {}
    if a.ok and prof.get("status") != "ok":
        out += [f"Profiler failed ({prof.get('error')}); the verdicts are the static check's expectation.", ""]
    s = a.result.get("static") or {}
    if s:
        fused = s.get("fused_lora") or {}
        out.append(f"- static: path **{s.get('unsloth_path')}**, patched forwards "
                   f"{', '.join(f'{k}={v}' for k, v in (s.get('patched_forwards') or {}).items()) or 'none'}; "
                   f"block-compiled {', '.join(s.get('block_compiled') or {}) or 'none'}; fused LoRA "
                   f"QKV {fused.get('qkv', 0)} / O {fused.get('o', 0)} / MLP {fused.get('mlp', 0)} of "
                   f"{s.get('lora_layers', 0)} LoRA layers; compiled LoRA forwards {s.get('compiled_lora_layers', 0)}")
        for note in s.get("notes") or []:
            out.append(f"- note: {note}")
    c = a.classification
    if c is not None:
        out.append(f"- profiled step: {c.kernel_count} distinct kernels, {c.total_us / 1000:.1f} ms of GPU time")
        for p in ROW_PATHS:
            ps = c.paths.get(p)
            if ps is None:
                continue
            names = "; ".join(f"`{_short(n)}` ({ORIGIN_LABEL[o]}, {us / 1000:.2f} ms)" for n, o, us in ps.kernels[:top])
            out.append(f"- {p}: {names}")
        if c.unknown:
            out.append(f"- unknown kernels ({len(c.unknown)}, {_pct(c.unknown_share)} of GPU time):")
            for k in c.unknown[:unknown_top]:
                out.append(f"  - `{_short(k.name, 160)}` x{k.count}, {k.total_us / 1000:.2f} ms")
    if pairs:
        out.append("- run records (hf vs unsloth pairs):")
        for p in sorted(pairs, key=lambda p: (p["tier"], p["mode"], p["seq_len"], p["batch_size"])):
            speed = "-" if p["speedup"] is None else f"{p['speedup']:.2f}x"
            mem = "-" if p["memory_reduction"] is None else f"{p['memory_reduction'] * 100:.0f} % less peak allocated"
            parity = {True: "matched", False: "PARITY FAILED", None: "parity unknown"}[p["matched"]]
            out.append(f"  - {p['tier']} ({p['mode']}) s{p['seq_len']} b{p['batch_size']}: {speed}, {mem}, "
                       f"F2: {f2_verdict(p['memory_reduction'])}, {parity}")
    out.append("")
    return out


def _short(name: str, n: int = 90) -> str:
    name = name.replace("`", "'")
    return name if len(name) <= n else name[: n - 3] + "..."

"""reports/kernels.md and the `bench kernels-check` console (pure over kernels-check results).

The coverage table: fast path x architecture (and recipe: unsloth, or hf-liger for Liger's
kernels), what ran ("unsloth kernel / liger kernel / compiled / eager" ...) and its share of the
step's GPU time, with the measured speed-up and memory reduction of that recipe against its
reference recipe from run records; then the kernel tests' micro-benchmarks (pytest-benchmark JSON +
pytest log, read by kernels_check.benchmarks) and per-architecture details.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from rich.console import Console
from rich.table import Table as RichTable

from bench.analysis.fallback import model_pairs
from bench.render.blocks import Block, Bullets, Table, render_markdown
from bench.render.text import first_line, fmt, pct
from bench.schema.pairs import DEFAULT_REFERENCE, reference_for
from kernels_check.classify import (KERNEL_MIN_SHARE, KERNEL_PATHS, ORIGIN_LABEL, count_kernel_paths,
                                    format_fast_paths)
from kernels_check.heuristic import F2_THRESHOLD, NO_DATA, f2_verdict, heuristic_vs_trace, summarize_pairs
from kernels_check.result import Analysis, analyse, results_time

DISPLAY = {"unsloth": "unsloth kernel", "liger": "liger kernel", "trl": "TRL kernel", "compiled": "compiled",
           "eager": "eager", "bitsandbytes": "bitsandbytes", "cublas": "cuBLAS", "cudnn": "cuDNN", "flash": "flash (SDPA)", "mem_efficient": "mem-efficient (SDPA)",
           "memcpy": "memcpy", "other": "other", "none": "-"}
ROW_PATHS = ("norm", "rope", "mlp_act", "nf4_dequant", "lora_matmul", "cross_entropy", "attention", "matmul",
             "optimizer", "other")
PATH_TITLES = {"norm": "norm (RMSNorm / LayerNorm)", "rope": "RoPE", "mlp_act": "MLP activation (SwiGLU / GeGLU / GELU)",
               "nf4_dequant": "NF4 dequantisation", "lora_matmul": "LoRA matmuls (static check)",
               "cross_entropy": "cross-entropy / lm_head", "attention": "attention", "matmul": "GEMMs (cuBLAS / bnb)",
               "optimizer": "optimizer", "other": "everything else"}
MIX_MIN = 0.10  # a second origin is shown when it has at least this share of a fast path's time


def _lines(*blocks: Block) -> list[str]:
    """The blocks as markdown lines (bench.render.blocks writes them), without the closing newline."""
    return render_markdown(blocks).rstrip("\n").split("\n")


def _share(x: Optional[float]) -> str:
    """A fraction of GPU time with one decimal ('0.9 %'), '-' for None."""
    return fmt(None if x is None else x * 100, ".1f", " %")


def _cell(text: str) -> str:
    """Text inside a coverage-table cell: only the column separator is escaped."""
    return text.replace("|", "\\|")


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
        what = " + ".join(f"{DISPLAY[ORIGIN_LABEL[o]]} {pct(sh)}" for o, sh in parts)
    return f"{what}; {_share(s.share)}"


def _column_title(a: Analysis) -> str:
    """'llama-3.1-8b (llama)'; a recipe other than unsloth is named: 'llama-3.1-8b (llama, hf-liger)'."""
    details = [d for d in (a.result.get("model_type"), None if a.recipe == "unsloth" else a.recipe) if d]
    return f"{a.model} ({', '.join(details)})" if details else a.model


def _key(a: Analysis) -> tuple[str, str]:
    """A column's identity: one model may be checked under several recipes."""
    return a.model, a.recipe


def _status_row(a: Analysis) -> str:
    if not a.ok:
        return f"**{a.result.get('status')}**: {first_line(a.result.get('error'), 120)}"
    prof = a.result.get("profile") or {}
    if prof.get("status") != "ok":
        return f"profiler failed, static check only ({first_line(prof.get('error'), 100)})"
    return "ok"


def _path_row(a: Analysis) -> str:
    s = a.result.get("static") or {}
    path = s.get("unsloth_path", "-")
    name = (s.get("log") or {}).get("fast_name")
    return f"{path}" + (f" (Fast {name})" if name else "")


def _liger_row(a: Analysis) -> str:
    liger = (a.result.get("static") or {}).get("liger")
    if not liger:
        return "-"
    return f"{liger['norm']} norms, {liger['mlp_act']} MLPs, RoPE {'yes' if liger['rope'] else 'no'}"


def _kn_row(a: Analysis) -> str:
    if not a.ok:
        return "not measured (the step failed)"
    if not a.fast_paths:
        return "-"
    k, n = count_kernel_paths(a.fast_paths, a.origin)
    fell = [p for p in KERNEL_PATHS[a.origin] if p in a.fast_paths and a.fast_paths[p] != a.origin]
    prefix = "" if a.origin == "unsloth" else "Liger "
    return f"{prefix}{k}/{n}" + (f" (fell back: {', '.join(fell)})" if fell else "")


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
    return f"{len(c.unknown)} kernels, {_share(c.unknown_share)}"


def _cell_row(a: Analysis) -> str:
    c = a.result.get("cell") or {}
    if not c:
        return "-"
    return f"s{c.get('seq_len')} b{c.get('batch_size')} {c.get('dtype')}, {c.get('tier')} ({c.get('mode')})"


def _speedup(s: dict) -> str:
    if s["speedup"] is None:
        return "no run record"
    return f"{fmt(s['speedup'], '.2f', 'x')} ({s['pairs']} pairs{', UNMATCHED' if s['unmatched'] else ''})"


def _reduction(s: dict) -> str:
    if s["memory_reduction"] is None:
        return "no run record"
    lo, hi = s["memory_reduction_range"]
    rng = f", {lo * 100:.0f}-{pct(hi)}" if s["pairs"] > 1 else ""
    return pct(s["memory_reduction"]) + rng


def _f2(s: dict, a: Analysis) -> str:
    if a.origin != "unsloth":
        return "- (F2 is a claim about Unsloth)"
    if s["f2"] == NO_DATA:
        return NO_DATA
    agree = heuristic_vs_trace(s["f2"], a.fast_paths)
    if agree is None:
        return s["f2"]
    return f"{s['f2']} ({'agrees with' if agree else 'CONTRADICTS'} the trace)"


def coverage_table(analyses: list[Analysis], summaries: dict[tuple[str, str], dict]) -> Table:
    """Fast path x architecture (and recipe); `summaries`: (model, recipe) -> heuristic.summarize_pairs."""
    rows = [("status", _status_row), ("Unsloth path (static)", _path_row)]
    if any(a.origin == "liger" for a in analyses):
        rows.append(("Liger patches (static)", _liger_row))
    rows += [(PATH_TITLES[p], lambda a, p=p: path_cell(a, p)) for p in ROW_PATHS]
    rows += [("unknown kernels", _unknown_row), ("fast paths k/n", _kn_row), ("static check vs trace", _agreement_row),
             ("speed-up (run records, median)", lambda a: _speedup(summaries[_key(a)])),
             ("memory reduction (peak allocated, median)", lambda a: _reduction(summaries[_key(a)])),
             (f"F2 heuristic (< {F2_THRESHOLD:.0%} saved -> suspect fallback)", lambda a: _f2(summaries[_key(a)], a)),
             ("profiled step", _cell_row)]
    return Table(["fast path"] + [_column_title(a) for a in analyses],
                 [[name] + [_cell(cell(a)) for a in analyses] for name, cell in rows])


def coverage_markdown(results: Iterable, records: Optional[list] = None, title: str = "Unsloth kernel coverage",
                      generated_at: Optional[str] = None, extra_sections: Optional[list[str]] = None) -> str:
    """The whole report: the coverage table, how to read it, extra sections (kernel micro-benchmarks),
    and per-architecture details. `results`: kernels-check result dicts, or their `Analysis`.

    `generated_at` defaults to the results' own time (kernels_check.result.results_time), so the
    same results render the same bytes.
    """
    analyses = [r if isinstance(r, Analysis) else analyse(r) for r in results]
    records = list(records or [])
    against = {_key(a): recipe_records(records, a.recipe) for a in analyses}
    pairs = {k: model_pairs(recs, k[0], candidate=k[1]) for k, recs in against.items()}
    summaries = {k: summarize_pairs(p) for k, p in pairs.items()}
    when = generated_at or results_time(a.result for a in analyses)
    if any(a.origin != "unsloth" for a in analyses) and title == "Unsloth kernel coverage":
        title = "Unsloth and Liger kernel coverage"
    lines = [f"# {title}", ""]
    lines += _provenance(analyses, records, when)
    lines += _lines(coverage_table(analyses, summaries))
    lines.append("")
    lines += _legend(analyses)
    if extra_sections:
        lines += [""] + list(extra_sections)
    for a in analyses:
        lines += model_details(a, pairs=pairs[_key(a)] if records else None,
                               references=_references(against[_key(a)], a.recipe))
    return "\n".join(lines).rstrip() + "\n"


def recipe_records(records: list, recipe: str, reference: str = DEFAULT_REFERENCE) -> list:
    """The records of `recipe` and of its configurations' reference recipe (bench.schema.pairs: `reference`
    where measured, else the first of REFERENCE_FALLBACK), so each pair is `recipe` against the reference."""
    present: dict[str, set] = {}
    for r in records:
        present.setdefault(r.pair_key, set()).add(r.recipe)
    refs = {key: reference_for(recipes - {recipe}, reference) for key, recipes in present.items()}
    return [r for r in records if r.recipe == recipe or r.recipe == refs[r.pair_key]]


def _references(records: list, recipe: str) -> list[str]:
    return sorted({r.recipe for r in records if r.recipe != recipe})


def _provenance(analyses: list[Analysis], records: list, when: Optional[str]) -> list[str]:
    gpus = sorted({(a.result.get("env") or {}).get("gpu_name") or "an unrecorded GPU" for a in analyses})
    pk: dict[str, set] = {}
    for a in analyses:
        for k, v in ((a.result.get("env") or {}).get("packages") or {}).items():
            if v:
                pk.setdefault(k, set()).add(v)
    for a in analyses:
        if (a.result.get("backend_info") or {}).get("liger_version"):
            pk.setdefault("liger_kernel", set()).add(a.result["backend_info"]["liger_version"])
    versions = ", ".join(f"{k} {'/'.join(sorted(pk[k]))}" for k in ("torch", "transformers", "peft", "bitsandbytes",
                                                                    "triton", "unsloth", "unsloth_zoo",
                                                                    "liger_kernel") if k in pk)
    commits = sorted({(a.result.get("env") or {}).get("git_commit") or "?" for a in analyses})
    out = [f"Generated {when + ' ' if when else ''}by `bench kernels-check` from {len(analyses)} results (one "
           f"profiled training step each) on {', '.join(gpus)}."]
    if versions:
        out.append(f"Software: {versions}. Suite commit {', '.join(c[:12] for c in commits)}.")
    out.append(f"Speed-up and memory columns come from {len(records)} run records" if records else
               "No run records were given (`--results`), so speed-up, memory reduction and F2 are empty.")
    out.append("")
    return out


def _legend(analyses: list[Analysis]) -> list[str]:
    liger = [
        "Columns of the hf-liger recipe: *liger kernel* is Liger's Triton kernels, *TRL kernel* TRL's own "
        "chunked loss kernels (every SFTTrainer run of an HF model launches them; they are never counted as "
        f"Liger's). Their *fast paths k/n* counts the paths hf-liger runs on Liger ({', '.join(KERNEL_PATHS['liger'])}; "
        "TRL keeps its own loss), and a path counts as *liger* on the same share rule.", ""]
    return [
        "How to read it: each cell says which code ran that fast path in the profiled step and that path's share "
        "of the step's GPU kernel time. *unsloth kernel*: Unsloth's hand-written Triton kernels; *compiled*: "
        "Triton kernels generated by torch.compile/Inductor; *eager*: stock PyTorch (ATen) CUDA kernels; "
        "library names where a library kernel ran (bitsandbytes, cuBLAS, flash / mem-efficient SDPA, cuDNN). "
        f"A path counts as *unsloth* when Unsloth's kernels took at least {pct(KERNEL_MIN_SHARE)} of its time; "
        f"a second origin is shown with its share when it took {pct(MIX_MIN)} or more. *LoRA matmuls* come from "
        "the static check (the GEMMs are cuBLAS either way; the question is whether Unsloth's fused LoRA autograd "
        "ran them). *fast paths k/n*: of the paths Unsloth has a hand-written kernel for, how many ran it. Unknown "
        "kernels matched no entry of kernels_check/kernel_patterns.json and are listed below, not dropped.",
        "",
    ] + (liger if any(a.origin == "liger" for a in analyses) else [])


def model_details(a: Analysis, top: int = 3, unknown_top: int = 10, pairs: Optional[list[dict]] = None,
                  references: Optional[list[str]] = None) -> list[str]:
    """Per-architecture section: top kernels per path, unknown kernels, static notes, run-record pairs
    (`references`: the recipes they are against)."""
    out = [f"## {a.model}" + ("" if a.recipe == "unsloth" else f" ({a.recipe})"), ""]
    if not a.ok:
        out += [f"Status **{a.result.get('status')}**: {a.result.get('error')}", ""]
    prof = a.result.get("profile") or {}
    if a.ok and prof.get("status") != "ok":
        out += [f"Profiler failed ({prof.get('error')}); the verdicts are the static check's expectation.", ""]
    items: list = _static_items(a.result.get("static") or {})
    c = a.classification
    if c is not None:
        items.append(f"profiled step: {c.kernel_count} distinct kernels, {c.total_us / 1000:.1f} ms of GPU time")
        for p in ROW_PATHS:
            ps = c.paths.get(p)
            if ps is not None:
                items.append(f"{p}: " + "; ".join(f"`{_short(n)}` ({ORIGIN_LABEL[o]}, {us / 1000:.2f} ms)"
                                                  for n, o, us in ps.kernels[:top]))
        if c.unknown:
            items.append((f"unknown kernels ({len(c.unknown)}, {_share(c.unknown_share)} of GPU time):",
                          [f"`{_short(k.name, 160)}` x{k.count}, {k.total_us / 1000:.2f} ms"
                           for k in c.unknown[:unknown_top]]))
    if pairs:
        against = "/".join(references or []) or "its reference recipe"
        items.append((f"run records ({a.recipe} against {against}):", [_pair_item(p) for p in sorted(
            pairs, key=lambda p: (p["tier"], p["mode"], p["seq_len"], p["batch_size"]))]))
    if items:
        out += _lines(Bullets(items))
    out.append("")
    return out


def _static_items(s: dict) -> list[str]:
    if not s:
        return []
    fused = s.get("fused_lora") or {}
    forwards = ", ".join(f"{k}={v}" for k, v in (s.get("patched_forwards") or {}).items()) or "none"
    items = [f"static: path **{s.get('unsloth_path')}**, patched forwards {forwards}; block-compiled "
             f"{', '.join(s.get('block_compiled') or {}) or 'none'}; fused LoRA QKV {fused.get('qkv', 0)} / "
             f"O {fused.get('o', 0)} / MLP {fused.get('mlp', 0)} of {s.get('lora_layers', 0)} LoRA layers; "
             f"compiled LoRA forwards {s.get('compiled_lora_layers', 0)}"]
    return items + [f"note: {note}" for note in s.get("notes") or []]


def _pair_item(p: dict) -> str:
    mem = "-" if p["memory_reduction"] is None else f"{pct(p['memory_reduction'])} less peak allocated"
    parity = {True: "matched", False: "PARITY FAILED", None: "parity unknown"}[p["matched"]]
    return (f"{p['tier']} ({p['mode']}) s{p['seq_len']} b{p['batch_size']}: {fmt(p['speedup'], '.2f', 'x')}, "
            f"{mem}, F2: {f2_verdict(p['memory_reduction'])}, {parity}")


def _short(name: str, n: int = 90) -> str:
    name = name.replace("`", "'")
    return name if len(name) <= n else name[: n - 3] + "..."


# -- the kernel tests' section --------------------------------------------------------------------
def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    return str(params.get("impl") or bench.get("param") or bench.get("name"))


def benchmark_markdown(data: dict[str, Any], failures: Optional[dict[str, str]] = None,
                       summary: Optional[str] = None, source: str = "", log_source: str = "") -> list[str]:
    """Markdown lines: one table row per benchmark (kernel x dtype group), Unsloth beside the stock code.

    `data`: a pytest-benchmark JSON (kernels_check.benchmarks.load_benchmark); `failures`, `summary`:
    from the pytest log (kernels_check.benchmarks.parse_pytest_log). `median us`: median wall time
    of one call (forward + backward where the kernel has one) in microseconds, device synchronised;
    `vs torch`: the torch implementation's median over this one's (> 1 means faster than torch);
    errors: relative max error against float32 math.
    """
    failures = failures or {}
    commit = (data.get("commit_info") or {}).get("id") or "unknown"
    out = ["## Kernel tests and micro-benchmarks", ""]
    out.append(f"From `{source}` (pytest-benchmark {data.get('version', '?')}, {data.get('datetime', '?')}, "
               f"recorded commit {commit[:12]})" + (f" and the pytest output `{log_source}`" if log_source else "")
               + ". Each Unsloth kernel is checked against float32 math (the bound is per dtype) and timed "
               "beside the stock implementation on the same inputs.")
    if summary:
        out.append(f"Test outcome: **{summary}**.")
    out.append("")
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b.get("group") or b.get("name"), []).append(b)
    rows = []
    for group in sorted(groups):
        benches = sorted(groups[group], key=lambda b: (_impl(b) != "unsloth", _impl(b)))
        torch_median = next((b["stats"]["median"] for b in benches if _impl(b) == "torch"), None)
        for b in benches:
            st, info = b["stats"], b.get("extra_info") or {}
            ratio = f"{torch_median / st['median']:.2f}x" if torch_median and st["median"] else "-"
            rows.append([group, _impl(b), f"{st['median'] * 1e6:,.1f}", f"{st['min'] * 1e6:,.1f}", str(st["rounds"]),
                         ratio, fmt(info.get("fwd_err"), ".1e"), fmt(info.get("bwd_err"), ".1e")])
    header = ["kernel (dtype)", "implementation", "median us", "min us", "rounds", "vs torch", "forward error",
              "backward error"]
    out += _lines(Table(header, rows, right={2, 3, 4, 5, 6, 7}))
    if failures:
        out += ["", "Failed kernel tests (a failed test leaves no timing):", ""]
        out += _lines(Bullets([f"`{name}`: {message.replace('|', '/')}" for name, message in sorted(failures.items())]))
    out.append("")
    return out


# -- the console ----------------------------------------------------------------------------------
def print_analysis(console: Console, a: Analysis, detail: bool) -> None:
    """One model's verdicts as a rich table, its static notes, and with `detail` the top kernels per path."""
    r = a.result
    if r.get("status") != "ok":
        console.print(f"[bold red]{a.model}[/]: {r.get('status')} - {r.get('error')}")
        if r.get("log_tail"):
            console.print(f"[dim]{r['log_tail'][-800:]}[/]")
        return
    static = r.get("static") or {}
    prof = r.get("profile") or {}
    name = a.model + ("" if a.recipe == "unsloth" else f" ({a.recipe})")
    t = RichTable(title=f"{name}: {format_fast_paths(a.fast_paths, detail=True, origin=a.origin)}",
                  title_justify="left")
    for col in ("fast path", "ran", "share of GPU time", "static check expects", "agree"):
        t.add_column(col, justify="right" if col == "share of GPU time" else "left")
    c = a.classification
    for p in ROW_PATHS:
        s = c.paths.get(p) if c else None
        ran = ORIGIN_LABEL[s.verdict] if s else "-"
        exp = a.expected.get(p, "-")
        agree = a.agreement.get(p)
        mark = "-" if agree is None else ("[green]yes[/]" if agree["agree"] else "[bold red]no[/]")
        if s is None and p in a.fast_paths and p not in a.observed:
            ran = f"{a.fast_paths[p]} (static)"
        if s is None and ran == "-" and exp == "-":
            continue
        t.add_row(PATH_TITLES[p], ran, _share(s.share) if s else "-", exp, mark)
    if c is not None:
        t.add_row("unknown kernels", f"{len(c.unknown)} kernels", _share(c.unknown_share), "", "")
    console.print(t)
    path = static.get("unsloth_path")
    if path:
        fast_name = (static.get("log") or {}).get("fast_name")
        console.print(f"  Unsloth path: [bold]{path}[/]" + (f" (Fast {fast_name})" if fast_name else ""))
    for note in static.get("notes") or []:
        console.print(f"  [yellow]note:[/] {note}")
    if prof.get("status") not in (None, "ok"):
        console.print(f"  [yellow]profiler failed, verdicts are the static check's:[/] {prof.get('error')}")
    if detail and c is not None:
        for p in ROW_PATHS:
            s = c.paths.get(p)
            if s:
                for name, origin, us in s.kernels[:3]:
                    console.print(f"    {p:<13} {ORIGIN_LABEL[origin]:<12} {us / 1000:8.2f} ms  {name[:110]}")
        for k in c.unknown[:10]:
            console.print(f"    unknown       {'':<12} {k.total_us / 1000:8.2f} ms  {k.name[:110]}")

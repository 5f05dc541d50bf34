"""`bench estimate`, `bench fit` and `bench doctor`: will it fit, what does fit, and this machine.

Thin over bench/estimate.py (analytical, no GPU), bench/fit.py (measured search through the
launcher) and bench/doctor.py. Bad input (unknown model / tier, sizes <= 0 or over the model's
positions, a configuration that fits nothing) prints one red line and exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from bench.render.text import gib as _gib

DEFAULT_MODEL = "llama-3.1-8b"


def _fail(message: str):
    from bench.cli import UsageFailure

    raise UsageFailure(message)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _tier(name: Optional[str]):
    """The named tier, or the present GPU's; exit 2 when neither exists."""
    from bench.config.tiers import get_tier
    from bench.run.device import detect_host_gpu

    if name:
        return get_tier(name)
    host = detect_host_gpu()
    if host is None or host.tier is None:
        _fail("--gpu-tier is needed: no known GPU detected here (see `bench tiers`)")
    return host.tier


def _model(spec: str):
    from bench.analysis.estimate import EstimateError, model_shape
    from bench.config.models import resolve_model

    ref = resolve_model(spec)
    try:
        model_shape(ref.config)
    except EstimateError as exc:
        _fail(f"model {spec!r}: {exc}")
    return ref


def _sizes(text: str, name: str, max_value: Optional[int] = None) -> list[int]:
    from bench.config.settings import parse_int_list

    values = parse_int_list(text, name)
    for v in values:
        if v <= 0:
            _fail(f"{name} must be > 0, got {v}")
        if max_value is not None and v > max_value:
            _fail(f"{name} {v} is over the model's {max_value:,} positions")
        if v > 1 << 24:
            _fail(f"{name} {v} is absurdly large")
    return values


def _wide(console):
    from rich.console import Console

    if console.is_terminal:
        return console
    return Console(file=console.file, width=max(console.width, 160))


def estimate_command(
    results: Optional[List[Path]] = typer.Argument(None, help="With --validate / --calibrate: results JSONL files."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Shipped name or config .json (or checkpoint dir)."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to judge the fit against (default: this GPU's)."),
    backend: str = typer.Option("hf,unsloth", "--backend", help="Comma list: hf, unsloth."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="Comma list (default: the tier's first default)."),
    batch_size: str = typer.Option("1", "--batch-size", help="Comma list of micro-batch sizes."),
    lora_r: int = typer.Option(16, "--lora-r"),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma list (default: every projection)."),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer",
                                  help="adamw_8bit | paged_adamw_8bit | adamw_torch | paged_adamw_32bit"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing",
                                               help="auto (hf: standard, unsloth: unsloth) | none | standard | unsloth"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16 | float16 (default: the tier's)."),
    max_fit: bool = typer.Option(False, "--max-fit", help="Largest seq (at each batch) and batch (at each seq) predicted to fit."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout (nothing else)."),
    validate: bool = typer.Option(False, "--validate", help="Compare with every measured ok cell of RESULTS."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Print the calibrated values RESULTS imply."),
    write: bool = typer.Option(False, "--write", help="With --calibrate: write them to bench/data/calibration.json."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --validate: write the markdown table here."),
    strict: bool = typer.Option(False, "--strict", help="With --validate: exit 1 when a cell misses the bound."),
):
    """Predict peak VRAM per backend (no GPU needed), with a verdict against the tier's memory.

    With --validate RESULTS...: compare with every measured ok GPU cell (--out writes the markdown).
    With --calibrate RESULTS...: the calibrated values they imply (--write makes them the estimator's).
    Exit codes: 0, 2 bad input or nothing fits, 1 with --strict when a cell misses the bound.
    """
    from bench.analysis.estimate import EstimateError

    try:
        if write and not calibrate:
            _fail("--write goes with --calibrate")
        if validate or calibrate:
            if not results:
                _fail("--validate / --calibrate need results JSONL files")
            if calibrate:
                return _calibrate(results, write, json_out)
            return _validate(results, out, strict, json_out)
        if results:
            _fail(f"unexpected argument {results[0]} (results files go with --validate)")
        if out is not None:
            _fail("--out goes with --validate")
        tier = _tier(gpu_tier)
        ref = _model(model)
        from bench.config.tiers import DEFAULT_MATRIX

        seqs = _sizes(seq_len, "--seq-len", ref.max_positions) if seq_len else [
            min(DEFAULT_MATRIX.get(tier.name, DEFAULT_MATRIX["t4"])["seq_lens"][0], ref.max_positions or 1 << 30)]
        batches = _sizes(batch_size, "--batch-size")
        backends = _split(backend)
        for b in backends:
            if b not in ("hf", "unsloth"):
                _fail(f"unknown backend {b!r}; known: hf, unsloth")
        if not backends:
            _fail("--backend needs at least one of hf, unsloth")
        kw = dict(lora_r=lora_r, target_modules=_split(target_modules) if target_modules else None,
                  optimizer=optimizer, gradient_checkpointing=gradient_checkpointing,
                  dtype=dtype or tier.dtype, compute_capability=tier.compute_capability)
        if max_fit:
            return _max_fit(ref, tier, backends, seqs, batches, kw, json_out, explicit_seq=seq_len is not None)
        return _estimate(ref, tier, backends, seqs, batches, kw, json_out)
    except EstimateError as exc:
        _fail(str(exc))


def _estimate(ref, tier, backends, seqs, batches, kw, json_out):
    from rich.table import Table

    from bench.cli import console, err_console
    from bench.analysis.estimate import estimate, verdict

    results = []
    for s in seqs:
        for b in batches:
            for be in backends:
                e = estimate(ref.config, be, s, b, model_name=ref.name, **kw)
                results.append((e, verdict(e.total_bytes, tier.usable_vram_bytes)))
    if json_out:
        payload = [dict(e.to_dict(), tier=tier.name, **v.to_dict()) for e, v in results]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        t = Table(title=f"{ref.name} on {tier.name} ({tier.usable_vram_bytes / 1024**3:.1f} GiB usable), "
                        f"{kw['dtype']}, LoRA r{kw['lora_r']}, {kw['optimizer']} (predicted, not measured)")
        for col in ("backend", "seq", "batch", "checkpointing", "predicted GiB", "margin GiB", "verdict", "peak phase"):
            t.add_column(col, justify="left" if col in ("backend", "checkpointing", "verdict", "peak phase") else "right")
        for e, v in results:
            t.add_row(e.backend, str(e.seq_len), str(e.batch_size), e.gradient_checkpointing, _gib(e.total_bytes),
                      f"{v.margin_bytes / 1024**3:+.2f}", "[green]fits[/]" if v.fits else "[bold red]does not fit[/]",
                      e.peak_phase)
        out = _wide(console)
        out.print(t)
        terms = []
        for e, _ in results:
            for k in e.breakdown:
                if k not in terms:
                    terms.append(k)
        bt = Table(title="breakdown at the peak (GiB)")
        bt.add_column("term")
        for e, _ in results:
            bt.add_column(f"{e.backend} s{e.seq_len} b{e.batch_size}", justify="right")
        for k in terms:
            bt.add_row(k, *[_gib(e.breakdown[k]) if k in e.breakdown else "" for e, _ in results])
        bt.add_row("[bold]total[/]", *[f"[bold]{_gib(e.total_bytes)}[/]" for e, _ in results])
        out.print(bt)
        for note in sorted({n for e, _ in results for n in e.notes}):
            console.print(f"[yellow]note:[/] {note}")
    if not any(v.fits for _, v in results):
        err_console.print(f"[bold red]error:[/] nothing fits: {ref.name} is predicted to need at least "
                          f"{min(e.total_bytes for e, _ in results) / 1024**3:.2f} GiB, more than {tier.name}'s "
                          f"{tier.usable_vram_bytes / 1024**3:.2f} GiB (try `--max-fit`)")
        raise SystemExit(2)


def _max_fit(ref, tier, backends, seqs, batches, kw, json_out, explicit_seq):
    from rich.table import Table

    from bench.cli import console
    from bench.analysis.estimate import max_fit_batch_size, max_fit_seq_len

    usable = tier.usable_vram_bytes
    rows = []
    for be in backends:
        for b in batches:
            rows.append({"backend": be, "kind": "max_seq_len", "batch_size": b,
                         "max_seq_len": max_fit_seq_len(ref.config, be, b, usable, multiple_of=64, **kw)})
        for s in seqs:
            rows.append({"backend": be, "kind": "max_batch_size", "seq_len": s,
                         "max_batch_size": max_fit_batch_size(ref.config, be, s, usable, **kw)})
    if json_out:
        sys.stdout.write(json.dumps([dict(r, model=ref.name, tier=tier.name, usable_bytes=usable) for r in rows],
                                    indent=2) + "\n")
    else:
        t = Table(title=f"largest predicted fit: {ref.name} on {tier.name} "
                        f"({usable / 1024**3:.1f} GiB usable, {kw['dtype']}, LoRA r{kw['lora_r']}, {kw['optimizer']})")
        for col in ("backend", "largest", "at", "value"):
            t.add_column(col, justify="right" if col == "value" else "left")
        for r in rows:
            if r["kind"] == "max_seq_len":
                t.add_row(r["backend"], "seq_len", f"batch {r['batch_size']}",
                          "none" if r["max_seq_len"] is None else f"{r['max_seq_len']:,}")
            else:
                t.add_row(r["backend"], "batch_size", f"seq {r['seq_len']}",
                          "none" if r["max_batch_size"] is None else f"{r['max_batch_size']:,}")
        _wide(console).print(t)
        console.print("predicted by `bench estimate`, not measured; `bench fit` measures it on a GPU")
    seq_rows = [r for r in rows if r["kind"] == "max_seq_len"]
    if all(r["max_seq_len"] is None for r in seq_rows):
        _fail(f"nothing fits: {ref.name} is predicted not to fit {tier.name} even at seq 64 with batch "
              f"{min(batches)} on any backend")


def _resolve_config(name: str) -> dict:
    from bench.config.models import resolve_model

    return resolve_model(name).config


def _calibrate(results, write, json_out):
    from bench.analysis.calibration import (CALIBRATION_PATH, CalibrationError, calibrated, calibration_document,
                                            calibration_from_records, save_calibration)
    from bench.analysis.estimate import calibration_predictor
    from bench.cli import console
    from bench.schema.store import load

    records = load(results)
    sources = [str(p) for p in results]
    try:
        document = calibration_document(calibration_from_records(records, calibration_predictor(_resolve_config)),
                                        sources)
    except CalibrationError as exc:
        _fail(str(exc))
    try:
        current = calibrated().to_values()
    except CalibrationError:
        current = None  # no readable data file yet: --write creates it
    if write:
        save_calibration(document)
    if json_out:
        sys.stdout.write(json.dumps({"from_records": document["values"], "measured": document["measured"],
                                     "in_data_file": current, "written": write}, indent=2) + "\n")
        return
    cells = len({c for ids in document["cells"]["non_torch"].values() for c in ids})
    console.print(f"from {cells} measured cells: {document['values']}")
    console.print(f"unrounded: {document['measured']}")
    console.print(f"in {CALIBRATION_PATH}: {current}")
    if write:
        console.print(f"wrote {CALIBRATION_PATH}" + (" (unchanged values)" if document["values"] == current else ""))
    elif document["values"] != current:
        console.print("[yellow]the records imply other values than the data file's[/]: "
                      "--write makes them the estimator's")


def _validate(results, out, strict, json_out):
    from rich.table import Table

    from bench.cli import console
    from bench.analysis.estimate import fit_verdicts, validate_records, validation_summary
    from bench.render.estimate import render_validation_markdown
    from bench.schema.store import load

    records = load(results)
    resolve = _resolve_config
    rows, skipped = validate_records(records, resolve)
    if not rows:
        _fail("no measured ok GPU cell in these results (cpu-mode records have no device peak)")
    sources = [str(p) for p in results]
    if out is not None:
        if out.suffix != ".md":
            _fail(f"--out {out}: use a .md file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_validation_markdown(rows, skipped, sources, fit_verdicts(records, resolve)))
    summary = validation_summary(rows)
    if json_out:
        payload = {"summary": summary, "cells": [
            dict(vars(r), error_bytes=r.error_bytes, bound_bytes=r.bound_bytes, within=r.within) for r in rows],
            "skipped": skipped}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        t = Table(title="estimator vs measured peak_device_bytes (GiB)")
        for col in ("backend", "model", "tier", "seq", "batch", "predicted", "measured", "error", "bound", "within"):
            t.add_column(col, justify="left" if col in ("backend", "model", "tier", "within") else "right")
        for r in rows:
            t.add_row(r.backend, r.model, f"{r.tier} ({r.mode})", str(r.seq_len), str(r.batch_size),
                      _gib(r.predicted_bytes), _gib(r.measured_bytes), f"{r.error_bytes / 1024**3:+.2f}",
                      _gib(r.bound_bytes), "yes" if r.within else "[bold red]NO[/]")
        _wide(console).print(t)
        for b, s in summary.items():
            console.print(f"{b}: {s['within']}/{s['cells']} cells within max(10 %, 0.5 GiB); "
                          f"max |error| {s['max_abs_error_bytes'] / 1024**3:.2f} GiB ({s['max_abs_error_pct']:.1f} %)")
        for s in skipped:
            console.print(f"[yellow]left out:[/] {s}")
        if out is not None:
            console.print(f"report: {out}")
    if strict and any(not r.within for r in rows):
        raise SystemExit(1)


def fit_command(
    from_results: bool = typer.Option(False, "--from-results", help="Only render the table from RESULTS (no GPU)."),
    results: Optional[List[Path]] = typer.Argument(None, help="With --from-results: probe JSONL files."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to search under (native or emulated)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="One shipped name, config .json or checkpoint dir."),
    backend: str = typer.Option("hf,unsloth", "--backend", help="Comma list: hf, unsloth."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch the sequence-length search runs at."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length the batch search runs at "
                                                                  "(default: the tier's first default)."),
    max_seq_len: int = typer.Option(65536, "--max-seq-len", help="Longest sequence the search may probe."),
    max_batch_size: int = typer.Option(64, "--max-batch-size", help="Largest batch the search may probe."),
    bisect_steps: int = typer.Option(1, "--bisect-steps", help="Bisection probes after the seq answer is bracketed "
                                                                "(the batch search gets one more)."),
    fresh_worker: bool = typer.Option(False, "--fresh-worker-after-failure",
                                      help="Restart the worker after every failed probe (slower: Unsloth recompiles)."),
    steps: int = typer.Option(1, "--steps", help="Timed optimizer steps per probe."),
    warmup_steps: int = typer.Option(1, "--warmup-steps", help="Untimed steps first (the peak includes them)."),
    lora_r: int = typer.Option(16, "--lora-r"),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing"),
    results_path: Optional[Path] = typer.Option(None, "--results", help="Probe records JSONL "
                                                "(default reports/results/fit-<tier>-<mode>.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the markdown table here (e.g. reports/max-fit.md)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --results, reusing the probes already in it."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Start no probe after this many seconds."),
    device: str = typer.Option("cuda", "--device", help="cuda, or cpu (smoke: nothing runs out of memory there)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Synthetic checkpoint cache."),
    cell_timeout: float = typer.Option(600.0, "--cell-timeout", help="Seconds before a probe is killed."),
    load_timeout: float = typer.Option(600.0, "--load-timeout", help="Seconds allowed for a worker to load."),
):
    """Measure the longest sequence and largest batch that train under a tier's memory, per backend.

    Every probe is a real training cell appended to --results. Exit codes: 0 done, 2 bad input,
    3 stopped by --time-budget before the searches finished (run again with --resume).
    """
    from bench.cli import console
    from bench.config.settings import RunConfig, TrainSettings
    from bench.analysis.fit import estimator_seeds, max_fit_rows
    from bench.config.tiers import DEFAULT_MATRIX
    from bench.render.fit import render_max_fit_markdown
    from bench.run.fit import FitError, run_fit
    from bench.run.device import detect_host_gpu

    def seq_for(tier_name: str) -> int:
        return seq_len or DEFAULT_MATRIX.get(tier_name, DEFAULT_MATRIX["t4"])["seq_lens"][0]

    if out is not None and out.suffix != ".md":
        _fail(f"--out {out}: use a .md file name")
    if from_results:
        if not results:
            _fail("--from-results needs probe JSONL files")
        from bench.schema.store import load

        records = load(results)
        rows = max_fit_rows(records, lambda t: batch_size, seq_for)
        _print_fit(rows, console)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_max_fit_markdown(rows, [str(p) for p in results]))
            console.print(f"report: {out}")
        return
    if results:
        _fail(f"unexpected argument {results[0]} (probe files go with --from-results)")
    host = detect_host_gpu() if device == "cuda" else None
    tier = _tier(gpu_tier) if gpu_tier or host else _fail("--gpu-tier is needed: no GPU detected here")
    ref = _model(model)
    for name, v in (("--batch-size", batch_size), ("--max-seq-len", max_seq_len), ("--max-batch-size", max_batch_size),
                    ("--bisect-steps", bisect_steps + 1)):
        if v <= 0:
            _fail(f"{name} must be > 0")
    s0 = seq_for(tier.name)
    if ref.max_positions and s0 > ref.max_positions:
        _fail(f"--seq-len {s0} is over {ref.name}'s {ref.max_positions:,} positions")
    train = TrainSettings(lora_r=lora_r, optimizer=optimizer, steps=steps, warmup_steps=warmup_steps,
                          gradient_checkpointing=gradient_checkpointing)
    config = RunConfig(tier=tier.name, models=[model], backends=_split(backend), seq_lens=[s0],
                       batch_sizes=[batch_size], train=train, device=device, cell_timeout_s=cell_timeout,
                       load_timeout_s=load_timeout,
                       fast_paths=False)  # the fit needs peaks, not the kernel summary (one profiled step less)
    config.validate()
    from bench.run.launcher import make_plan

    mode = make_plan(config, host=host, detect=False).tier_plan.mode
    path = results_path or Path("reports/results") / f"fit-{tier.name}-{mode}.jsonl"
    console.print(f"[bold]bench fit[/] {ref.name} on {tier.name} ({mode}): seq search at batch {batch_size} "
                  f"(up to {max_seq_len:,}), batch search at seq {s0} (up to {max_batch_size}); probes -> {path}")

    def on_probe(backend_name, p):
        verdict = "[green]fits[/]" if p.fits else f"[yellow]{p.status if p.status != 'ok' else 'over tier memory'}[/]"
        peak = f"device {_gib(p.peak_device_bytes)} GiB" if p.peak_device_bytes else ""
        console.print(f"  probe {backend_name:<7} seq {p.seq_len:>6} batch {p.batch_size:>3}: {verdict} {peak}"
                      + (" (recorded earlier)" if p.reused else ""))

    from bench.run.launcher import Callbacks

    def on_status(cell, text):
        if text.startswith(("starting", "loading", "writing")):
            console.print(f"  {cell.backend} seq {cell.seq_len} batch {cell.batch_size}: {text}")

    try:
        outcomes = run_fit(config, path, batch_size=batch_size, seq_len=s0, max_seq_len=max_seq_len,
                           seeds=estimator_seeds, callbacks=Callbacks(on_status=on_status),
                           max_batch_size=max_batch_size, resume=resume, cache_dir=cache_dir, host=host,
                           time_budget_s=time_budget, max_bisect_steps=bisect_steps, on_probe=on_probe,
                           fresh_after_failure=fresh_worker)
    except FitError as exc:
        _fail(str(exc))
    budget_stop = False
    for o in outcomes:
        for what, res in (("seq", o.seq), ("batch", o.batch)):
            if res.stopped:
                console.print(f"[yellow]{o.backend} {what} search stopped:[/] {res.stopped}")
                budget_stop = budget_stop or res.stopped.startswith("time budget")
    from bench.schema.store import load

    records = load([path], allow_empty=True) if path.exists() else []
    rows = max_fit_rows(records, lambda t: batch_size, seq_for)
    _print_fit(rows, console)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_max_fit_markdown(rows, [str(path)]))
        console.print(f"report: {out}")
    if budget_stop:
        console.print("fit incomplete: run the same command again with --resume to continue")
        raise SystemExit(3)
    console.print("fit complete")


def _print_fit(rows, console) -> None:
    from rich.table import Table

    t = Table(title="longest context and largest batch per tier (measured)")
    for col in ("tier", "mode", "backend", "model", "max seq", "first failing seq", "predicted", "max batch",
                "first failing batch", "predicted", "probes"):
        t.add_column(col)
    for r in rows:
        def num(x):
            return "-" if x is None else f"{x:,}"

        t.add_row(r.tier, r.mode, r.backend, r.model, f"{num(r.max_seq_len)} @b{r.batch_size}",
                  "none" if r.seq_fail is None else f"{r.seq_fail:,} ({r.seq_fail_status})", num(r.predicted_max_seq_len),
                  f"{num(r.max_batch_size)} @s{r.seq_len}",
                  "none" if r.batch_fail is None else f"{r.batch_fail:,} ({r.batch_fail_status})",
                  num(r.predicted_max_batch_size), str(r.probes))
    _wide(console).print(t)


def doctor_command(
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Advise for this tier (default: the present GPU's)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model the advice is about."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length of the advice (default: tier's)."),
    batch_size: int = typer.Option(1, "--batch-size"),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """This machine: GPU, compute capability, bf16/fp8, driver, libraries; then concrete advice."""
    from rich.markup import escape

    from bench.cli import console
    from bench.analysis.doctor import diagnose
    from bench.run.env import package_versions
    from bench.config.tiers import get_tier
    from bench.run.device import detect_host_gpu

    tier = get_tier(gpu_tier) if gpu_tier else None
    ref = _model(model)
    if seq_len is not None:
        _sizes(str(seq_len), "--seq-len", ref.max_positions)
    if batch_size <= 0:
        _fail("--batch-size must be > 0")
    host = detect_host_gpu()
    torch_cuda = _torch_cuda_build()
    report = diagnose(host, package_versions(), tier=tier, tier_source="--gpu-tier" if tier else None, model=ref.name,
                      seq_len=seq_len, batch_size=batch_size, torch_cuda=torch_cuda)
    if json_out:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        return
    out = _wide(console)
    if report.gpu:
        g = report.gpu
        out.print(f"[bold]GPU[/]: {g['name']}, {g['total_memory_bytes'] / 1024**3:.1f} GiB, compute capability "
                  f"{g['compute_capability']}, driver {g['driver']}")
    for n in report.notes:
        out.print(f"[yellow]{escape(n)}[/]")
    if report.tier:
        caps = report.capabilities
        out.print(f"[bold]tier[/]: {report.tier} ({report.tier_source}); bf16 {'yes' if caps['bf16'] else 'no'}, "
                  f"fp8 {'yes' if caps['fp8'] else 'no'}, flash-attention 2 {'yes' if caps['flash_attention_2'] else 'no'}")
    vers = ", ".join(f"{k} {v or '-'}" for k, v in report.versions.items())
    out.print(f"[bold]libraries[/]: {escape(vers)}", soft_wrap=True)
    c = report.combo
    if c.ok:
        out.print(f"[green]known-good combination[/]: {c.matches}")
    else:
        diffs = "; ".join(f"{k} {have or '-'} (known good {want})" for k, (have, want) in c.mismatches.items())
        miss = ", ".join(c.missing)
        out.print(f"[yellow]not a known-good combination[/] (closest: {c.closest})"
                  + (f": {escape(diffs)}" if diffs else "") + (f"; not installed: {miss}" if miss else ""))
    if report.advice:
        from rich.table import Table

        t = Table(title=f"advice for {report.tier}: {report.model}, seq {report.seq_len}, batch {report.batch_size} "
                        "(numbers from bench estimate: predicted, not measured)")
        t.add_column("topic")
        t.add_column("advice")
        t.add_column("backed by")
        for a in report.advice:
            t.add_row(a.topic, escape(a.text), escape(a.evidence))
        out.print(t)


def _torch_cuda_build() -> Optional[str]:
    """torch's CUDA build (torch.version.cuda) read from torch/version.py without importing torch."""
    import re
    from importlib.util import find_spec

    try:
        spec = find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except (OSError, ImportError, ValueError):
        return None
    m = re.search(r"^cuda(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return m.group(1) if m else None


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)
    app.command("fit")(fit_command)
    app.command("doctor")(doctor_command)

"""`bench estimate`: will it fit (analytical, no GPU), checked against measured cells and calibrated.

Thin over bench.analysis.estimate (the estimator, per recipe), bench.analysis.calibration (its measured values,
bench/data/calibration.json) and bench.render.estimate. Bad input (unknown model / tier, sizes
<= 0 or over the model's positions, a configuration that fits nothing) prints one red line and
exits 2. The argument checks here are shared by `bench fit` and `bench doctor`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, NoReturn, Optional

import typer

from bench.analysis.calibration import (
    CALIBRATION_PATH,
    CalibrationError,
    calibrated,
    calibration_document,
    calibration_from_records,
    save_calibration,
)
from bench.analysis.doctor import DEFAULT_MODEL
from bench.analysis.estimate import (
    EstimateError,
    SplitRuleError,
    architecture_resolver,
    breakdown_by_component,
    calibration_predictor,
    coverage,
    coverage_gaps,
    estimate_grid,
    fit_verdicts,
    model_shape,
    out_of_sample,
    parse_split_rule,
    predicted_limits,
    split_records,
    unmeasured_recipes,
    validation_summary,
)
from bench.cli.common import UsageFailure, check_writable, console, err_console, wide_console
from bench.config.models import ModelRef, resolve_model
from bench.config.recipes import DEFAULT_RECIPES, DRIVERS
from bench.config.request import RunRequest, recipes_of
from bench.config.settings import ConfigError, parse_int_list
from bench.config.tiers import GpuTier, default_seq_len, get_tier
from bench.render.estimate import (
    estimate_tables,
    limits_table,
    render_validation_markdown,
    validation_console_lines,
    validation_table,
)
from bench.run.device import detect_host_gpu
from bench.schema.store import load
from bench.units import GiB

#: `bench estimate --max-fit` reports sequence lengths in multiples of this (tokens).
MAX_FIT_SEQ_MULTIPLE = 64


def fail(message: str) -> NoReturn:
    """Bad input: one red line, exit code 2."""
    raise UsageFailure(message)


def split_list(text: str) -> list[str]:
    """'q_proj, v_proj' -> ['q_proj', 'v_proj']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def checked_recipes(recipe: Optional[str], backend: Optional[str], driver: str,
                    device: str = "cuda") -> tuple[list[str], str]:
    """(recipes, driver) of --recipe / the older --backend / --driver, as `bench run` reads them
    (bench.config.request.recipes_of: --backend hf,unsloth is hf-kbit,unsloth with the loop driver;
    neither: the default recipes); exit 2 on an unknown name."""
    if driver not in DRIVERS:
        fail(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
    try:
        return recipes_of(RunRequest(tier="", device=device, recipe=recipe, backend=backend, driver=driver))
    except ConfigError as exc:
        fail(str(exc))


def tier_or_detected(name: Optional[str]) -> GpuTier:
    """The named tier, or the present GPU's; exit 2 when neither exists."""
    if name:
        return get_tier(name)
    host = detect_host_gpu()
    if host is None or host.tier is None:
        fail("--gpu-tier is needed: no known GPU detected here (see `bench tiers`)")
    return host.tier


def checked_model(spec: str) -> ModelRef:
    """The model `spec` names, with shapes the estimator can read; exit 2 otherwise."""
    ref = resolve_model(spec)
    try:
        model_shape(ref.config)
    except EstimateError as exc:
        fail(f"model {spec!r}: {exc}")
    return ref


def checked_sizes(text: str, name: str, max_value: Optional[int] = None) -> list[int]:
    """A comma list of sizes for option `name`, each > 0 and at most `max_value`; exit 2 otherwise."""
    values = parse_int_list(text, name)
    for v in values:
        if v <= 0:
            fail(f"{name} must be > 0, got {v}")
        if max_value is not None and v > max_value:
            fail(f"{name} {v} is over the model's {max_value:,} positions")
        if v > 1 << 24:
            fail(f"{name} {v} is absurdly large")
    return values


def estimate_command(
    results: Optional[List[Path]] = typer.Argument(None, help="With --validate / --calibrate: results JSONL files."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Shipped name or config .json (or checkpoint dir)."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to judge the fit against (default: this GPU's)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help=f"Comma list of recipes (`bench recipes`); default "
                                         f"{','.join(DEFAULT_RECIPES)}."),
    driver: str = typer.Option("trainer", "--driver", help="trainer (TRL's SFTTrainer) | loop: what trains the cell."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Before recipes: hf, unsloth (= --recipe "
                                          "hf-kbit,unsloth --driver loop)."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="Comma list (default: the tier's first default)."),
    batch_size: str = typer.Option("1", "--batch-size", help="Comma list of micro-batch sizes."),
    lora_r: int = typer.Option(16, "--lora-r"),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma list (default: every projection)."),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer",
                                  help="adamw_8bit | paged_adamw_8bit | adamw_torch | paged_adamw_32bit"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing",
                                               help="auto (the recipe's own) | none | standard | unsloth"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16 | float16 (default: the tier's)."),
    max_fit: bool = typer.Option(False, "--max-fit", help="Largest seq (at each batch) and batch (at each seq) predicted to fit."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout (nothing else)."),
    validate: bool = typer.Option(False, "--validate", help="Calibrate on RESULTS and compare with every measured "
                                  "cell; --validate-on / --hold-out hold cells out of the fit."),
    validate_on: Optional[List[Path]] = typer.Option(None, "--validate-on", help="With --validate: a results file "
                                                     "whose cells are held out (repeatable)."),
    hold_out: Optional[List[str]] = typer.Option(None, "--hold-out", help="With --validate: hold out the cells of "
                                                 "RESULTS matching KEY=V1,V2 | KEY>=N | KEY<=N (keys: model, "
                                                 "architecture, recipe, family, tier, mode, driver, dtype, optimizer, "
                                                 "gpu, seq_len, batch_size, tokens, lora_r; repeatable, any matches)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Print the calibrated values RESULTS imply."),
    write: bool = typer.Option(False, "--write", help="With --calibrate: write them to bench/data/calibration.json."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --validate: write the markdown table here."),
    strict: bool = typer.Option(False, "--strict", help="With --validate: exit 1 when a cell misses the bound."),
):
    """Predict peak VRAM per recipe (no GPU needed), with a verdict against the tier's memory.

    With --validate RESULTS...: calibrate on RESULTS' cells and compare with every measured GPU cell; cells of
    --validate-on files and cells matching --hold-out rules are held out of the fit, and their errors are
    reported apart (--out writes the markdown). OOM and cap-pinned cells are left out, and said so.
    With --calibrate RESULTS...: the calibrated values they imply (--write makes them the estimator's).
    Exit codes: 0 done (something fits); 1 nothing fits (a verdict, not an error), or with --validate
    --strict a cell misses the accuracy bound; 2 bad input.
    """
    check_writable(out, "--out")
    try:
        if write and not calibrate:
            fail("--write goes with --calibrate")
        if (validate_on or hold_out) and not validate:
            fail("--validate-on / --hold-out go with --validate")
        if validate or calibrate:
            if not results:
                fail("--validate / --calibrate need results JSONL files")
            if calibrate:
                return _calibrate(results, write, json_out)
            return _validate(results, list(validate_on or []), list(hold_out or []), out, strict, json_out)
        if results:
            fail(f"unexpected argument {results[0]} (results files go with --validate)")
        if out is not None:
            fail("--out goes with --validate")
        tier = tier_or_detected(gpu_tier)
        if dtype == "bfloat16" and not tier.supports_bf16:
            fail(f"--dtype bfloat16: a {tier.name} has no bf16 (it trains in {tier.dtype}); drop --dtype")
        ref = checked_model(model)
        seqs = checked_sizes(seq_len, "--seq-len", ref.max_positions) if seq_len else [
            min(default_seq_len(tier.name), ref.max_positions or 1 << 30)]
        batches = checked_sizes(batch_size, "--batch-size")
        recipes, driver = checked_recipes(recipe, backend, driver)
        settings = dict(driver=driver, lora_r=lora_r,
                        target_modules=split_list(target_modules) if target_modules else None,
                        optimizer=optimizer, gradient_checkpointing=gradient_checkpointing,
                        dtype=dtype or tier.dtype, compute_capability=tier.compute_capability)
        if max_fit:
            return _max_fit(ref, tier, recipes, seqs, batches, settings, json_out)
        return _estimate(ref, tier, recipes, seqs, batches, settings, json_out)
    except EstimateError as exc:
        fail(str(exc))


def _estimate(ref: ModelRef, tier: GpuTier, recipes, seqs, batches, settings: dict, json_out: bool) -> None:
    results = estimate_grid(ref.config, recipes, seqs, batches, tier.memory_cap_bytes, model_name=ref.name,
                            **settings)
    if json_out:
        payload = [dict(e.to_dict(), tier=tier.name, components=breakdown_by_component(e), **v.to_dict())
                   for e, v in results]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        out = wide_console(console)
        for table in estimate_tables(ref.name, tier, settings, results):
            out.print(table)
        for note in sorted({n for e, _ in results for n in e.notes}):
            console.print(f"[yellow]note:[/] {note}")
    if not any(v.fits for _, v in results):
        err_console.print(f"[bold red]error:[/] nothing fits: {ref.name} is predicted to need at least "
                          f"{min(e.total_bytes for e, _ in results) / GiB:.2f} GiB, more than {tier.name}'s "
                          f"{tier.memory_cap_bytes / GiB:.2f} GiB (try `--max-fit`)")
        raise SystemExit(1)


def _max_fit(ref: ModelRef, tier: GpuTier, recipes, seqs, batches, settings: dict, json_out: bool) -> None:
    usable = tier.memory_cap_bytes
    rows = predicted_limits(ref.config, recipes, seqs, batches, usable, seq_multiple=MAX_FIT_SEQ_MULTIPLE,
                            **settings)
    if json_out:
        sys.stdout.write(json.dumps([dict(r, driver=settings["driver"], model=ref.name, tier=tier.name,
                                          usable_bytes=usable) for r in rows], indent=2) + "\n")
    else:
        wide_console(console).print(limits_table(ref.name, tier, settings, rows))
        console.print("predicted by `bench estimate`, not measured; `bench fit` measures it on a GPU")
    if all(r["max_seq_len"] is None for r in rows if r["kind"] == "max_seq_len"):
        err_console.print(f"[bold red]nothing fits:[/] {ref.name} is predicted not to fit {tier.name} even at seq "
                          f"{MAX_FIT_SEQ_MULTIPLE} with batch {min(batches)} with any recipe")
        raise SystemExit(1)


def _resolve_config(name: str) -> dict:
    return resolve_model(name).config


def _calibrate(results: list[Path], write: bool, json_out: bool) -> None:
    records = load(results)
    sources = [str(p) for p in results]
    try:
        document = calibration_document(calibration_from_records(records, calibration_predictor(_resolve_config)),
                                        sources)
    except CalibrationError as exc:
        fail(str(exc))
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


def validation_command(results: list[Path], validate_on: list[Path], hold_out: list[str]) -> str:
    """The `bench estimate --validate ...` line that reproduces a validation (written into its report)."""
    return " ".join(["bench estimate --validate", *map(str, results), *[f"--validate-on {p}" for p in validate_on],
                     *[f"--hold-out {r}" for r in hold_out]])


def _validate(results: list[Path], validate_on: list[Path], hold_out: list[str], out: Optional[Path], strict: bool,
              json_out: bool) -> None:
    try:
        rules = [parse_split_rule(text) for text in hold_out]
    except SplitRuleError as exc:
        fail(str(exc))
    calibration_records, held_out_records = load(results), load(validate_on) if validate_on else []
    split = split_records(calibration_records, held_out_records, rules, architecture_resolver(_resolve_config))
    if not split.calibration:
        fail("no measured ok GPU cell to calibrate on in these results (cpu-mode records have no device peak; "
             "OOM and cap-pinned cells are left out)")
    try:
        result = out_of_sample(split, _resolve_config)
    except CalibrationError as exc:
        fail(f"the calibration set cannot calibrate the estimator: {exc}")
    if out is not None:
        if out.suffix != ".md":
            fail(f"--out {out}: use a .md file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        verdicts = fit_verdicts(calibration_records + held_out_records, _resolve_config, result.calibration)
        out.write_text(render_validation_markdown(result, validation_command(results, validate_on, hold_out),
                                                  verdicts))
    if json_out:
        sys.stdout.write(json.dumps(_validation_payload(result), indent=2) + "\n")
    else:
        wide = wide_console(console)
        for name, rows in (("in-sample (calibration set)", result.in_sample), ("held-out", result.held_out)):
            if rows:
                wide.print(validation_table(rows, f"{name}: estimator vs measured peak_device_bytes (GiB)"))
        for line in validation_console_lines(result):
            console.print(line)
        if out is not None:
            console.print(f"report: {out}")
    if strict and any(not r.within for r in result.in_sample + result.held_out):
        raise SystemExit(1)


def _validation_payload(result) -> dict:
    """`bench estimate --validate --json`: the split, the calibration fitted, the errors per set."""
    def cells(rows):
        return [dict(vars(r), error_bytes=r.error_bytes, error_pct=r.error_pct, errs_low=r.errs_low,
                     bound_bytes=r.bound_bytes, within=r.within) for r in rows]

    return {"calibration": result.calibration.to_values(),
            "rules": [str(r) for r in result.split.rules],
            "summary": {"in_sample": validation_summary(result.in_sample),
                        "held_out": validation_summary(result.held_out)},
            "in_sample": cells(result.in_sample), "held_out": cells(result.held_out),
            "left_out": [vars(x) for x in result.split.left_out],
            "left_out_counts": result.split.left_out_counts(),
            "coverage": {"in_sample": coverage(result.in_sample), "held_out": coverage(result.held_out),
                         "not_covered": coverage_gaps(result)},
            "unmeasured_recipes": unmeasured_recipes(result.in_sample + result.held_out),
            "skipped": result.skipped}


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)

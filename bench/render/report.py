"""`bench report`: results files -> a report model -> markdown (or HTML) with PNG plots beside it.

Everything in the report comes from the records: no figure is typed in, nothing depends on the
time of rendering, so the same inputs give byte-identical markdown. Records are grouped by
environment (tier, mode, host GPU): records from different GPUs are never merged into one table
or one pair. Every figure carries a cell reference (c1, c2, ...) that the appendix resolves to a
cell id and the results file it came from.

Pipeline: `load_results(paths)` -> `build_report(results, out)` -> `render_markdown(doc.blocks)`
(or `render_html`) and `plots.write_plot(spec)` for each plot; `render_to_file` does all of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from bench.analysis import metrics as measure
from bench.analysis.claims import claims_results, ran_unsloth_kernels
from bench.render.claims import claims_blocks
from bench.render.blocks import Block, Bullets, Heading, Image, Note, Para, Raw, Table, render_html, render_markdown
from bench.render.text import first_line, fmt as fnum, gib, link, md_escape, pct, plural, short_gpu, slug, usd
from bench.schema.record import ResultRecord, ResultsError
from bench.schema.key import MEMORY_FIELDS, TABLE_FIELDS, CellKey
from bench.schema.pairs import Pair, pair_records
from bench.schema.store import hosts_of, latest_indexes, propagate_parity, read_records
from bench.units import GiB
BACKEND_LABEL = {"hf": "HF", "unsloth": "Unsloth"}
MODE_ORDER = {"native": 0, "emulated": 1, "cpu": 2}
CORE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "unsloth", "unsloth_zoo",
                 "triton")
FORMATS = ("md", "html")


# =============================================================================================
# Loading: files -> entries -> environment groups -> pairs
# =============================================================================================
@dataclass
class Entry:
    """One record with where it came from and its reference in the report."""

    record: ResultRecord
    path: Path  # results file, as given
    order: int  # position over all inputs (files in argument order, lines in order)
    host: str  # host GPU name; "CPU" in cpu mode
    ref: str = ""  # "c1", "c2", ... (assigned after sorting)


@dataclass
class Group:
    """Records of one tier, mode and host GPU: one environment block, its own tables."""

    tier: str
    mode: str
    host: str
    entries: list[Entry] = field(default_factory=list)
    pairs: list[Pair[Entry]] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.mode == "native":
            return f"{self.tier} (native {self.host})"
        if self.mode == "emulated":
            return f"{self.tier} (emulated on {self.host})"
        return f"{self.tier} (CPU smoke mode)"

    @property
    def slug(self) -> str:
        host = "" if self.mode == "cpu" else "-" + slug(short_gpu(self.host))
        return f"{self.tier}-{self.mode}{host}"

    @property
    def models(self) -> list[str]:
        return sorted({e.record.model for e in self.entries})


@dataclass
class Results:
    paths: list[Path]
    groups: list[Group]
    superseded: int  # records replaced by a later record of the same cell on the same host
    split_pairs: list[str]  # pair keys whose two sides were measured on different hosts

    @property
    def entries(self) -> list[Entry]:
        return [e for g in self.groups for e in g.entries]


def load_results(paths: Sequence[Union[str, Path]]) -> Results:
    """Read results files into environment groups; raise ResultsError on bad input.

    Bad input (exit 2 at the CLI): no file, an unreadable or empty file, invalid JSON, a record of
    another schema version (read_records names file and line). Records of different host GPUs
    are kept apart; within one host the last record of a cell wins (a resumed run re-measures).
    """
    if not paths:
        raise ResultsError("no results files given")
    unique: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            raise ResultsError(f"{p} is a directory: pass the .jsonl results files in it")
        if all(p.resolve() != q.resolve() for q in unique):
            unique.append(p)
    raw: list[tuple[ResultRecord, Path]] = []
    for p in unique:
        records = read_records(p)
        if not records:
            raise ResultsError(f"results file {p} holds no records")
        raw.extend((r, p) for r in records)

    records = [r for r, _ in raw]
    hosts = hosts_of(records)
    latest = {i: Entry(raw[i][0], raw[i][1], i, hosts[i]) for i in latest_indexes(records)}
    superseded = len(raw) - len(latest)

    groups: dict[tuple, Group] = {}
    for e in sorted(latest.values(), key=lambda e: e.order):
        key = (e.record.tier, e.record.mode, e.host)
        groups.setdefault(key, Group(*key)).entries.append(e)
    ordered = sorted(groups.values(), key=lambda g: (_tier_rank(g.tier), MODE_ORDER.get(g.mode, 9), g.host))
    for g in ordered:
        propagate_parity([e.record for e in g.entries])
        g.entries.sort(key=_entry_sort_key)
        g.pairs = pair_records(g.entries)
    n = 0
    for g in ordered:
        for e in g.entries:
            n += 1
            e.ref = f"c{n}"
    hosts: dict[str, dict[str, set]] = {}
    for g in ordered:
        for e in g.entries:
            hosts.setdefault(e.record.pair_key, {}).setdefault(e.record.backend, set()).add(g.host)
    split = sorted(k for k, by in hosts.items() if len(by) == 2 and by.get("hf") != by.get("unsloth"))
    return Results(unique, ordered, superseded, split)


def _tier_rank(tier: str) -> tuple:
    from bench.config.tiers import TIERS

    names = list(TIERS)
    return (names.index(tier), tier) if tier in names else (len(names), tier)


def settings_key(r: ResultRecord) -> tuple:
    """Everything but the backend's own checkpointing that must match for rows to share a table."""
    return CellKey.of(r).values(TABLE_FIELDS)


#: The settings that change memory use: cells that differ in one of these are different recipes
#: for a fit verdict (steps, seed and learning rate do not change the peak).
RECIPE_FIELDS = MEMORY_FIELDS


def memory_recipe(r: ResultRecord) -> tuple:
    return CellKey.of(r).values(f for f, _ in MEMORY_FIELDS)


def recipe_views(group: Group) -> list[tuple[str, str, Group]]:
    """(model, label, view) per model and memory recipe of a group.

    With one recipe per model (the usual run) the view is the group itself and the label is the
    model name. With several (a LoRA rank 16 run beside a rank 64 one, say) each recipe gets its
    own view, labelled with the fields that differ, so that a fit verdict or a recommendation
    never rests on a cell of another recipe.
    """
    out = []
    for model in group.models:
        mine = [e for e in group.entries if e.record.model == model]
        recipes = sorted({memory_recipe(e.record) for e in mine}, key=repr)
        if len(recipes) == 1:
            out.append((model, model, group))
            continue
        differing = [i for i in range(len(RECIPE_FIELDS)) if len({rc[i] for rc in recipes}) > 1]
        for rc in recipes:
            label = ", ".join(f"{RECIPE_FIELDS[i][1]} {', '.join(rc[i]) if isinstance(rc[i], tuple) else rc[i]}"
                              for i in differing)
            entries = [e for e in mine if memory_recipe(e.record) == rc]
            keys = {e.record.pair_key for e in entries}
            view = Group(group.tier, group.mode, group.host, entries, [p for p in group.pairs if p.pair_key in keys])
            out.append((model, f"{model} ({label})", view))
    return out


def _entry_sort_key(e: Entry) -> tuple:
    r = e.record
    return (r.model, repr(settings_key(r)), r.seq_len, r.batch_size, r.pair_key, 0 if r.backend == "hf" else 1)


# =============================================================================================
# Formatting helpers (pure)
# =============================================================================================
def cost_per_million_tokens(price_per_hour_usd: float, tokens_per_s: Optional[float]) -> Optional[float]:
    """USD per 1M trained tokens at `tokens_per_s`: price_per_hour / (tokens_per_s * 3600) * 1e6."""
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return price_per_hour_usd / (tokens_per_s * 3600.0) * 1e6


def fits(r: ResultRecord) -> bool:
    """The cell ran and stayed within the tier's memory (`ResultRecord.fits_tier`)."""
    return r.fits_tier


def status_text(r: ResultRecord) -> str:
    """A cell's outcome in words: 'ok', 'OOM at 15.00 GiB cap', 'skipped: ...', 'error: ...'."""
    if r.status == "ok":
        if r.over_tier_memory:
            return (f"ok, but device peak {gib(r.peak_device_bytes)} GiB exceeded the {r.tier} memory: "
                    f"a real {r.tier} would likely run out of memory")
        return "ok"
    if r.status == "oom":
        where = " while loading" if (r.error or "").startswith("load failed") else ""
        if r.memory_limit_bytes:
            return f"OOM at {r.memory_limit_bytes / GiB:.2f} GiB cap{where}"
        if r.mode == "native":
            from bench.config.tiers import TIERS

            tier = TIERS.get(r.tier)
            size = f" on the {tier.usable_vram_bytes / GiB:.2f} GiB card" if tier else ""
            return f"OOM{size}{where}"
        return f"OOM{where}"
    if r.status == "skipped":
        m = re.search(r"at least as large as (\S+?),? which ran out of memory", r.error or "")
        if m:
            return f"skipped: not run, at least as large as {_cell_short(m.group(1))}, which ran out of memory"
        return "skipped: " + first_line(r.error, 120)
    return f"{r.status}: " + first_line(r.error, 120)


def _cell_short(cell_id: str) -> str:
    m = re.search(r"-s(\d+)-b(\d+)-[0-9a-f]+-(hf|unsloth)$", cell_id)
    return f"{BACKEND_LABEL[m.group(3)]} s{m.group(1)} b{m.group(2)}" if m else cell_id


def parity_text(p: Pair[Entry]) -> str:
    if not (p.hf and p.unsloth):
        return "-"
    if not p.both_ok:
        return "n/a (a side did not finish)"
    if p.matched is True:
        return "matched"
    if p.matched is False:
        reasons = "; ".join(p.parity_reasons()) or "no reason recorded"
        return f"**NOT MATCHED**: {md_escape(reasons)}"
    return "not checked"


# =============================================================================================
# Building the report
# =============================================================================================
@dataclass
class Report:
    title: str
    blocks: list[Block]
    plots: list[Any]  # plots.VramPlot | plots.ThroughputPlot, paths relative to the report's folder


@dataclass
class TableSpec:
    """One comparison table: a model under one set of training settings in one group."""

    group: Group
    model: str
    settings: tuple
    pairs: list[Pair[Entry]]
    index: int  # among the model's tables in the group (plot names)
    total: int

    @property
    def records(self) -> list[ResultRecord]:
        return [e.record for p in self.pairs for e in (p.hf, p.unsloth) if e]

    @property
    def backends(self) -> list[str]:
        return [b for b in ("hf", "unsloth") if any(r.backend == b for r in self.records)]


def table_specs(group: Group) -> list[TableSpec]:
    by_key: dict[tuple, list[Pair[Entry]]] = {}
    for p in group.pairs:
        r = p.any.record
        by_key.setdefault((r.model, settings_key(r)), []).append(p)
    specs: list[TableSpec] = []
    for model in group.models:
        keys = sorted((k for k in by_key if k[0] == model), key=repr)
        for i, key in enumerate(keys):
            pairs = sorted(by_key[key], key=lambda p: (p.any.record.seq_len, p.any.record.batch_size, p.pair_key))
            specs.append(TableSpec(group, model, key[1], pairs, i, len(keys)))
    return specs


def settings_text(spec: TableSpec) -> str:
    r = spec.records[0]
    ckpt = ", ".join(f"{BACKEND_LABEL[b]} {next(x.gradient_checkpointing for x in spec.records if x.backend == b)}"
                     for b in spec.backends)
    return (f"LoRA r {r.lora_r}, alpha {r.lora_alpha}, dropout {r.lora_dropout:g} on {', '.join(r.target_modules)}; "
            f"optimizer {r.optimizer}, lr {r.learning_rate:g}; dtype {r.dtype}; attention {r.attn_implementation}; "
            f"grad-accum {r.grad_accum}; {r.warmup_steps} untimed + {r.steps} timed steps; seed {r.seed}; "
            f"gradient checkpointing: {ckpt}")


def comparison_frame(results: Results):
    """One row per pair (numbers, not text): a pandas DataFrame for notebooks and further analysis."""
    import pandas as pd

    rows = []
    for g in results.groups:
        for p in g.pairs:
            r = p.any.record
            row: dict[str, Any] = {"tier": g.tier, "mode": g.mode, "host_gpu": g.host, "model": r.model,
                                   "seq_len": r.seq_len, "batch_size": r.batch_size, "pair_key": p.pair_key}
            for b, e in (("hf", p.hf), ("unsloth", p.unsloth)):
                rec = e.record if e else None
                row[f"{b}_ref"] = e.ref if e else None
                row[f"{b}_status"] = rec.status if rec else None
                for f in ("peak_allocated_bytes", "peak_device_bytes", "peak_rss_bytes", "tokens_per_s",
                          "first_step_s", "mfu"):
                    row[f"{b}_{f}"] = getattr(rec, f) if rec else None
            row["matched"] = p.matched
            row["speedup"] = p.speedup
            row["memory_reduction_device"] = p.memory_reduction("peak_device_bytes")
            row["memory_reduction_allocated"] = p.memory_reduction("peak_allocated_bytes")
            rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def comparison_table(spec: TableSpec) -> Table:
    """Rows per (seq_len, batch): HF and Unsloth side by side, speed-up and saving from matched pairs only."""
    cpu = spec.group.mode == "cpu"
    backends = spec.backends
    both = len(backends) == 2
    header = ["seq_len", "batch", "status"]
    metrics = ([("peak_rss_bytes", "peak RSS GiB", gib)] if cpu else
               [("peak_allocated_bytes", "peak alloc GiB", gib), ("peak_device_bytes", "peak device GiB", gib)])
    metrics += [("tokens_per_s", "tokens/s", lambda x: fnum(x, ",.0f")),
                ("first_step_s", "first step s", lambda x: fnum(x, ".1f"))]
    if not cpu:
        metrics.append(("mfu", "MFU", lambda x: fnum(None if x is None else x * 100, ".1f", " %")))
    for _, label, _ in metrics:
        header += [f"{BACKEND_LABEL[b]} {label}" for b in backends]
    if both:
        header += ["speed-up", "memory saved (device / alloc)", "parity"]
    header.append("cells")
    rows = []
    for p in spec.pairs:
        r = p.any.record
        sides = {"hf": p.hf, "unsloth": p.unsloth}
        states = {b: (status_text(e.record) if e else "not measured") for b, e in sides.items() if b in backends}
        if all(s == "ok" for s in states.values()):
            status = "ok"
        else:
            status = "; ".join(f"{BACKEND_LABEL[b]}: {md_escape(s)}" for b, s in states.items())
        row = [str(r.seq_len), str(r.batch_size), status]
        for fld, _, fmt in metrics:
            for b in backends:
                e = sides[b]
                row.append(fmt(getattr(e.record, fld)) if e and e.record.ok else "-")
        if both:
            if p.comparable:
                dev, alloc = p.memory_reduction("peak_device_bytes"), p.memory_reduction("peak_allocated_bytes")
                row += [fnum(p.speedup, ".2f", "x"), f"{pct(dev)} / {pct(alloc)}"]
            elif p.both_ok:
                row += ["- (not matched)", "- (not matched)"]
            else:
                row += ["-", "-"]
            row.append(parity_text(p))
        row.append(", ".join(link(e.ref) for e in (p.hf, p.unsloth) if e))
        rows.append(row)
    right = {i for i, h in enumerate(header) if h not in ("status", "parity", "cells")}
    return Table(header, rows, right)


# -- environment ---------------------------------------------------------------------------------
def _values(entries: Sequence[Entry], getter) -> list[str]:
    seen: list[str] = []
    for e in entries:
        v = getter(e.record)
        v = "-" if v in (None, "") else str(v)
        if v not in seen:
            seen.append(v)
    real = [v for v in seen if v != "-"]
    return sorted(real) if real else ["-"]


def _joined(values: list[str]) -> str:
    return values[0] if len(values) == 1 else " / ".join(values) + " (differs between records)"


def emulation_items(group: Group) -> list[str]:
    """What emulation imposed, as the runner's tier plan states it (bench.config.tiers.plan_tier)."""
    from bench.config.tiers import TIERS, HostGpu, TierError, plan_tier

    tier = TIERS.get(group.tier)
    if tier is None:
        return []
    env = next((e.record.env for e in group.entries if e.record.env.get("gpu_memory_bytes")), {})
    cc = tuple(int(x) for x in str(env.get("compute_capability") or "0.0").split(".")[:2])
    try:
        plan = plan_tier(tier, HostGpu(group.host, int(env.get("gpu_memory_bytes") or 0), cc))  # type: ignore[arg-type]
        if plan.mode == "emulated":
            return list(plan.emulated)
    except (TierError, ValueError):
        pass
    return [f"memory capped at {tier.usable_vram_bytes / GiB:.2f} GiB", f"dtype {tier.dtype}",
            "speed is the host GPU's, not the tier's"]


def environment_blocks(group: Group, results_dir: Path) -> list[Block]:
    from bench.config.tiers import TIERS

    es = group.entries
    tier = TIERS.get(group.tier)
    rows: list[list[str]] = []
    if group.mode == "cpu":
        rows.append(["host", "CPU only (smoke mode: no GPU figures)"])
    else:
        count = _values(es, lambda r: r.env.get("gpu_count"))
        cc = _values(es, lambda r: r.env.get("compute_capability"))
        mem = _values(es, lambda r: gib(r.env.get("gpu_memory_bytes")) + " GiB" if r.env.get("gpu_memory_bytes") else None)
        rows.append(["host GPU", f"{md_escape(group.host)} ({_joined(mem)}, compute capability {_joined(cc)}, "
                                 f"{_joined(count)} visible)"])
    if tier:
        rows.append(["tier", f"{group.tier}: {tier.marketing_name}, usable {tier.usable_vram_bytes / GiB:.2f} GiB, "
                             f"{tier.fp16_tflops:g} dense fp16 TFLOP/s, ${tier.price_per_hour_usd:.2f}/h "
                             f"(datasheet and indicative price)"])
    else:
        rows.append(["tier", group.tier])
    mode = {"native": "native (the tier's own GPU)", "cpu": "cpu (smoke mode)"}.get(group.mode, group.mode)
    if group.mode == "emulated":
        mode = "emulated: " + "; ".join(emulation_items(group))
    rows.append(["mode", mode])
    rows.append(["training dtype", _joined(_values(es, lambda r: r.dtype))])
    if group.mode != "cpu":
        rows.append(["driver", _joined(_values(es, lambda r: r.env.get("driver")))])
        rows.append(["CUDA", _joined(_values(es, lambda r: r.env.get("cuda")))])
    rows.append(["python", _joined(_values(es, lambda r: r.env.get("python")))])
    pkgs: list[str] = []
    for name in CORE_PACKAGES:
        vals = _values(es, lambda r: (r.env.get("packages") or {}).get(name))
        pkgs.append(f"{name} {_joined(vals) if vals != ['-'] else 'not installed'}")
    rows.append(["libraries", ", ".join(pkgs)])

    def commit(r: ResultRecord) -> Optional[str]:
        sha = r.env.get("git_commit")
        if not sha:
            return None
        dirty = r.env.get("git_dirty")
        flag = "uncommitted changes" if dirty else ("clean" if dirty is False else "dirty flag unknown")
        return f"{sha[:12]} ({flag})"

    suite = _joined(_values(es, lambda r: r.env.get("suite_version")))
    rows.append(["suite", f"qlora-bench {suite}, commit {_joined(_values(es, commit))}"])
    starts = [r.started_at for r in (e.record for e in es) if r.started_at]
    ends = [r.finished_at for r in (e.record for e in es) if r.finished_at]
    if starts or ends:
        rows.append(["measured", f"{min(starts or ends)} to {max(ends or starts)} (UTC, from the records)"])
    rows.append(["runs", ", ".join(_values(es, lambda r: r.run_id))])
    files = sorted({e.path for e in es}, key=str)
    rows.append(["results files", ", ".join(_file_link(p, results_dir) for p in files)])
    n_ok = sum(1 for e in es if e.record.ok)
    rows.append(["cells", f"{len(es)} ({n_ok} ok, {len(es) - n_ok} not: see the tables)"])
    blocks: list[Block] = [Table(["", ""], [[f"**{k}**", v] for k, v in rows])]
    if group.mode == "emulated":
        blocks.append(Note(emulation_note(group)))
    elif group.mode == "cpu":
        blocks.append(Note(["**CPU smoke mode.** These cells ran on the CPU to check that the pipeline works end "
                            "to end. They carry no GPU memory figures and their speed says nothing about a GPU."]))
    return blocks


def emulation_note(group: Group) -> list[str]:
    from bench.config.tiers import TIERS, tier_for_gpu_name

    tier = TIERS.get(group.tier)
    host_tier = tier_for_gpu_name(group.host)
    usable = f"{tier.usable_vram_bytes / GiB:.2f} GiB" if tier else "the tier's memory"
    lines = [f"**Emulated tier: memory fit is real; speed is the host GPU's.** These cells ran on an "
             f"{md_escape(group.host)} with the allocator capped so that the process could use at most {usable} "
             f"of device memory (CUDA context included), in the {group.tier}'s training dtype. Whether a "
             f"configuration fits a {group.tier} is measured; a cell whose device peak went over the tier's memory "
             f"outside the cap is flagged in its status."]
    speed = (f"Tokens/s, first-step time, MFU and cost are the {short_gpu(group.host)}'s, not a "
             f"{group.tier}'s")
    if tier and host_tier:
        speed += (f" (datasheet dense fp16 throughput: {group.tier} {tier.fp16_tflops:g} TFLOP/s, "
                  f"{host_tier.name} {host_tier.fp16_tflops:g} TFLOP/s): a real {group.tier} is slower, and the "
                  f"Unsloth-vs-HF speed-up there may differ")
    lines.append(speed + ". They are labelled \"host-GPU speed\" wherever they appear.")
    return lines


def _rel(p: Path, results_dir: Path) -> str:
    """`p` relative to the report's folder, with forward slashes (a working link from the report)."""
    return Path(os.path.relpath(Path(p).resolve(), results_dir.resolve())).as_posix()


def _file_link(p: Path, results_dir: Path) -> str:
    return f"[{md_escape(Path(p).name)}]({_rel(p, results_dir)})"


# -- plots -----------------------------------------------------------------------------------------
def plot_specs(spec: TableSpec, stem: str) -> list:
    """The plots of one comparison table (deterministic names: <report stem>-<group>-<model>[-n]-<kind>.png)."""
    from bench.render.plots import ThroughputPlot, VramPlot
    from bench.config.tiers import TIERS

    g = spec.group
    suffix = f"-{spec.index + 1}" if spec.total > 1 else ""
    base = f"{stem}-{g.slug}-{slug(spec.model)}{suffix}"
    speed_note = " (host-GPU speed)" if g.mode == "emulated" else (" (CPU smoke)" if g.mode == "cpu" else "")
    out = []
    if g.mode != "cpu":
        tier = TIERS.get(g.tier)
        use_device = any(r.peak_device_bytes for r in spec.records if r.ok)
        fld = "peak_device_bytes" if use_device else "peak_allocated_bytes"
        series: dict = {}
        ooms: dict = {}
        for r in spec.records:
            if r.ok and getattr(r, fld) is not None:
                series.setdefault(r.backend, {}).setdefault(r.batch_size, []).append((r.seq_len, getattr(r, fld) / GiB))
            elif r.status == "oom":
                ooms.setdefault(r.backend, []).append((r.seq_len, r.batch_size))
        out.append(VramPlot(
            path=f"{base}-vram.png",
            title=f"{spec.model} on {g.title}: peak memory",
            ylabel=("peak device memory, NVML (GiB)" if use_device else "peak allocated memory, torch (GiB)"),
            backends=[BACKEND_LABEL[b] for b in spec.backends],
            series={BACKEND_LABEL[b]: {bs: sorted(pts) for bs, pts in v.items()} for b, v in series.items()},
            ooms={BACKEND_LABEL[b]: sorted(v) for b, v in ooms.items()},
            limit_gib=tier.usable_vram_bytes / GiB if tier else None,
            limit_label=f"{g.tier} usable memory ({tier.usable_vram_bytes / GiB:.2f} GiB)" if tier else "",
            seq_lens=sorted({r.seq_len for r in spec.records}),
        ))
    tps: dict = {}
    for r in spec.records:
        if r.ok and r.tokens_per_s:
            tps.setdefault(BACKEND_LABEL[r.backend], {}).setdefault(r.batch_size, []).append((r.seq_len, r.tokens_per_s))
    out.append(ThroughputPlot(
        path=f"{base}-throughput.png",
        title=f"{spec.model} on {g.title}: training throughput{speed_note}",
        ylabel="tokens/s (timed steps)" + speed_note,
        backends=[BACKEND_LABEL[b] for b in spec.backends],
        series={b: {bs: sorted(pts) for bs, pts in v.items()} for b, v in tps.items()},
        seq_lens=sorted({r.seq_len for r in spec.records}),
    ))
    return out


# -- decisions ------------------------------------------------------------------------------------
def fitting(group: Group, model: str) -> list[Entry]:
    """Cells of `model` that ran within the tier's memory (the fit verdict; parity aside)."""
    return [e for e in group.entries if e.record.model == model and fits(e.record)]


def unmatched_pair_keys(group: Group) -> set[str]:
    """Pairs where both sides ran but the parity check failed (or never ran): not comparable."""
    return {p.pair_key for p in group.pairs if p.not_matched}


def candidates(group: Group, model: str) -> list[Entry]:
    """Cells a recommendation may rest on: fitting, and not part of a pair that is not matched.

    A cell whose partner did not finish (e.g. HF ran out of memory) has no parity verdict and
    still counts: it is the only measurement at that size.
    """
    bad = unmatched_pair_keys(group)
    return [e for e in fitting(group, model) if e.record.pair_key not in bad]


def _size(r: ResultRecord) -> tuple:
    return (r.seq_len * r.batch_size, r.seq_len, r.batch_size)


def _pair_of(group: Group, e: Entry) -> Optional[Pair[Entry]]:
    return next((p for p in group.pairs if p.pair_key == e.record.pair_key), None)


def _partner(group: Group, e: Entry) -> Optional[Entry]:
    p = _pair_of(group, e)
    if p is None:
        return None
    return p.unsloth if e.record.backend == "hf" else p.hf


def approach_text(r: ResultRecord) -> str:
    quant = str((r.quantization or {}).get("bnb_4bit_quant_type") or "4-bit").upper()
    return (f"{BACKEND_LABEL[r.backend]} QLoRA ({quant}), seq_len {r.seq_len} x batch {r.batch_size}, "
            f"{r.optimizer}, gradient checkpointing '{r.gradient_checkpointing}', LoRA r {r.lora_r}")


def _peak_text(r: ResultRecord, group: Group) -> str:
    from bench.config.tiers import TIERS

    tier = TIERS.get(group.tier)
    if r.peak_device_bytes is not None and tier:
        return f"device peak {gib(r.peak_device_bytes)} of {tier.usable_vram_bytes / GiB:.2f} GiB"
    if r.peak_allocated_bytes is not None:
        return f"peak allocated {gib(r.peak_allocated_bytes)} GiB"
    return "memory not recorded"


def _headroom_text(r: ResultRecord, group: Group, fraction: float = 0.9) -> str:
    """', little headroom: 0.58 GiB left' when the device peak is within 10 % of the tier's memory."""
    from bench.config.tiers import TIERS

    tier = TIERS.get(group.tier)
    if tier is None or r.peak_device_bytes is None or r.peak_device_bytes < fraction * tier.usable_vram_bytes:
        return ""
    return f", little headroom: {(tier.usable_vram_bytes - r.peak_device_bytes) / GiB:.2f} GiB left"


def _cost_text(group: Group, r: ResultRecord) -> str:
    from bench.config.tiers import TIERS

    tier = TIERS.get(group.tier)
    if tier is None or not r.tokens_per_s:
        return "-"
    cost = cost_per_million_tokens(tier.price_per_hour_usd, r.tokens_per_s)
    label = (f" (host-GPU speed: a real {group.tier} is slower, so it costs more)" if group.mode == "emulated"
             else "")
    return (f"{usd(cost)} per 1M training tokens at ${tier.price_per_hour_usd:.2f}/h and "
            f"{r.tokens_per_s:,.0f} tokens/s{label}")


def _versus(group: Group, e: Entry) -> str:
    """How the other backend did at the same configuration."""
    other = _partner(group, e)
    if other is None:
        return "the other backend was not measured at this size"
    p = _pair_of(group, e)
    o = other.record
    if p is not None and p.comparable:
        sp = p.speedup
        red = p.memory_reduction("peak_device_bytes")
        if red is None:
            red = p.memory_reduction("peak_allocated_bytes")
        faster = f"Unsloth {sp:.2f}x HF's tokens/s" if sp else "speed-up unknown"
        return f"{faster}, {pct(red)} less peak memory than HF (matched pair {link(p.hf.ref)}/{link(p.unsloth.ref)})"
    return f"{BACKEND_LABEL[o.backend]} at this size: {md_escape(status_text(o))} ({link(other.ref)})"


def _no_candidate_row(group: Group, scenario: str, cells: list[Entry], fitting_cells: list[Entry], what: str
                      ) -> list[str]:
    if fitting_cells:
        refs = ", ".join(link(e.ref) for e in fitting_cells)
        return [scenario, "**No recommendation**: every cell that fits belongs to a pair that is NOT MATCHED "
                "(parity check failed or missing): fix the mismatch and measure again",
                f"fitting cells, all excluded: {refs}", "-"]
    first = min(cells, key=lambda e: (_size(e.record), e.record.backend))
    return [scenario, f"**Does not fit at any measured {what}**: try `bench estimate`, a shorter seq_len, "
            "batch 1, or a larger tier",
            f"smallest tried: {BACKEND_LABEL[first.record.backend]} s{first.record.seq_len} b{first.record.batch_size}: "
            f"{md_escape(status_text(first.record))} ({link(first.ref)}); "
            f"{plural(len({(e.record.seq_len, e.record.batch_size) for e in cells}), 'size')} tried", "-"]


def decision_rows(group: Group) -> list[list[str]]:
    """Decision matrix rows of one GPU group: the largest size that fits, then the best cell per seq_len."""
    rows = []
    speed = " (host-GPU speed)" if group.mode == "emulated" else ""
    whole = group
    for model, label, group in recipe_views(whole):
        cands = candidates(group, model)
        measured = [e for e in group.entries if e.record.model == model]
        scenario = f"{label} on {group.title}"
        if not cands:
            rows.append(_no_candidate_row(group, f"{scenario}: any measured size", measured,
                                          fitting(group, model), "size"))
            continue
        best_per_backend: dict[str, Entry] = {}
        for e in cands:
            cur = best_per_backend.get(e.record.backend)
            if cur is None or (_size(e.record), e.record.tokens_per_s or 0) > (_size(cur.record),
                                                                               cur.record.tokens_per_s or 0):
                best_per_backend[e.record.backend] = e
        top = max(best_per_backend.values(), key=lambda e: (_size(e.record), e.record.tokens_per_s or 0,
                                                            e.record.backend == "unsloth"))
        why = [f"{_peak_text(top.record, group)} ({link(top.ref)})"]
        for b, e in sorted(best_per_backend.items()):
            if e is not top:
                why.append(f"{BACKEND_LABEL[b]} fits at most s{e.record.seq_len} b{e.record.batch_size} "
                           f"({link(e.ref)})")
        for b in ("hf", "unsloth"):
            if b not in best_per_backend and any(x.record.backend == b for x in measured):
                why.append(f"{BACKEND_LABEL[b]} fits at no measured size (or only in unmatched pairs)")
        why.append(_versus(group, top))
        rows.append([f"{scenario}: largest measured size that fits", approach_text(top.record),
                     "; ".join(why), _cost_text(group, top.record)])
        for seq in sorted({e.record.seq_len for e in measured}):
            at = [e for e in cands if e.record.seq_len == seq and e.record.tokens_per_s]
            if not at:
                rows.append(_no_candidate_row(
                    group, f"{scenario}: seq_len {seq}", [e for e in measured if e.record.seq_len == seq],
                    [e for e in fitting(group, model) if e.record.seq_len == seq], "batch size"))
                continue
            best = max(at, key=lambda e: (e.record.tokens_per_s, e.record.backend == "unsloth"))
            why = [f"highest measured throughput at seq_len {seq}: {best.record.tokens_per_s:,.0f} tokens/s{speed}, "
                   f"{_peak_text(best.record, group)} ({link(best.ref)})", _versus(group, best)]
            rows.append([f"{scenario}: seq_len {seq}", approach_text(best.record), "; ".join(why),
                         _cost_text(group, best.record)])
    return rows


# -- summary -------------------------------------------------------------------------------------
def _backend_fit_text(group: Group, model: str, backend: str) -> str:
    mine = [e for e in group.entries if e.record.model == model and e.record.backend == backend]
    label = BACKEND_LABEL[backend]
    if not mine:
        return f"{label} not measured"
    fit = [e for e in mine if fits(e.record)]
    if fit:
        top = max(fit, key=lambda e: _size(e.record))
        text = (f"{label} fits up to seq_len {top.record.seq_len} x batch {top.record.batch_size} "
                f"({_peak_text(top.record, group)}{_headroom_text(top.record, group)}, {link(top.ref)})")
        if _size(top.record) == max(_size(e.record) for e in mine):
            text += "; that is the largest size measured, larger ones were not tried"
    else:
        text = f"{label} fits at no measured size"
    failed = sorted((e for e in mine if not fits(e.record) and e.record.status in ("ok", "oom", "skipped")),
                    key=lambda e: _size(e.record))
    if failed:
        f0 = failed[0]
        text += (f"; does not fit at s{f0.record.seq_len} b{f0.record.batch_size} "
                 f"({md_escape(status_text(f0.record))}, {link(f0.ref)})")
    errors = [e for e in mine if e.record.status in ("error", "timeout")]
    if errors:
        text += f"; {len(errors)} cell(s) failed with an error ({', '.join(link(e.ref) for e in errors)})"
    return text


def summary_items(results: Results) -> list[tuple[str, list[str]]]:
    """(headline, details) per group and model: fit verdicts, speed-up, saving, best configuration, caveats."""
    items: list[tuple[str, list[str]]] = []
    for group in results.groups:
        for model, label, g in recipe_views(group):
            measured = [e for e in g.entries if e.record.model == model]
            head = f"**{label} on {g.title}**"
            if g.mode == "cpu":
                ok = sum(1 for e in measured if e.record.ok)
                items.append((f"{head}: CPU smoke mode, {ok} of {len(measured)} cells ran; no GPU figures, "
                              "so no fit or speed verdict.", []))
                continue
            fit = fitting(g, model)
            if fit:
                tops = []
                for b in ("unsloth", "hf"):
                    mine = [e for e in fit if e.record.backend == b]
                    if mine:
                        top = max(mine, key=lambda e: _size(e.record)).record
                        tops.append(f"{BACKEND_LABEL[b]} up to s{top.seq_len} "
                                    f"b{top.batch_size}")
                    elif any(e.record.backend == b for e in measured):
                        tops.append(f"{BACKEND_LABEL[b]} at no measured size")
                verdict = f"**fits** ({'; '.join(tops)})"
            else:
                verdict = "**does not fit at any measured size**"
            details = [_backend_fit_text(g, model, b) + "." for b in ("unsloth", "hf")]
            comp = [p for p in g.pairs if p.any.record.model == model and p.comparable]
            if comp:
                sps = [x for p in comp if (x := p.speedup)]
                reds = [x for p in comp if (x := p.memory_reduction("peak_device_bytes")) is not None]
                metric = "peak device memory"
                if not reds:
                    reds = [x for p in comp if (x := p.memory_reduction("peak_allocated_bytes")) is not None]
                    metric = "peak allocated memory"
                speed = " (host-GPU speed)" if g.mode == "emulated" else ""
                txt = f"Where both ran and matched ({plural(len(comp), 'pair')}): Unsloth reached "
                txt += f"{_range(sps, lambda v: f'{v:.2f}x')} HF's tokens/s{speed}" if sps else "unknown speed"
                if reds:
                    txt += f" and used {_range(reds, lambda v: f'{v * 100:.0f} %')} less {metric}"
                details.append(txt + ".")
            elif any(p.any.record.model == model and p.hf and p.unsloth for p in g.pairs):
                details.append("No parity-matched pair: no speed-up or memory saving to report.")
            unmatched = [p for p in g.pairs if p.any.record.model == model and p.not_matched]
            if unmatched:
                details.append(f"**{plural(len(unmatched), 'pair')} NOT MATCHED** (parity check failed or missing; "
                               f"excluded from speed-ups, savings and recommendations): "
                               + ", ".join(f"{link(p.hf.ref)}/{link(p.unsloth.ref)}" for p in unmatched) + ".")
            cands = candidates(g, model)
            if cands:
                best = max(cands, key=lambda e: (e.record.tokens_per_s or 0, e.record.backend == "unsloth"))
                details.append(f"Best measured configuration (highest tokens/s among fitting cells): "
                               f"{approach_text(best.record)} ({link(best.ref)}): {_cost_text(g, best.record)}.")
            elif fit:
                details.append("No recommendation: the cells that fit are all in pairs that are NOT MATCHED.")
            else:
                details.append("Try `bench estimate` for a prediction at smaller sizes, a shorter seq_len, batch 1, "
                               "or a larger tier.")
            if g.mode == "emulated":
                details.append(f"Caveat: emulated on {md_escape(g.host)}: the memory verdicts hold for a real "
                               f"{g.tier}; speeds and costs are the host GPU's, and a real {g.tier} is slower.")
            items.append((f"{head}: {verdict}.", details))
    if results.split_pairs:
        items.append((f"**{plural(len(results.split_pairs), 'configuration')} measured on different GPUs for HF "
                      f"and Unsloth**: their sides appear in separate groups and are not compared.", []))
    return items


def _range(values: list[float], fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)} to {fmt(hi)}"


# -- appendix ---------------------------------------------------------------------------------------
def appendix_table(results: Results, results_dir: Path) -> Table:
    header = ["ref", "cell id", "results file", "status", "peak alloc GiB", "peak device GiB", "peak RSS GiB",
              "tokens/s", "first step s", "parity", "finished (UTC)", "message"]
    rows = []
    for g in results.groups:
        for e in g.entries:
            r = e.record
            parity = "-" if r.matched is None else ("matched" if r.matched else "**NOT MATCHED**")
            msg = "; ".join(([first_line(r.error, 200)] if r.error else []) + list(r.warnings))
            rows.append([f'<a id="{e.ref}"></a>{e.ref}', f"`{r.cell_id}`", _file_link(e.path, results_dir),
                         r.status, gib(r.peak_allocated_bytes), gib(r.peak_device_bytes), gib(r.peak_rss_bytes),
                         fnum(r.tokens_per_s, ",.0f"), fnum(r.first_step_s, ".2f"), parity, r.finished_at or "-",
                         md_escape(msg) if msg else ""])
    return Table(header, rows, {4, 5, 6, 7, 8})


def fast_path_table(results: Results) -> Optional[Table]:
    rows = []
    for g in results.groups:
        for e in g.entries:
            r = e.record
            counts = ran_unsloth_kernels(r.fast_paths)
            if counts is None:
                continue
            paths = ", ".join(f"{k}: {v}" for k, v in sorted(r.fast_paths.items()) if not k.startswith("_"))
            source = r.fast_paths.get("_source", "-")
            if r.fast_paths.get("_profile_error"):
                source += f" (profiler failed: {first_line(r.fast_paths['_profile_error'], 120)})"
            rows.append([link(e.ref), r.model, f"s{r.seq_len} b{r.batch_size}", g.title,
                         f"{counts[0]}/{counts[1]}", md_escape(paths), md_escape(source)])
    if not rows:
        return None
    return Table(["cell", "model", "size", "group", "Unsloth kernels ran (k/n)", "fast paths", "source"], rows)


# -- the whole document --------------------------------------------------------------------------------
def build_report(results: Results, out: Path) -> Report:
    """The report model: blocks for the markdown and the plots to write beside it."""
    from bench import __version__

    out = Path(out)
    results_dir = out.parent
    stem = slug(out.stem)
    title = "qlora-bench report: " + "; ".join(g.title for g in results.groups)
    n = len(results.entries)
    sources = " ".join(_rel(p, results_dir) for p in results.paths)
    blocks: list[Block] = [
        Raw(f"<!-- Generated by `bench report` from {sources} (paths relative to this file). "
            "Do not edit by hand: regenerate it. -->"),
        Heading(1, title),
        Para(f"Vanilla Hugging Face QLoRA (transformers + bitsandbytes NF4 + peft) against Unsloth QLoRA, "
             f"matched cell by cell. Generated by qlora-bench {__version__} `bench report` from {n} records in "
             f"{len(results.paths)} results file(s): "
             + ", ".join(_file_link(p, results_dir) for p in results.paths) + ". Every figure carries a cell "
             "reference (c1, c2, ...) resolved in the [appendix](#cells) to its cell id and results file."),
        Heading(2, "Summary", "summary"),
        Bullets(summary_items(results)),
    ]
    plots: list[Any] = []
    for g in results.groups:
        blocks.append(Heading(2, f"Results: {g.title}", f"group-{g.slug}"))
        blocks.append(Heading(3, "Environment"))
        blocks.extend(environment_blocks(g, results_dir))
        for spec in table_specs(g):
            suffix = f" (settings {spec.index + 1} of {spec.total})" if spec.total > 1 else ""
            blocks.append(Heading(3, f"{spec.model} on {g.title}{suffix}"))
            blocks.append(Para(f"Settings: {md_escape(settings_text(spec))}. Speed-up = Unsloth tokens/s over HF "
                               f"tokens/s; memory saved = 1 - Unsloth peak / HF peak; both only for parity-matched "
                               f"pairs." + (" Speeds are host-GPU speed." if g.mode == "emulated" else "")))
            blocks.append(comparison_table(spec))
            specs = plot_specs(spec, stem)
            plots.extend(specs)
            for ps in specs:
                blocks.append(Image(ps.title, ps.path))
        warned = [e for e in g.entries if e.record.warnings]
        if warned:
            blocks.append(Para("**Warnings recorded by the runner:**"))
            blocks.append(Bullets([f"{link(e.ref)}: {md_escape(w)}" for e in warned for w in e.record.warnings]))

    blocks.append(Heading(2, "Decision matrix", "decision-matrix"))
    gpu_groups = [g for g in results.groups if g.mode != "cpu"]
    if gpu_groups:
        blocks.append(Para("Derived only from measured cells that ran within the tier's memory and are not part "
                           "of a pair that failed the parity check. Cost per 1M training tokens = $/hour / "
                           "(tokens/s x 3600) x 10^6 with the tier's indicative price."))
        rows = [r for g in gpu_groups for r in decision_rows(g)]
        blocks.append(Table(["Scenario", "Recommended approach", "Why (measured)", "Cost impact"], rows))
    else:
        blocks.append(Para("No GPU cells: no recommendation (CPU smoke cells measure no GPU)."))

    blocks += claims_blocks(*claims_results(results))

    fp = fast_path_table(results)
    if fp is not None:
        blocks.append(Heading(2, "Fast paths (fallback check)", "fast-paths"))
        blocks.append(Para("Which fast paths ran on Unsloth's hand-written kernels, per the records' fast-path "
                           "summary (kernels_check: one profiled, untimed step per Unsloth worker, on its first ok cell). k/n: of the n "
                           "fast paths Unsloth has a kernel for, k ran it; k < n means a fallback."))
        blocks.append(fp)

    blocks.append(Heading(2, "Appendix: cells", "cells"))
    notes = []
    if results.superseded:
        notes.append(f"{results.superseded} earlier record(s) of re-measured cells were superseded by later ones "
                     f"(the last record of a cell on a host wins).")
    if results.split_pairs:
        notes.append("Measured on different GPUs for HF and Unsloth (not compared): "
                     + ", ".join(f"`{k}`" for k in results.split_pairs) + ".")
    if notes:
        blocks.append(Para(" ".join(notes)))
    blocks.append(appendix_table(results, results_dir))
    blocks.append(Para("Metrics: peak alloc = torch.cuda.max_memory_allocated over the cell; peak device = the "
                       "process's GPU memory sampled through NVML (CUDA context and allocations outside torch "
                       "included); tokens/s over the timed steps; first step = the first optimizer step, "
                       "compilation included; MFU = model FLOPs per token x tokens/s / the host GPU's dense peak "
                       "(bench/measure.py)."))
    return Report(title, blocks, plots)


# =============================================================================================
# Files
# =============================================================================================
def format_for(out: Path, fmt: Optional[str] = None) -> str:
    """md or html from --format, else from the file name; a clash is a usage error."""
    suffix = Path(out).suffix.lower().lstrip(".")
    by_name = {"md": "md", "markdown": "md", "html": "html", "htm": "html"}.get(suffix)
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ResultsError(f"unknown report format {fmt!r}; use md or html")
        if by_name is not None and by_name != fmt:
            raise ResultsError(f"--out {out} is a .{suffix} file but --format is {fmt}")
        return fmt
    if by_name is None:
        raise ResultsError(f"cannot tell the report format from {out}: use a .md or .html name, or --format")
    return by_name


def default_out(results: Results, fmt: str = "md") -> Path:
    """reports/<tiers>.<fmt>, e.g. reports/t4.md."""
    tiers = sorted({g.tier for g in results.groups}, key=_tier_rank)
    return Path("reports") / f"{'+'.join(tiers)}.{fmt}"


def render_to_file(results: list[Path], out: Optional[Path] = None, fmt: Optional[str] = None) -> Path:
    """Load `results`, write the report to `out` (md or html; default `default_out`) and its PNG plots
    beside it; return the path written."""
    from bench.render import plots as plots_mod
    loaded = load_results(results)
    out = Path(out) if out is not None else default_out(loaded, (fmt or "md").lower())
    fmt = format_for(out, fmt)
    report = build_report(loaded, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in report.plots:
        plots_mod.write_plot(spec, out.parent / spec.path)
    markdown = render_markdown(report.blocks)
    text = markdown if fmt == "md" else render_html(markdown, report.title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out

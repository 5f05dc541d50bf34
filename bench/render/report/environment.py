"""The environment block of a group: host GPU, tier, mode, versions and provenance, from the records."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from bench.analysis.results import Entry, Group
from bench.config.tiers import TIERS, HostGpu, TierError, plan_tier, tier_for_gpu_name
from bench.render.blocks import Block, Note, Table
from bench.render.report.labels import file_link
from bench.render.text import gib, md_escape, short_gpu
from bench.schema.gpu_state import GpuStateSpan, gpu_state_span
from bench.schema.host_cpu import host_cpu_warnings
from bench.schema.record import ResultRecord

CORE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "unsloth", "unsloth_zoo",
                 "triton")


def _values(entries: Sequence[Entry], getter: Callable[[ResultRecord], object]) -> list[str]:
    """The distinct values the records give, sorted; ['-'] when none gives one."""
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


def _with_records_cap(items: list[str], group: Group, tier) -> list[str]:
    """`items` with the first (the plan's cap) replaced by the cap the records ran under where that differs
    (records from before the table carried torch's figure), and the real card's figure they are read against."""
    caps = sorted({e.record.memory_limit_bytes for e in group.entries if e.record.memory_limit_bytes})
    if not caps or caps == [tier.memory_cap_bytes]:
        return items
    run = " / ".join(f"{gib(c)} GiB" for c in caps)
    return [f"memory capped at {run} (CUDA context included); a real {tier.name} gives a process "
            f"{gib(tier.memory_cap_bytes)} GiB ({tier.memory_cap_text}): fit is read against the smaller"] + items[1:]


def emulation_items(group: Group) -> list[str]:
    """What emulation imposed, as the runner's tier plan states it (bench.config.tiers.plan_tier), and the
    records' own cap where it differs from the plan's (records from before the table's torch figures)."""
    tier = TIERS.get(group.tier)
    if tier is None:
        return []
    env = next((e.record.env for e in group.entries if e.record.env.get("gpu_memory_bytes")), {})
    cc = tuple(int(x) for x in str(env.get("compute_capability") or "0.0").split(".")[:2])
    try:
        plan = plan_tier(tier, HostGpu(group.host, int(env.get("gpu_memory_bytes") or 0), cc))  # type: ignore[arg-type]
        if plan.mode == "emulated":
            return _with_records_cap(list(plan.emulated), group, tier)
    except (TierError, ValueError):
        pass
    return _with_records_cap([f"memory capped at {gib(tier.memory_cap_bytes)} GiB", f"dtype {tier.dtype}",
                              "speed is the host GPU's, not the tier's"], group, tier)


def _commit(r: ResultRecord) -> Optional[str]:
    sha = r.env.get("git_commit")
    if not sha:
        return None
    dirty = r.env.get("git_dirty")
    flag = "uncommitted changes" if dirty else ("clean" if dirty is False else "dirty flag unknown")
    return f"{sha[:12]} ({flag})"


def environment_rows(group: Group, results_dir: Path) -> list[list[str]]:
    """(label, value) rows: host, tier, mode, dtype, driver and CUDA, libraries, suite, dates, runs, files."""
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
        rows.append(["tier", f"{group.tier}: {tier.marketing_name}, usable {gib(tier.usable_vram_bytes)} GiB "
                             f"(driver total; torch's total {gib(tier.memory_cap_bytes)} GiB), {tier.fp16_tflops:g} dense fp16 TFLOP/s, ${tier.price_per_hour_usd:.2f}/h "
                             f"(datasheet and indicative price)"])
    else:
        rows.append(["tier", group.tier])
    mode = {"native": "native (the tier's own GPU)", "cpu": "cpu (smoke mode)"}.get(group.mode, group.mode)
    if group.mode == "emulated":
        mode = "emulated: " + "; ".join(emulation_items(group))
    rows.append(["mode", mode])
    drivers = {name: _joined(_values([e for e in es if e.record.recipe == name], lambda r: r.driver))
               for name in group.recipes}
    rows.append(["recipes", ", ".join(f"{name} ({driver} driver)" for name, driver in drivers.items())])
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
    suite = _joined(_values(es, lambda r: r.env.get("suite_version")))
    rows.append(["suite", f"qlora-bench {suite}, commit {_joined(_values(es, _commit))}"])
    starts = [e.record.started_at for e in es if e.record.started_at]
    ends = [e.record.finished_at for e in es if e.record.finished_at]
    if starts or ends:
        rows.append(["measured", f"{min(starts or ends)} to {max(ends or starts)} (UTC, from the records)"])
    rows.append(["runs", ", ".join(_values(es, lambda r: r.run_id))])
    state = gpu_state_text(es)
    if state:
        rows.append(["GPU state", state])
    host = host_cpu_text(es)
    if host:
        rows.append(["host CPU", host])
    files = sorted({e.path for e in es}, key=str)
    rows.append(["results files", ", ".join(file_link(p, results_dir) for p in files)])
    n_ok = sum(1 for e in es if e.record.ok)
    rows.append(["cells", f"{len(es)} ({n_ok} ok, {len(es) - n_ok} not: see the tables)"])
    return rows


def _span_text(span: GpuStateSpan) -> str:
    clock = "-" if span.sm_clock_mhz_min is None else (
        f"{span.sm_clock_mhz_min}" + ("" if span.sm_clock_mhz_max == span.sm_clock_mhz_min else f"-{span.sm_clock_mhz_max}"))
    parts = [f"SM clock {clock} MHz" + ("" if span.sm_clock_max_mhz is None else f" (max {span.sm_clock_max_mhz})"),
             "up to " + ("-" if span.temperature_c_max is None else f"{span.temperature_c_max} C"),
             "power limit " + (" / ".join(f"{w:.0f}" for w in span.power_limits_w) + " W" if span.power_limits_w else "-")]
    return ", ".join(parts) + f" ({span.cells} cell{'s' if span.cells != 1 else ''})"


def gpu_state_text(entries: Sequence[Entry]) -> Optional[str]:
    """Per run, the GPU's state while its cells ran (bench.schema.gpu_state: SM clock range while training, its
    max, the highest temperature, the power limit); None when no record has one (before schema 3, or a CPU)."""
    runs: dict[str, list] = {}
    for e in entries:
        runs.setdefault(e.record.run_id, []).append(e.record.gpu_state)
    texts = [f"{md_escape(run)}: {_span_text(span)}" for run, states in runs.items()
             if (span := gpu_state_span(states)) is not None]
    return "; ".join(texts) or None


def host_cpu_text(entries: Sequence[Entry]) -> Optional[str]:
    """The cores other processes kept busy on the host over the cells' timed steps (bench.schema.host_cpu), the
    least and most of any cell, and how many cells carry the busy-host warning; None when no record has it."""
    states = [e.record.host_cpu for e in entries if e.record.host_cpu]
    if not states:
        return None
    others = [s["other_cores"] for s in states]
    busy = sum(1 for s in states if host_cpu_warnings(s))
    return (f"other processes kept {min(others):.1f}-{max(others):.1f} of {max(s['cores'] for s in states)} cores "
            f"busy over the timed steps ({len(states)} cell{'s' if len(states) != 1 else ''}"
            + (f"; {busy} with the busy-host warning: their speed may be the host's contention" if busy else "") + ")")


def environment_blocks(group: Group, results_dir: Path) -> list[Block]:
    blocks: list[Block] = [Table(["", ""], [[f"**{k}**", v] for k, v in environment_rows(group, results_dir)])]
    if group.mode == "emulated":
        blocks.append(Note(emulation_note(group)))
    elif group.mode == "cpu":
        blocks.append(Note(["**CPU smoke mode.** These cells ran on the CPU to check that the pipeline works end "
                            "to end. They carry no GPU memory figures and their speed says nothing about a GPU."]))
    return blocks


def emulation_note(group: Group) -> list[str]:
    tier = TIERS.get(group.tier)
    host_tier = tier_for_gpu_name(group.host)
    caps = sorted({e.record.memory_limit_bytes for e in group.entries if e.record.memory_limit_bytes})
    usable = " / ".join(f"{gib(c)} GiB" for c in caps) if caps else "the tier's memory"
    lines = [f"**Emulated tier: memory fit is real; speed is the host GPU's.** These cells ran on an "
             f"{md_escape(group.host)} with the allocator capped so that the process could use at most {usable} "
             f"of device memory (CUDA context included), in the {group.tier}'s training dtype. Whether a "
             f"configuration fits a {group.tier} is measured; a cell whose device peak went over the tier's memory "
             f"outside the cap is flagged in its status."]
    speed = (f"Tokens/s, first-step time, MFU / HFU and energy are the {short_gpu(group.host)}'s, not a "
             f"{group.tier}'s")
    if tier and host_tier:
        speed += (f" (datasheet dense fp16 throughput: {group.tier} {tier.fp16_tflops:g} TFLOP/s, "
                  f"{host_tier.name} {host_tier.fp16_tflops:g} TFLOP/s): a real {group.tier} is slower, and the "
                  f"speed-ups between recipes there may differ")
    lines.append(speed + ". They are labelled \"host-GPU speed\" wherever they appear, and no cost per token is "
                 "given for this tier.")
    return lines

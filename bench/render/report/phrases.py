"""One cell, or one pair, in words: outcome, parity, approach, memory, headroom, cost, the other side."""

from __future__ import annotations

import re

from bench.analysis.decisions import cost_per_million_tokens, headroom_left, memory_saving, pair_of, partner
from bench.analysis.results import Entry, Group
from bench.config.tiers import TIERS
from bench.render.report.labels import BACKEND_LABEL
from bench.render.text import first_line, gib, link, md_escape, pct, usd
from bench.schema.pairs import Pair
from bench.schema.record import ResultRecord


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
            return f"OOM at {gib(r.memory_limit_bytes)} GiB cap{where}"
        if r.mode == "native":
            tier = TIERS.get(r.tier)
            size = f" on the {gib(tier.usable_vram_bytes)} GiB card" if tier else ""
            return f"OOM{size}{where}"
        return f"OOM{where}"
    if r.status == "skipped":
        m = re.search(r"at least as large as (\S+?),? which ran out of memory", r.error or "")
        if m:
            return f"skipped: not run, at least as large as {_cell_short(m.group(1))}, which ran out of memory"
        return "skipped: " + first_line(r.error, 120)
    return f"{r.status}: " + first_line(r.error, 120)


def _cell_short(cell_id: str) -> str:
    """'...-s2048-b2-1a2b3c4d-hf' -> 'HF s2048 b2'."""
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


def approach_text(r: ResultRecord) -> str:
    quant = str((r.quantization or {}).get("bnb_4bit_quant_type") or "4-bit").upper()
    return (f"{BACKEND_LABEL[r.backend]} QLoRA ({quant}), seq_len {r.seq_len} x batch {r.batch_size}, "
            f"{r.optimizer}, gradient checkpointing '{r.gradient_checkpointing}', LoRA r {r.lora_r}")


def peak_text(r: ResultRecord, group: Group) -> str:
    """'device peak 14.41 of 15.00 GiB', else the allocated peak."""
    tier = TIERS.get(group.tier)
    if r.peak_device_bytes is not None and tier:
        return f"device peak {gib(r.peak_device_bytes)} of {gib(tier.usable_vram_bytes)} GiB"
    if r.peak_allocated_bytes is not None:
        return f"peak allocated {gib(r.peak_allocated_bytes)} GiB"
    return "memory not recorded"


def headroom_text(r: ResultRecord, group: Group) -> str:
    """', little headroom: 0.58 GiB left' when the device peak is within 10 % of the tier's memory."""
    left = headroom_left(r, group.tier)
    return "" if left is None else f", little headroom: {gib(left)} GiB left"


def cost_text(group: Group, r: ResultRecord) -> str:
    tier = TIERS.get(group.tier)
    if tier is None or not r.tokens_per_s:
        return "-"
    cost = cost_per_million_tokens(tier.price_per_hour_usd, r.tokens_per_s)
    label = (f" (host-GPU speed: a real {group.tier} is slower, so it costs more)" if group.mode == "emulated"
             else "")
    return (f"{usd(cost)} per 1M training tokens at ${tier.price_per_hour_usd:.2f}/h and "
            f"{r.tokens_per_s:,.0f} tokens/s{label}")


def versus_text(group: Group, e: Entry) -> str:
    """How the other backend did at the same configuration."""
    other = partner(group, e)
    if other is None:
        return "the other backend was not measured at this size"
    p = pair_of(group, e)
    if p is not None and p.comparable:
        sp = p.speedup
        faster = f"Unsloth {sp:.2f}x HF's tokens/s" if sp else "speed-up unknown"
        return (f"{faster}, {pct(memory_saving(p))} less peak memory than HF "
                f"(matched pair {link(p.hf.ref)}/{link(p.unsloth.ref)})")
    return f"{BACKEND_LABEL[other.record.backend]} at this size: {md_escape(status_text(other.record))} ({link(other.ref)})"

"""One cell, or one pair, in words: outcome, parity, approach, memory, headroom, cost, the other recipes."""

from __future__ import annotations

import re

from bench.analysis.against import pair_between
from bench.analysis.borderline import BORDERLINE_MARGIN, is_borderline, memory_cap_bytes, peak_bytes
from bench.analysis.decisions import headroom_left, measured_cost_per_million_tokens, memory_saving
from bench.analysis.speed import INCONCLUSIVE, median_tokens_per_s, pair_speedup, speedup_verdict
from bench.analysis.results import Entry, Group
from bench.config.recipes import RECIPES
from bench.config.tiers import TIERS
from bench.render.report.labels import precision_text
from bench.render.text import first_line, fmt_interval, gib, link, md_escape, pct, usd
from bench.schema.pairs import Pair
from bench.schema.record import LEGACY_RECIPE, ResultRecord


def status_text(r: ResultRecord) -> str:
    """A cell's outcome in words: 'ok', 'ok, borderline: ...', 'OOM at 15.00 GiB cap', 'skipped: ...', 'error: ...'."""
    if is_borderline(r):
        return (f"ok, borderline: peak {gib(peak_bytes(r))} of {gib(memory_cap_bytes(r))} GiB, within "
                f"{BORDERLINE_MARGIN * 100:.0f} % of what a real {r.tier} gives a process: it may not fit there")
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
            size = f" on the {gib(tier.memory_cap_bytes)} GiB card" if tier else ""
            return f"OOM{size}{where}"
        return f"OOM{where}"
    if r.status == "skipped":
        m = re.search(r"at least as large as (\S+?),? which ran out of memory", r.error or "")
        if m:
            return f"skipped: not run, at least as large as {_cell_short(m.group(1))}, which ran out of memory"
        return "skipped: " + first_line(r.error, 120)
    return f"{r.status}: " + first_line(r.error, 120)


_RECIPE_SUFFIX = "|".join(re.escape(n) for n in sorted([*RECIPES, *LEGACY_RECIPE], key=len, reverse=True))


def _cell_short(cell_id: str) -> str:
    """'...-s2048-b2-1a2b3c4d-hf-trl' -> 'hf-trl s2048 b2' (a cell id from before recipes: '-hf' -> 'hf-kbit')."""
    m = re.search(rf"-s(\d+)-b(\d+)-[0-9a-f]+-({_RECIPE_SUFFIX})$", cell_id)
    if not m:
        return cell_id
    return f"{LEGACY_RECIPE.get(m.group(3), m.group(3))} s{m.group(1)} b{m.group(2)}"


def parity_text(p: Pair[Entry]) -> str:
    if not (p.reference and p.candidate):
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
    """'unsloth QLoRA (NF4), seq_len 2048 x batch 2, adamw_8bit, gradient checkpointing 'unsloth', LoRA r 16'."""
    kind = precision_text(r.recipe)
    if r.quantization and r.quantization.get("bnb_4bit_quant_type"):
        kind = f"QLoRA ({str(r.quantization['bnb_4bit_quant_type']).upper()})"
    return (f"{r.recipe}{' ' + kind if kind else ''}, seq_len {r.seq_len} x batch {r.batch_size}, "
            f"{r.optimizer}, gradient checkpointing '{r.gradient_checkpointing}', LoRA r {r.lora_r}")


def peak_text(r: ResultRecord, group: Group) -> str:
    """'device peak 14.41 of 14.55 GiB' (of the cell's cap: bench.analysis.borderline.memory_cap_bytes),
    else the allocated peak."""
    cap = memory_cap_bytes(r)
    if r.peak_device_bytes is not None and cap:
        return f"device peak {gib(r.peak_device_bytes)} of {gib(cap)} GiB"
    if r.peak_allocated_bytes is not None:
        return f"peak allocated {gib(r.peak_allocated_bytes)} GiB"
    return "memory not recorded"


def headroom_text(r: ResultRecord, group: Group) -> str:
    """', little headroom: 0.58 GiB left' when the device peak is within 10 % of the cell's cap."""
    left = headroom_left(r)
    return "" if left is None else f", little headroom: {gib(left)} GiB left"


#: The cost column of an emulated cell: no figure (bench.analysis.decisions.measured_cost_per_million_tokens).
EMULATED_COST = "not measured: emulated tier (host-GPU speed)"


def cost_text(group: Group, side) -> str:
    """'$0.04 per 1M training tokens at $0.35/h and 2,519 tokens/s' for a native cell (an entry, or a record)
    at its median per-step tokens/s; no figure for an emulated one (its tokens/s are the host GPU's)."""
    if group.mode == "emulated":
        return EMULATED_COST
    cost = measured_cost_per_million_tokens(side)
    tier = TIERS.get(group.tier)
    if cost is None or tier is None:
        return "-"
    return (f"{usd(cost)} per 1M training tokens at ${tier.price_per_hour_usd:.2f}/h and "
            f"{median_tokens_per_s(side):,.0f} tokens/s")


def saving_text(fraction, name: str) -> str:
    """'42 % less peak memory than hf-trl' ('10 % more ...' for a negative saving)."""
    if fraction is None:
        return f"peak memory against {name} unknown"
    return f"{pct(abs(fraction))} {'less' if fraction >= 0 else 'more'} peak memory than {name}"


def versus_text(group: Group, e: Entry) -> str:
    """How every other recipe measured at `e`'s configuration did beside it (matched pairs only compared)."""
    others = [o for o in group.entries if o.record.pair_key == e.record.pair_key and o is not e]
    if not others:
        return "no other recipe was measured at this size"
    return "; ".join(_against_text(e, o) for o in others)


def _against_text(e: Entry, other: Entry) -> str:
    """`e` against one other recipe's cell of its configuration: speed-up and saving, or why not compared."""
    name = other.record.recipe
    if not other.record.ok:
        return f"{name} at this size: {md_escape(status_text(other.record))} ({link(other.ref)})"
    p = pair_between(e.record.pair_key, other, e)
    if p.comparable:
        ratio = pair_speedup(p)
        faster = (f"{fmt_interval(ratio, '.2f', 'x')} {name}'s median tokens/s"
                  + (" (inconclusive)" if speedup_verdict(ratio) == INCONCLUSIVE else "")
                  if ratio is not None and ratio.estimate else f"speed against {name} unknown")
        return f"{faster}, {saving_text(memory_saving(p), name)} (matched pair {link(other.ref)}/{link(e.ref)})"
    if p.not_matched:
        return f"{name} at this size: not compared, parity NOT MATCHED ({link(other.ref)}/{link(e.ref)})"
    return f"{name} at this size: {md_escape(status_text(other.record))} ({link(other.ref)})"

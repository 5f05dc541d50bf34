"""The claims check: published claims (bench/data/claims.json) set beside what the suite measured.

Pure functions. A claim speaks only through the cells that meet its stated conditions (`where`
in the data file); when none does, its verdict is "not measured" with the first condition that
no cell met, never a stretched reading. Inputs are the report's entries: objects with `.record`
(a ResultRecord), `.ref` (the report's cell reference, e.g. "c3") and `.host` (the host GPU name,
"CPU" in cpu mode), and the comparable pairs: (hf entry, unsloth entry) tuples, both ok and
parity-matched on one host.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from bench.analysis import metrics as measure
from bench.schema.key import VARIANT_FIELDS, CellKey
CLAIMS_PATH = Path(__file__).resolve().parent.parent / "data" / "claims.json"
HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
GiB = 1024**3
RULE_KINDS = ("pair_metric", "cell_value", "cell_points", "fits", "exact", "variant", "consistency_across_tiers",
              "fast_path_coverage", "fallback_heuristic")
OPS = ("at_least", "at_most", "between", "approx")
WHERE_KEYS = ("models", "families", "fast_path", "param_range", "tiers", "modes", "seq_len", "batch_size", "grad_accum",
              "lora_r", "optimizer", "gradient_checkpointing", "target_modules")


class ClaimsError(ValueError):
    """A malformed claims file."""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    conditions: str  # as the article states them
    checked_as: str  # how this suite reads them
    rule: dict[str, Any]


@dataclass(frozen=True)
class Untestable:
    id: str
    text: str
    why: str


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # HOLDS | FAILS | NOT_MEASURED
    measured: str  # what was measured, with cell references (markdown)


# -- the claims file ----------------------------------------------------------------------------
def load_claims(path: Path = CLAIMS_PATH) -> tuple[list[Claim], list[Untestable]]:
    """Claims and the untestable list from the data file, validated."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClaimsError(f"cannot read claims file {path}: {exc}") from exc
    claims = []
    for item in data.get("claims", []):
        try:
            claim = Claim(item["id"], item["text"], item["source"], item.get("conditions", ""),
                          item["checked_as"], item["rule"])
        except KeyError as exc:
            raise ClaimsError(f"{path}: claim {item.get('id', '?')} lacks {exc}") from None
        _validate_rule(claim)
        claims.append(claim)
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ClaimsError(f"{path}: duplicate claim ids")
    untestable = [Untestable(u["id"], u["text"], u["why"]) for u in data.get("untestable", [])]
    return claims, untestable


def _validate_rule(claim: Claim) -> None:
    rule = claim.rule
    kind = rule.get("kind")
    if kind not in RULE_KINDS:
        raise ClaimsError(f"claim {claim.id}: unknown rule kind {kind!r}")
    unknown = set(rule.get("where", {})) - set(WHERE_KEYS)
    if unknown:
        raise ClaimsError(f"claim {claim.id}: unknown conditions {sorted(unknown)}")
    if "op" in rule:
        op = rule["op"]
        need = {"at_least": ("threshold",), "at_most": ("threshold",), "between": ("lo", "hi"),
                "approx": ("target", "rel_tol") if kind != "cell_points" else ("rel_tol",)}.get(op)
        if need is None:
            raise ClaimsError(f"claim {claim.id}: unknown comparison {op!r}")
        missing = [k for k in need if k not in rule]
        if missing:
            raise ClaimsError(f"claim {claim.id}: comparison {op} needs {missing}")


# -- model facts --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _shipped(model: str) -> Optional[tuple[bool, str]]:
    from bench.config.models import SHIPPED

    m = SHIPPED.get(model)
    return (m.unsloth_fast_path, m.config_dict().get("model_type", "")) if m else None


def model_fast_path(model: str) -> Optional[bool]:
    """True where Unsloth ships a hand-written model file for the architecture (bench.config.models.SHIPPED)."""
    facts = _shipped(model)
    return facts[0] if facts else None


def model_family(model: str) -> Optional[str]:
    """The shipped config's model_type, or None for a model the suite does not ship."""
    facts = _shipped(model)
    return facts[1] if facts else None


def base_params(entries: Sequence) -> dict[str, int]:
    """Base-model parameter count per model, from the records (total_params - trainable_params).

    The runner counts 4-bit weights as their unpacked element count, so this is the model's
    size as its config defines it; used only to class models (e.g. "7-8B").
    """
    out: dict[str, int] = {}
    for e in entries:
        r = e.record
        if r.total_params and r.trainable_params is not None:
            out[r.model] = max(out.get(r.model, 0), r.total_params - r.trainable_params)
    return out


def ran_unsloth_kernels(fast_paths: Optional[dict]) -> Optional[tuple[int, int]]:
    """(k, n) from a record's fast_paths: of the n fast paths Unsloth has a kernel for, k ran it.

    Counted by kernels_check (the module that fills fast_paths); None without a summary.
    """
    if not fast_paths:
        return None
    from kernels_check import count_unsloth_paths

    return count_unsloth_paths(fast_paths)


def fell_back(fast_paths: Optional[dict]) -> Optional[bool]:
    """True when some fast path with an Unsloth kernel ran another origin (kernels_check's reading of F2)."""
    counts = ran_unsloth_kernels(fast_paths)
    if counts is None or counts[1] == 0:
        return None
    return counts[0] < counts[1]


# -- conditions ------------------------------------------------------------------------------------
def _describe(key: str, value: Any) -> str:
    if key == "models":
        return "is of " + " / ".join(value)
    if key == "families":
        return "is of architecture family " + " / ".join(value)
    if key == "fast_path":
        return "is of an architecture " + ("with" if value else "without") + " an Unsloth fast path"
    if key == "param_range":
        return f"has {value[0] / 1e9:g}-{value[1] / 1e9:g}B parameters"
    if key == "tiers":
        return "is on tier " + " / ".join(value)
    if key == "modes":
        if list(value) == ["native"]:
            return "was measured natively (an emulated tier runs at the host GPU's speed)"
        return "was measured on a GPU (" + " or ".join(value) + ")"
    if key == "target_modules":
        return "targets " + ",".join(value)
    return f"has {key.replace('_', '-')} {value}"


def _meets(record, key: str, value: Any, params: dict[str, int]) -> bool:
    if key == "models":
        return record.model in value
    if key == "families":
        return model_family(record.model) in value
    if key == "fast_path":
        return model_fast_path(record.model) is value
    if key == "param_range":
        n = params.get(record.model)
        return n is not None and value[0] <= n <= value[1]
    if key == "tiers":
        return record.tier in value
    if key == "modes":
        return record.mode in value
    if key == "target_modules":
        return sorted(record.target_modules) == sorted(value)
    return getattr(record, key) == value


def select(items: Sequence, where: dict, record_of: Callable, noun: str, params: Optional[dict[str, int]] = None
           ) -> tuple[list, str]:
    """Items whose record meets every condition; with no item left, the first condition none met.

    `params`: base-model parameter counts per model (base_params), for the param_range condition.
    """
    params = params or {}
    kept = list(items)
    if not kept:
        return [], f"no {noun} measured"
    for key in WHERE_KEYS:
        if key not in where:
            continue
        before = len(kept)
        kept = [it for it in kept if _meets(record_of(it), key, where[key], params)]
        if not kept:
            return [], f"none of the {before} {noun} {_describe(key, where[key])}"
    return kept, ""


# -- comparisons and formatting -----------------------------------------------------------------
def compare(value: float, rule: dict, target: Optional[float] = None) -> bool:
    op = rule["op"]
    if op == "at_least":
        return value >= rule["threshold"]
    if op == "at_most":
        return value <= rule["threshold"]
    if op == "between":
        return rule["lo"] <= value <= rule["hi"]
    t = rule.get("target") if target is None else target
    return abs(value - t) <= rule["rel_tol"] * abs(t)


def rule_text(rule: dict, fmt: Callable[[float], str]) -> str:
    """'at least 1.36x', 'between 5 % and 25 %', 'within 15 % of 2.00x'."""
    op = rule.get("op")
    if op == "at_least":
        return f"at least {fmt(rule['threshold'])}"
    if op == "at_most":
        return f"at most {fmt(rule['threshold'])}"
    if op == "between":
        return f"between {fmt(rule['lo'])} and {fmt(rule['hi'])}"
    if op == "approx":
        if "target" in rule:
            return f"within {rule['rel_tol'] * 100:.0f} % of {fmt(rule['target'])}"
        return f"within {rule['rel_tol'] * 100:.0f} % of each stated figure"
    return ""


def _fmt_x(v: float) -> str:
    return f"{v:.2f}x"


def _fmt_pct(v: float) -> str:
    return f"{v * 100:.0f} %"


def _fmt_signed_pct(v: float) -> str:
    return f"{v * 100:+.0f} %"


def _fmt_gib(v: float) -> str:
    return f"{v:.2f} GiB"


def _fmt_mb(v: float) -> str:
    return f"{v / 1e6:.1f} MB"


def _link(ref: str) -> str:
    return f"[{ref}](#{ref})"


def _refs(entries: Sequence) -> str:
    return ", ".join(_link(e.ref) for e in entries)


def _pair_refs(pair) -> str:
    return f"{_link(pair[0].ref)}/{_link(pair[1].ref)}"


# -- the check --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    entries: Sequence  # every entry of the report
    pairs: Sequence  # comparable (hf, unsloth) entry tuples
    unmatched: Sequence  # both-ok pairs whose parity check failed: named, never used
    params: dict[str, int]  # base-model parameters per model


def check_claims(claims: Sequence[Claim], entries: Sequence, pairs: Sequence, unmatched_pairs: Sequence = ()
                 ) -> list[ClaimResult]:
    """One result per claim, in the claims file's order."""
    inp = Inputs(entries, pairs, unmatched_pairs, base_params(entries))
    out = []
    for claim in claims:
        verdict, measured = _CHECKS[claim.rule["kind"]](claim.rule, inp)
        out.append(ClaimResult(claim, verdict, measured))
    return out


def _pair_value(rule: dict, pair) -> Optional[float]:
    hf, un = pair[0].record, pair[1].record
    if rule["metric"] == "speedup":
        return measure.speedup(hf.tokens_per_s, un.tokens_per_s)
    return measure.memory_reduction(getattr(hf, rule["memory"]), getattr(un, rule["memory"]))


def _memory_label(field: str) -> str:
    return {"peak_device_bytes": "peak device memory", "peak_allocated_bytes": "peak allocated memory"}.get(field, field)


def _counted(n: int, noun: str) -> str:
    """'3 matched pairs (...)', '1 matched pair (...)'."""
    if n == 1:
        noun = noun.replace("pairs", "pair", 1).replace("cells", "cell", 1)
    return f"{n} {noun}"


def _aggregate_verdict(rule: dict, values: list[tuple[float, str]], fmt: Callable[[float], str], noun: str
                       ) -> tuple[str, str]:
    """Verdict over (value, refs) items: the median against the rule, or each item."""
    nums = [v for v, _ in values]
    refs = "; ".join(f"{fmt(v)} ({r})" for v, r in values)
    noun = _counted(len(nums), noun)
    if rule.get("aggregate", "each") == "median" and len(nums) > 1:
        med = statistics.median(nums)
        ok = compare(med, rule)
        text = f"median {fmt(med)} over {noun}, range {fmt(min(nums))} to {fmt(max(nums))}: {refs}"
    elif rule.get("aggregate", "each") == "median":
        ok = compare(nums[0], rule)
        text = f"{noun}: {refs}"
    else:
        failing = [v for v in nums if not compare(v, rule)]
        ok = not failing
        text = f"{noun}: {refs}"
        if failing:
            text += f"; {len(failing)} outside the rule"
    return (HOLDS if ok else FAILS), f"{text}. Rule: {rule_text(rule, fmt)}."


def _check_pair_metric(rule: dict, inp: Inputs) -> tuple[str, str]:
    pairs, unmatched = inp.pairs, inp.unmatched
    where = rule.get("where", {})
    kept, why = select(pairs, where, lambda p: p[1].record, "matched pairs", inp.params)
    excluded, _ = select(unmatched, where, lambda p: p[1].record, "pairs", inp.params)
    note = (f": {len(excluded)} pair(s) meeting the conditions failed the parity check (NOT MATCHED: "
            f"{', '.join(_pair_refs(p) for p in excluded)})") if excluded else ""
    values = [(v, _pair_refs(p)) for p in kept if (v := _pair_value(rule, p)) is not None]
    if not values:
        return NOT_MEASURED, (why or "the matched pairs lack the figures") + "." + (f" Excluded{note}." if note else "")
    if rule["metric"] == "speedup":
        fmt, noun = _fmt_x, "matched pairs (Unsloth tokens/s over HF)"
    else:
        fmt, noun = _fmt_pct, f"matched pairs ({_memory_label(rule['memory'])} saved by Unsloth)"
    verdict, text = _aggregate_verdict(rule, values, fmt, noun)
    return verdict, text + (f" Excluded{note}." if note else "")


def _gpu_cells(inp: Inputs, backend: Optional[str]) -> list:
    """GPU cells of `backend` (None / "any": both), leaving out the sides of pairs that are not matched."""
    excluded = {id(e) for pair in inp.unmatched for e in pair}
    return [e for e in inp.entries if e.record.mode != "cpu" and id(e) not in excluded
            and (backend in (None, "any") or e.record.backend == backend)]


def _cap_bytes(record) -> Optional[int]:
    """The memory an OOM cell ran out of: the emulation cap, else the native tier's usable memory."""
    if record.memory_limit_bytes:
        return record.memory_limit_bytes
    from bench.config.tiers import TIERS

    tier = TIERS.get(record.tier)
    return tier.usable_vram_bytes if tier else None


def _check_cell_value(rule: dict, inp: Inputs) -> tuple[str, str]:
    cells, why = select(_gpu_cells(inp, rule.get("backend")), rule.get("where", {}), lambda e: e.record, "cells", inp.params)
    values, oom_over = [], []
    for e in cells:
        v = getattr(e.record, rule["field"])
        if e.record.ok and v is not None:
            values.append((v / GiB, _link(e.ref)))
        elif e.record.status == "oom" and rule["op"] == "at_most":
            cap = _cap_bytes(e.record)
            if cap and cap / GiB >= rule["threshold"]:
                oom_over.append((cap / GiB, _link(e.ref)))
    if not values and not oom_over:
        return NOT_MEASURED, (why or "no cell meeting the conditions finished") + "."
    label = _memory_label(rule["field"])
    if oom_over:
        text = "; ".join(f"out of memory at a {v:.2f} GiB cap ({r})" for v, r in oom_over)
        if values:
            text += "; " + "; ".join(f"{_fmt_gib(v)} ({r})" for v, r in values)
        return FAILS, f"{label}: {text}. Rule: {rule_text(rule, _fmt_gib)}."
    verdict, text = _aggregate_verdict(rule, values, _fmt_gib, f"cells ({label})")
    return verdict, text


def _check_cell_points(rule: dict, inp: Inputs) -> tuple[str, str]:
    cells, why = select(_gpu_cells(inp, rule.get("backend")), rule.get("where", {}), lambda e: e.record, "cells", inp.params)
    parts, bad, measured_points = [], 0, 0
    for point in rule["points"]:
        hits = [e for e in cells if e.record.model == point["model"] and e.record.batch_size == point["batch_size"]
                and e.record.ok and getattr(e.record, rule["field"]) is not None]
        if not hits:
            continue
        measured_points += 1
        for e in hits:
            v = getattr(e.record, rule["field"]) / GiB
            ok = compare(v, rule, target=point["target"])
            bad += not ok
            parts.append(f"{point['model']} b{point['batch_size']}: {v:.2f} GiB vs {point['target']:g} "
                         f"({(v / point['target'] - 1) * 100:+.0f} %{'' if ok else ', outside'}) ({_link(e.ref)})")
    if not parts:
        return NOT_MEASURED, (why or "none of the stated model and batch-size points was measured") + "."
    text = (f"{measured_points} of {len(rule['points'])} stated points measured, {_counted(len(parts), 'cells')} "
            f"({_memory_label(rule['field'])}): "
            + "; ".join(parts) + f". Rule: {rule_text(rule, _fmt_gib)}.")
    return (FAILS if bad else HOLDS), text


def _check_fits(rule: dict, inp: Inputs) -> tuple[str, str]:
    cells, why = select(_gpu_cells(inp, rule.get("backend")), rule.get("where", {}), lambda e: e.record, "cells", inp.params)
    evidence = [e for e in cells if e.record.status in ("ok", "oom", "skipped")]
    if not evidence:
        extra = f" ({len(cells)} failed with errors, not memory)" if cells else ""
        return NOT_MEASURED, (why or "no cell meeting the conditions finished") + extra + "."
    from bench.config.tiers import TIERS

    parts, fits_any, barely_all = [], False, True
    for e in evidence:
        r = e.record
        tier = TIERS.get(r.tier)
        usable = tier.usable_vram_bytes if tier else None
        if r.fits_tier:
            fits_any = True
            frac = r.peak_device_bytes / usable if (usable and r.peak_device_bytes) else None
            barely = frac is not None and frac >= rule.get("barely_fraction", 0.8)
            barely_all &= barely
            use = f", device peak {r.peak_device_bytes / GiB:.2f} of {usable / GiB:.2f} GiB ({frac * 100:.0f} %)" \
                if frac is not None else ""
            parts.append(f"{r.backend} s{r.seq_len} b{r.batch_size} fits{use} ({_link(e.ref)})")
        else:
            barely_all = False
            what = {"ok": "exceeded the tier's memory outside the allocator cap", "oom": "out of memory",
                    "skipped": "not run: a smaller cell ran out of memory"}[r.status]
            parts.append(f"{r.backend} s{r.seq_len} b{r.batch_size} {what} ({_link(e.ref)})")
    text = "; ".join(parts)
    if rule.get("expect") == "barely":
        frac = rule.get("barely_fraction", 0.8)
        return (HOLDS if barely_all else FAILS), \
            f"{text}. Rule: fits with a device peak of at least {frac * 100:.0f} % of the tier's usable memory."
    return (HOLDS if fits_any else FAILS), f"{text}. Rule: at least one cell fits."


def _check_exact(rule: dict, inp: Inputs) -> tuple[str, str]:
    entries = inp.entries
    field = rule["field"]
    cells = [e for e in entries if getattr(e.record, field) is not None]
    cells, why = select(cells, rule.get("where", {}), lambda e: e.record, f"cells reporting {field}", inp.params)
    if not cells:
        return NOT_MEASURED, why + "."
    by_value: dict = {}
    for e in cells:
        by_value.setdefault(getattr(e.record, field), []).append(e)
    text = "; ".join(f"{v:,} ({_refs(es)})" for v, es in sorted(by_value.items()))
    ok = set(by_value) == {rule["value"]}
    return (HOLDS if ok else FAILS), f"{field.replace('_', ' ')}: {text}. Rule: exactly {rule['value']:,}."


def _variant_key(entry, field: str) -> tuple:
    skip = {field, "lora_alpha"} if field == "lora_r" else {field}
    key = CellKey.of(entry.record)
    targets = key.view(("target_modules",))[0][1] if field != "target_modules" else ()
    return (entry.host, targets) + key.values(f for f in VARIANT_FIELDS if f not in skip)


def variant_pairs(entries: Sequence, field: str, base: Any = None, variant: Any = None) -> list[tuple]:
    """(base entry, variant entry) of ok GPU cells alike in everything but `field` (and alpha, for rank).

    With base/variant None: consecutive values of `field` in ascending order (e.g. r8 -> r16 -> r32).
    """
    groups: dict = {}
    for e in entries:
        if e.record.ok and e.record.mode != "cpu":
            groups.setdefault(_variant_key(e, field), {})[getattr(e.record, field)] = e
    out = []
    for key in sorted(groups, key=repr):
        by_value = groups[key]
        if base is not None:
            if base in by_value and variant in by_value:
                out.append((by_value[base], by_value[variant]))
        else:
            values = sorted(by_value)
            out.extend((by_value[a], by_value[b]) for a, b in zip(values, values[1:]))
    return out


def _check_variant(rule: dict, inp: Inputs) -> tuple[str, str]:
    field, quantity = rule["field"], rule["quantity"]
    cells = _gpu_cells(inp, rule.get("backend"))
    cells, why = select(cells, rule.get("where", {}), lambda e: e.record, "cells", inp.params)
    pairs = variant_pairs(cells, field, rule.get("base"), rule.get("variant"))
    values = []
    for b, v in pairs:
        rb, rv = b.record, v.record
        if quantity == "time_overhead":
            ratio = measure.speedup(rb.tokens_per_s, rv.tokens_per_s)  # variant over base throughput
            x = 1.0 / ratio - 1.0 if ratio else None
        else:
            mb, mv = getattr(rb, rule["memory"]), getattr(rv, rule["memory"])
            if mb is None or mv is None:
                x = None
            elif quantity == "memory_reduction":
                x = measure.memory_reduction(mb, mv)
            elif quantity == "memory_saving":
                x = (mb - mv) / GiB
            else:  # memory_per_unit
                x = (mv - mb) / (getattr(rv, field) - getattr(rb, field))
        if x is not None:
            values.append((x, f"{_link(b.ref)} {getattr(rb, field)} -> {_link(v.ref)} {getattr(rv, field)}"))
    if not values:
        variants = (f"'{rule['base']}' vs '{rule['variant']}'" if "base" in rule else "several values")
        reason = why or f"no two cells alike but for {field.replace('_', ' ')} ({variants})"
        return NOT_MEASURED, reason + "."
    fmt = {"time_overhead": _fmt_signed_pct, "memory_reduction": _fmt_pct, "memory_saving": _fmt_gib,
           "memory_per_unit": _fmt_mb}[quantity]
    noun = {"time_overhead": "cell pairs (extra time per token)", "memory_reduction": "cell pairs (memory saved)",
            "memory_saving": "cell pairs (memory saved)", "memory_per_unit": "cell pairs (memory per unit of rank)"}
    return _aggregate_verdict(rule, values, fmt, noun[quantity])


def _check_consistency(rule: dict, inp: Inputs) -> tuple[str, str]:
    pairs = inp.pairs
    kept, why = select(pairs, rule.get("where", {}), lambda p: p[1].record, "matched pairs", inp.params)
    by_config: dict = {}
    for p in kept:
        r = p[1].record
        v = _pair_value({"metric": "memory_reduction", "memory": rule["memory"]}, p)
        if v is None:
            continue
        key = (r.model, r.seq_len, r.batch_size, r.lora_r, r.optimizer, r.gradient_checkpointing, r.grad_accum)
        by_config.setdefault(key, []).append((r.tier, v, p))
    multi = {k: vs for k, vs in sorted(by_config.items(), key=lambda kv: repr(kv[0])) if len({t for t, _, _ in vs}) > 1}
    if not multi:
        return NOT_MEASURED, (why or "no model, seq_len and batch size measured as matched pairs on two or more "
                                     "tiers") + "."
    parts, bad = [], 0
    for (model, seq, batch, *_), vs in multi.items():
        spread = max(v for _, v, _ in vs) - min(v for _, v, _ in vs)
        bad += spread > rule["max_spread"]
        each = ", ".join(f"{t} {_fmt_pct(v)} ({_pair_refs(p)})" for t, v, p in sorted(vs, key=lambda x: x[0]))
        parts.append(f"{model} s{seq} b{batch}: {each}, spread {spread * 100:.0f} points")
    text = "; ".join(parts) + (f". Rule: {_memory_label(rule['memory'])} saved differs by at most "
                               f"{rule['max_spread'] * 100:.0f} percentage points across tiers.")
    return (FAILS if bad else HOLDS), text


def _check_fast_path_coverage(rule: dict, inp: Inputs) -> tuple[str, str]:
    entries = inp.entries
    cells = [e for e in entries if e.record.backend == "unsloth" and fell_back(e.record.fast_paths) is not None]
    if not cells:
        return NOT_MEASURED, "no Unsloth record carries a fast-path summary (fast_paths, from kernels_check)."
    parts, bad = [], 0
    for e in cells:
        family = model_family(e.record.model)
        if family is None:
            continue
        k, n = ran_unsloth_kernels(e.record.fast_paths)
        expected = family in rule["families"]
        ok = fell_back(e.record.fast_paths) is not expected
        bad += not ok
        parts.append(f"{e.record.model} ({family}, {'listed' if expected else 'not listed'}): "
                     f"{k}/{n} fast paths on Unsloth kernels{'' if ok else ' (contradicts)'} ({_link(e.ref)})")
    if not parts:
        return NOT_MEASURED, "fast-path summaries only for architectures the suite does not ship."
    return (FAILS if bad else HOLDS), "; ".join(parts) + \
        (". Rule: a listed architecture ran Unsloth's kernel on every fast path that has one; any other fell "
         "back on at least one.")


def _check_fallback(rule: dict, inp: Inputs) -> tuple[str, str]:
    pairs = inp.pairs
    kept, why = select(pairs, rule.get("where", {}), lambda p: p[1].record, "matched pairs", inp.params)
    parts, bad, classes, sources = [], 0, set(), set()
    for p in kept:
        v = _pair_value({"metric": "memory_reduction", "memory": rule["memory"]}, p)
        if v is None:
            continue
        un = p[1].record
        traced = fell_back(un.fast_paths)
        if traced is not None:
            fallback, source = traced, "fast_paths"
        elif model_fast_path(un.model) is not None:
            fallback, source = not model_fast_path(un.model), "unsloth_fast_path flag"
        else:
            continue
        predicted = v < rule["threshold"]
        ok = predicted == fallback
        bad += not ok
        classes.add(fallback)
        sources.add(source)
        parts.append(f"{un.model} s{un.seq_len} b{un.batch_size}: {_fmt_pct(v)} saved, "
                     f"{'fallback' if fallback else 'fast path'} per {source}"
                     f"{'' if ok else ' (heuristic wrong)'} ({_pair_refs(p)})")
    if not parts:
        return NOT_MEASURED, (why or "no matched pair of an architecture whose fast-path state is known") + "."
    text = "; ".join(parts) + f". Rule: saving below {_fmt_pct(rule['threshold'])} exactly when the " \
                              f"architecture fell back. Evidence: {', '.join(sorted(sources))}."
    if not bad and len(classes) == 1:
        text += (" Only " + ("fallback" if True in classes else "fast-path")
                 + " architectures were measured: the other side of the heuristic is untested.")
    return (FAILS if bad else HOLDS), text


_CHECKS: dict[str, Callable] = {
    "pair_metric": _check_pair_metric,
    "cell_value": _check_cell_value,
    "cell_points": _check_cell_points,
    "fits": _check_fits,
    "exact": _check_exact,
    "variant": _check_variant,
    "consistency_across_tiers": _check_consistency,
    "fast_path_coverage": _check_fast_path_coverage,
    "fallback_heuristic": _check_fallback,
}

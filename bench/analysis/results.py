"""The report's data model: results files -> entries -> environment groups -> pairs, recipes, tables.

Records are grouped by environment (tier, mode, host GPU): records from different GPUs are never
merged into one group or one pair. Within one host the latest record of a cell wins (the one rule,
bench.schema.store.latest_indexes). Every entry gets a cell reference (c1, c2, ...) in report
order, which every figure of the report cites. No text here: bench.render.report writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from bench.analysis.frame import records_frame
from bench.config.tiers import TIERS
from bench.schema.key import MEMORY_FIELDS, TABLE_FIELDS, CellKey
from bench.schema.pairs import DEFAULT_REFERENCE, Pair, annotate_parity, pair_records
from bench.schema.record import ResultRecord, ResultsError
from bench.schema.store import hosts_of, latest_indexes, read_records

MODE_ORDER = {"native": 0, "emulated": 1, "cpu": 2}


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


def load_results(paths: Sequence[Union[str, Path]], reference: str = DEFAULT_REFERENCE) -> Results:
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
    latest = [Entry(raw[i][0], raw[i][1], i, hosts[i]) for i in latest_indexes(records)]
    groups: dict[tuple, Group] = {}
    for e in latest:
        key = (e.record.tier, e.record.mode, e.host)
        groups.setdefault(key, Group(*key)).entries.append(e)
    ordered = sorted(groups.values(), key=lambda g: (tier_rank(g.tier), MODE_ORDER.get(g.mode, 9), g.host))
    for g in ordered:
        annotate_parity([e.record for e in g.entries], reference)
        g.entries.sort(key=_entry_sort_key)
        g.pairs = pair_records(g.entries, reference)
    for n, e in enumerate((e for g in ordered for e in g.entries), 1):
        e.ref = f"c{n}"
    return Results(unique, ordered, len(raw) - len(latest), split_pair_keys([e for g in ordered for e in g.entries]))


def split_pair_keys(entries: Sequence[Entry]) -> list[str]:
    """Pair keys whose hf and unsloth sides were measured on different hosts, sorted."""
    if not entries:
        return []
    cells = records_frame(entries)
    hosts = cells.groupby(["pair_key", "backend"])["host"].agg(frozenset).unstack("backend")
    hosts = hosts.reindex(columns=["hf", "unsloth"])
    both = hosts["hf"].notna() & hosts["unsloth"].notna()
    return sorted(hosts.index[both & (hosts["hf"] != hosts["unsloth"])])


def tier_rank(tier: str) -> tuple:
    """Sort key: the tiers in bench.config.tiers order, unknown ones after them by name."""
    names = list(TIERS)
    return (names.index(tier), tier) if tier in names else (len(names), tier)


def settings_key(r: ResultRecord) -> tuple:
    """Everything but the backend's own checkpointing that must match for rows to share a table."""
    return CellKey.of(r).values(TABLE_FIELDS)


def memory_recipe(r: ResultRecord) -> tuple:
    """The values of the settings that change peak memory (bench.schema.key.MEMORY_FIELDS)."""
    return CellKey.of(r).values(f for f, _ in MEMORY_FIELDS)


def _entry_sort_key(e: Entry) -> tuple:
    r = e.record
    return (r.model, repr(settings_key(r)), r.seq_len, r.batch_size, r.pair_key, 0 if r.backend == "hf" else 1)


@dataclass
class RecipeView:
    """The cells of one model under one memory recipe in a group.

    `differing` holds (field label, value) of the MEMORY_FIELDS in which the model's recipes in the
    group differ; it is empty when the model has one recipe there (then `group` is the group itself).
    """

    model: str
    differing: tuple[tuple[str, Any], ...]
    group: Group


def recipe_views(group: Group) -> list[RecipeView]:
    """One view per model and memory recipe of a group, so that a fit verdict or a recommendation
    never rests on a cell of another recipe (a LoRA rank 16 run beside a rank 64 one, say)."""
    out = []
    for model in group.models:
        mine = [e for e in group.entries if e.record.model == model]
        recipes = sorted({memory_recipe(e.record) for e in mine}, key=repr)
        if len(recipes) == 1:
            out.append(RecipeView(model, (), group))
            continue
        differing = [i for i in range(len(MEMORY_FIELDS)) if len({rc[i] for rc in recipes}) > 1]
        for rc in recipes:
            entries = [e for e in mine if memory_recipe(e.record) == rc]
            keys = {e.record.pair_key for e in entries}
            view = Group(group.tier, group.mode, group.host, entries, [p for p in group.pairs if p.pair_key in keys])
            out.append(RecipeView(model, tuple((MEMORY_FIELDS[i][1], rc[i]) for i in differing), view))
    return out


@dataclass
class TableSpec:
    """One comparison table: a model under one set of training settings (TABLE_FIELDS) in one group."""

    group: Group
    model: str
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
    """The group's tables: per model, one per set of training settings; rows by seq_len, batch size."""
    by_key: dict[tuple, list[Pair[Entry]]] = {}
    for p in group.pairs:
        r = p.any.record
        by_key.setdefault((r.model, settings_key(r)), []).append(p)
    specs: list[TableSpec] = []
    for model in group.models:
        keys = sorted((k for k in by_key if k[0] == model), key=repr)
        for i, key in enumerate(keys):
            pairs = sorted(by_key[key], key=lambda p: (p.any.record.seq_len, p.any.record.batch_size, p.pair_key))
            specs.append(TableSpec(group, model, pairs, i, len(keys)))
    return specs

"""The report's data model: results files -> entries -> environment groups -> pairs, recipes, tables.

Records are grouped by environment (tier, mode, host GPU): records from different GPUs are never
merged into one group or one pair. Within one host the latest record of a cell wins (the one rule,
bench.schema.store.latest_indexes); its entry also holds the records of every repeat of the cell's
latest run (bench.schema.store.latest_repeats), which its speed is read from (bench.analysis.speed).
Every entry gets a cell reference (c1, c2, ...) in report order, which every figure of the report cites. No text here: bench.render.report writes it.

Recipes: every configuration (pair_key) may hold a cell of several recipes; each candidate recipe is
compared with the *reference* recipe (the requested one, default hf-trl, else the first of
bench.schema.pairs.REFERENCE_FALLBACK measured; bench.schema.pairs.pair_records). A comparison
table has one reference for all its rows and says when it fell back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from bench.config.recipes import RECIPES
from bench.config.tiers import TIERS
from bench.schema.key import MEMORY_FIELDS, TABLE_FIELDS, CellKey
from bench.schema.pairs import DEFAULT_REFERENCE, Pair, annotate_parity, pair_records, reference_for
from bench.schema.record import ResultRecord, ResultsError
from bench.schema.store import hosts_of, latest_repeat_indexes, read_records, representative_index

MODE_ORDER = {"native": 0, "emulated": 1, "cpu": 2}
#: The order recipes appear in (after the reference): bench.config.recipes order.
RECIPE_ORDER = tuple(RECIPES)


def recipe_rank(recipe: str, reference: Optional[str] = None) -> tuple:
    """Sort key of a recipe: the reference first, then RECIPE_ORDER, unknown names after them by name."""
    names = list(RECIPE_ORDER)
    return (0 if recipe == reference else 1, names.index(recipe) if recipe in names else len(names), recipe)


def ordered_recipes(recipes: Iterable[str], reference: Optional[str] = None) -> list[str]:
    """The distinct `recipes`, the reference first, then RECIPE_ORDER."""
    return sorted(set(recipes), key=lambda r: recipe_rank(r, reference))


@dataclass
class Entry:
    """One record with where it came from and its reference in the report."""

    record: ResultRecord
    path: Path  # results file, as given
    order: int  # position over all inputs (files in argument order, lines in order)
    host: str  # host GPU name; "CPU" in cpu mode
    ref: str = ""  # "c1", "c2", ... (assigned after sorting)
    # the records of every repeat of this cell's latest run on this host (bench.schema.store.latest_repeats),
    # what its speed and interval are read from (bench.analysis.speed); empty: the record is the only one
    repeat_records: list[ResultRecord] = field(default_factory=list)


@dataclass
class Group:
    """Records of one tier, mode and host GPU: one environment block, its own tables."""

    tier: str
    mode: str
    host: str
    entries: list[Entry] = field(default_factory=list)
    pairs: list[Pair[Entry]] = field(default_factory=list)  # every candidate against its configuration's reference
    reference: str = DEFAULT_REFERENCE  # the requested reference recipe

    @property
    def models(self) -> list[str]:
        return sorted({e.record.model for e in self.entries})

    @property
    def recipes(self) -> list[str]:
        """The recipes measured in the group, the group's reference first."""
        return ordered_recipes((e.record.recipe for e in self.entries), self.group_reference)

    @property
    def group_reference(self) -> Optional[str]:
        """The reference the group's cells are compared with: the requested one, else the first fallback measured."""
        return reference_for({e.record.recipe for e in self.entries}, self.reference)


@dataclass
class Results:
    paths: list[Path]
    groups: list[Group]
    superseded: int  # records replaced by a later record of the same cell on the same host (not its repeats)
    split_pairs: list[str]  # pair keys whose recipes were measured on different hosts
    reference: str = DEFAULT_REFERENCE  # the requested reference recipe

    @property
    def entries(self) -> list[Entry]:
        return [e for g in self.groups for e in g.entries]


def load_results(paths: Sequence[Union[str, Path]], reference: str = DEFAULT_REFERENCE) -> Results:
    """Read results files into environment groups; raise ResultsError on bad input.

    Bad input (exit 2 at the CLI): no file, an unreadable or empty file, invalid JSON, a record of
    another schema version (read_records names file and line). Records of different host GPUs
    are kept apart; within one host the last record of a cell wins (a resumed run re-measures).
    `reference`: the recipe every candidate is compared with (parity, speed-ups, savings).
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
    # the one latest-record rule, read once: each cell's latest repeats, in the order of the record standing for them
    chosen = sorted((representative_index(records, s), s) for s in latest_repeat_indexes(records))
    latest = [Entry(raw[i][0], raw[i][1], i, hosts[i], repeat_records=[records[k] for k in s]) for i, s in chosen]
    groups: dict[tuple, Group] = {}
    for e in latest:
        key = (e.record.tier, e.record.mode, e.host)
        groups.setdefault(key, Group(*key, reference=reference)).entries.append(e)
    ordered = sorted(groups.values(), key=lambda g: (tier_rank(g.tier), MODE_ORDER.get(g.mode, 9), g.host))
    for g in ordered:
        annotate_parity([e.record for e in g.entries], reference)
        group_ref = g.group_reference
        g.entries.sort(key=lambda e: _entry_sort_key(e, group_ref))
        g.pairs = pair_records(g.entries, reference)
    for n, e in enumerate((e for g in ordered for e in g.entries), 1):
        e.ref = f"c{n}"
    kept = sum(len(s) for _, s in chosen)  # every repeat of a latest measurement is kept
    return Results(unique, ordered, len(raw) - kept, split_pair_keys([e for g in ordered for e in g.entries]),
                   reference)


def split_pair_keys(entries: Sequence[Entry]) -> list[str]:
    """Pair keys whose recipes were measured on different hosts (the hosts of one recipe's cells differ
    from another's), sorted: their sides sit in different groups and are never compared."""
    hosts: dict[str, dict[str, set[str]]] = {}
    for e in entries:
        hosts.setdefault(e.record.pair_key, {}).setdefault(e.record.recipe, set()).add(e.host)
    return sorted(k for k, by_recipe in hosts.items() if len({frozenset(v) for v in by_recipe.values()}) > 1)


def tier_rank(tier: str) -> tuple:
    """Sort key: the tiers in bench.config.tiers order, unknown ones after them by name."""
    names = list(TIERS)
    return (names.index(tier), tier) if tier in names else (len(names), tier)


def settings_key(r: ResultRecord) -> tuple:
    """Everything but the recipe's own checkpointing that must match for rows to share a table."""
    return CellKey.of(r).values(TABLE_FIELDS)


def memory_settings(r: ResultRecord) -> tuple:
    """The values of the settings that change peak memory (bench.schema.key.MEMORY_FIELDS)."""
    return CellKey.of(r).values(f for f, _ in MEMORY_FIELDS)


def _entry_sort_key(e: Entry, reference: Optional[str]) -> tuple:
    r = e.record
    return (r.model, repr(settings_key(r)), r.seq_len, r.batch_size, r.pair_key, recipe_rank(r.recipe, reference))


@dataclass
class SettingsView:
    """The cells of one model under one set of memory settings in a group.

    `differing` holds (field label, value) of the MEMORY_FIELDS in which the model's cells in the
    group differ; it is empty when the model has one set of settings there (then `group` is the
    group itself).
    """

    model: str
    differing: tuple[tuple[str, Any], ...]
    group: Group


def settings_views(group: Group) -> list[SettingsView]:
    """One view per model and set of memory settings of a group, so that a fit verdict or a
    recommendation never rests on a cell of other settings (a LoRA rank 16 run beside a rank 64 one)."""
    out = []
    for model in group.models:
        mine = [e for e in group.entries if e.record.model == model]
        variants = sorted({memory_settings(e.record) for e in mine}, key=repr)
        if len(variants) == 1:
            out.append(SettingsView(model, (), group))
            continue
        differing = [i for i in range(len(MEMORY_FIELDS)) if len({v[i] for v in variants}) > 1]
        for v in variants:
            entries = [e for e in mine if memory_settings(e.record) == v]
            keys = {e.record.pair_key for e in entries}
            view = Group(group.tier, group.mode, group.host, entries, [p for p in group.pairs if p.pair_key in keys],
                         reference=group.reference)
            out.append(SettingsView(model, tuple((MEMORY_FIELDS[i][1], v[i]) for i in differing), view))
    return out


@dataclass
class TableRow:
    """One configuration of a table: its cells by recipe and each candidate's pair against the table's reference."""

    pair_key: str
    cells: dict[str, Entry]  # recipe -> entry
    pairs: dict[str, Pair[Entry]]  # candidate recipe -> pair (reference side None where it was not measured)

    @property
    def record(self) -> ResultRecord:
        return next(iter(self.cells.values())).record


@dataclass
class TableSpec:
    """One comparison table: a model under one set of training settings (TABLE_FIELDS) in one group."""

    group: Group
    model: str
    rows: list[TableRow]
    recipes: list[str]  # measured in the table, the reference first
    reference: Optional[str]  # None: no recipe of REFERENCE_FALLBACK measured here
    index: int  # among the model's tables in the group (plot names)
    total: int

    @property
    def requested_reference(self) -> str:
        return self.group.reference

    @property
    def reference_fell_back(self) -> bool:
        """The requested reference was not measured in this table (another one, or none, stands in)."""
        return self.reference != self.group.reference

    @property
    def candidates(self) -> list[str]:
        return [r for r in self.recipes if r != self.reference]

    @property
    def entries(self) -> list[Entry]:
        return [e for row in self.rows for e in row.cells.values()]

    @property
    def records(self) -> list[ResultRecord]:
        return [e.record for e in self.entries]


def _row_pairs(pair_key: str, cells: dict[str, Entry], reference: Optional[str], group: Group) -> dict[str, Pair]:
    """Each candidate's pair against `reference` (the group's pair of the configuration where it has one)."""
    out = {}
    for p in group.pairs:
        if p.pair_key == pair_key and p.candidate is not None and p.reference is not None \
                and p.reference.record.recipe == reference:
            out[p.candidate.record.recipe] = p
    for recipe, e in cells.items():
        if recipe != reference and recipe not in out:
            out[recipe] = Pair(pair_key, cells.get(reference) if reference else None, e)
    return out


def table_specs(group: Group) -> list[TableSpec]:
    """The group's tables: per model, one per set of training settings; rows by seq_len, batch size."""
    by_key: dict[tuple, dict[str, dict[str, Entry]]] = {}
    for e in group.entries:
        r = e.record
        by_key.setdefault((r.model, settings_key(r)), {}).setdefault(r.pair_key, {})[r.recipe] = e
    specs: list[TableSpec] = []
    for model in group.models:
        keys = sorted((k for k in by_key if k[0] == model), key=repr)
        for i, key in enumerate(keys):
            configs = by_key[key]
            reference = reference_for({rc for cells in configs.values() for rc in cells}, group.reference)
            rows = [TableRow(pk, cells, _row_pairs(pk, cells, reference, group)) for pk, cells in configs.items()]
            rows.sort(key=lambda row: (row.record.seq_len, row.record.batch_size, row.pair_key))
            recipes = ordered_recipes((rc for cells in configs.values() for rc in cells), reference)
            specs.append(TableSpec(group, model, rows, recipes, reference, i, len(keys)))
    return specs

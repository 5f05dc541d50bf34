"""JSON Lines storage of result records, and the one "latest record of a cell" rule.

Records are appended and fsync'ed as soon as a cell finishes, so a run that dies loses at most the
cell in flight. Every consumer (console, report, gate, estimator validation) reads records through
`read_records` / `load`; when a file holds several records of one cell (a resumed run re-measures
failed cells), the last one wins (`latest_repeat_indexes`: per repeat with `--repeats`), and one record
stands for each cell (`latest_per_cell`) where a consumer takes one; `latest_repeats` gives them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from bench.schema.pairs import DEFAULT_REFERENCE, annotate_parity
from bench.schema.record import FINISHED_STATUSES, ResultRecord, ResultsError, upgrade


def append_record(path: Path, record: ResultRecord) -> None:
    """Append one record and fsync it, so a crash right after loses nothing already written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path) -> list[ResultRecord]:
    """Records of one JSONL file, validated; raise ResultsError with file and line on bad input."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from exc
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(data, dict):
            raise ResultsError(f"{path}:{lineno}: a record must be a JSON object")
        try:
            records.append(ResultRecord.from_dict(upgrade(data)))
        except (ResultsError, TypeError) as exc:
            raise ResultsError(f"{path}:{lineno}: {exc}") from exc
    return records


def _read_all(paths: Iterable[Path], allow_empty: bool) -> list[ResultRecord]:
    records: list[ResultRecord] = []
    for p in paths:
        recs = read_records(p)
        if not recs and not allow_empty:
            raise ResultsError(f"results file {p} holds no records")
        records.extend(recs)
    return records


def load(paths: Iterable[Path], allow_empty: bool = False, reference: str = DEFAULT_REFERENCE) -> list[ResultRecord]:
    """Records of several files, the latest of each cell (`latest_per_cell`), each with its parity
    against `reference` (bench.schema.pairs.annotate_parity)."""
    return annotate_parity(latest_per_cell(_read_all(paths, allow_empty)), reference)


def load_with_repeats(paths: Iterable[Path], allow_empty: bool = False, reference: str = DEFAULT_REFERENCE
                      ) -> tuple[list[ResultRecord], dict[str, list[ResultRecord]]]:
    """`load`'s records and each cell's latest repeats (`latest_repeats`: cell_id -> records), the files read
    once. For the records of one host (the gate's): ResultsError when a cell was measured on two."""
    records = _read_all(paths, allow_empty)
    try:
        repeats = latest_repeats(records)
    except ValueError:
        hosts = sorted(set(hosts_of(records)))
        raise ResultsError(f"these results hold cells measured on more than one GPU ({', '.join(hosts)}): a baseline "
                           "or a gate compares one GPU's cells; pass the results of one GPU") from None
    return annotate_parity([representative(reps) for reps in repeats.values()], reference), repeats


def hosts_of(records: list[ResultRecord]) -> list[str]:
    """The host each record was measured on: its GPU name ("CPU" in cpu mode). A record without a GPU
    name (a failure written by the launcher) takes the GPU its run's other records name."""
    run_gpu: dict[str, str] = {}
    for r in records:
        if r.mode != "cpu" and r.env.get("gpu_name"):
            run_gpu.setdefault(r.run_id, r.env["gpu_name"])
    return ["CPU" if r.mode == "cpu" else (r.env.get("gpu_name") or run_gpu.get(r.run_id) or "unknown GPU")
            for r in records]


def latest_repeat_indexes(records: list[ResultRecord]) -> list[list[int]]:
    """The one "latest record" rule, as indexes into `records`: for each cell on each host, the indexes of its
    latest measurement's repeats, ordered by repeat; the cells in the order of their representative
    (`representative_index`).

    A cell (cell_id, which names tier and mode) measured again on the same host replaces the earlier
    measurement; the same cell measured on another GPU is another result. With `--repeats N` a measurement
    is N records (repeat 0..N-1, each from a fresh worker): the cell's last record says N, and each repeat
    index keeps its own last record of N repeats. A resumed run re-measures only the repeats that did not
    finish, so the repeats of one measurement may come from more than one run_id. A record of another
    repeat count (an earlier measurement with --repeats 3, say) is replaced as a whole.
    """
    hosts = hosts_of(records)
    by_cell: dict[tuple[str, str], list[int]] = {}
    for i, (r, h) in enumerate(zip(records, hosts)):
        by_cell.setdefault((r.cell_id, h), []).append(i)
    sets = []
    for indexes in by_cell.values():
        n = records[indexes[-1]].repeats
        last = {records[i].repeat: i for i in indexes if records[i].repeats == n}
        sets.append([last[k] for k in sorted(last)])
    return sorted(sets, key=lambda s: representative_index(records, s))


def representative(repeats: list[ResultRecord]) -> ResultRecord:
    """The record that stands for a cell's repeats (ordered by repeat; `latest_per_cell`): the first repeat
    that did not run ok, else the first (repeat 0). So a cell reads ok only when every repeat of it ran ok,
    and a consumer of one record per cell sees one repeat's figures (the intervals over all repeats are
    analysis's, from `latest_repeats`)."""
    return next((r for r in repeats if not r.ok), repeats[0])


def representative_index(records: list[ResultRecord], repeat_indexes: list[int]) -> int:
    """The index of the `representative` of the repeats at `repeat_indexes`."""
    chosen = representative([records[i] for i in repeat_indexes])
    return next(i for i in repeat_indexes if records[i] is chosen)


def latest_indexes(records: list[ResultRecord]) -> list[int]:
    """Indexes of the record that stands for each cell on each host (`representative_index` of its latest
    repeats, `latest_repeat_indexes`), in file order."""
    return sorted(representative_index(records, s) for s in latest_repeat_indexes(records))


def latest_per_cell(records: list[ResultRecord]) -> list[ResultRecord]:
    """One record per cell and host, the latest measurement's representative (`latest_indexes`), in order."""
    return [records[i] for i in latest_indexes(records)]


def latest_repeats(records: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """cell_id -> its latest measurement's records, one per repeat, ordered by repeat (`latest_repeat_indexes`).

    For the records of one host (a run's results file, or one environment group of a report): a cell
    measured on two hosts is two results, so it raises ValueError; use `latest_repeat_indexes` over records
    of several hosts."""
    out: dict[str, list[ResultRecord]] = {}
    for indexes in latest_repeat_indexes(records):
        cell_id = records[indexes[0]].cell_id
        if cell_id in out:
            raise ValueError(f"cell {cell_id} was measured on more than one host: group the records by host first "
                             "(bench.schema.store.hosts_of) or use latest_repeat_indexes")
        out[cell_id] = [records[i] for i in indexes]
    return out


def cell_finished(repeats: list[ResultRecord], wanted: int) -> bool:
    """Whether --resume leaves a cell alone, given its latest repeats (`latest_repeats`) and the repeats the run
    asks for: every repeat 0..wanted-1 finished (FINISHED_STATUSES), or one ended in a finished status that is
    not ok (out of memory, skipped, a NaN loss: measuring it again would end the same)."""
    if any(r.status in FINISHED_STATUSES and not r.ok for r in repeats):
        return True
    done = {r.repeat for r in repeats if r.status in FINISHED_STATUSES and r.repeats == wanted}
    return done >= set(range(wanted))


def finished_cell_ids(path: Path) -> set[str]:
    """cell_ids that --resume skips (`cell_finished`), with the repeat count the file's records say."""
    if not Path(path).exists():
        return set()
    records = read_records(path)
    sets = [[records[i] for i in s] for s in latest_repeat_indexes(records)]
    return {reps[0].cell_id for reps in sets if cell_finished(reps, reps[-1].repeats)}

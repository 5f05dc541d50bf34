"""JSON Lines storage of result records, and the one "latest record of a cell" rule.

Records are appended and fsync'ed as soon as a cell finishes, so a run that dies loses at most the
cell in flight. Every consumer (console, report, gate, estimator validation) reads records through
`read_records` / `load`; when a file holds several records of one cell (a resumed run re-measures
failed cells), the last one wins (`latest_per_cell`).
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


def load(paths: Iterable[Path], allow_empty: bool = False, reference: str = DEFAULT_REFERENCE) -> list[ResultRecord]:
    """Records of several files, the latest of each cell (`latest_per_cell`), each with its parity
    against `reference` (bench.schema.pairs.annotate_parity)."""
    records: list[ResultRecord] = []
    for p in paths:
        recs = read_records(p)
        if not recs and not allow_empty:
            raise ResultsError(f"results file {p} holds no records")
        records.extend(recs)
    return annotate_parity(latest_per_cell(records), reference)


def hosts_of(records: list[ResultRecord]) -> list[str]:
    """The host each record was measured on: its GPU name ("CPU" in cpu mode). A record without a GPU
    name (a failure written by the launcher) takes the GPU its run's other records name."""
    run_gpu: dict[str, str] = {}
    for r in records:
        if r.mode != "cpu" and r.env.get("gpu_name"):
            run_gpu.setdefault(r.run_id, r.env["gpu_name"])
    return ["CPU" if r.mode == "cpu" else (r.env.get("gpu_name") or run_gpu.get(r.run_id) or "unknown GPU")
            for r in records]


def latest_indexes(records: list[ResultRecord]) -> list[int]:
    """Indexes of the records that are the latest of their cell on their host, in order.

    The one "latest record" rule: a cell (cell_id, which names tier and mode) measured again on the
    same host replaces the earlier record (a resumed run re-measures failed cells); the same cell
    measured on another GPU is another result.
    """
    hosts = hosts_of(records)
    last = {(r.cell_id, h): i for i, (r, h) in enumerate(zip(records, hosts))}
    return [i for i, (r, h) in enumerate(zip(records, hosts)) if last[(r.cell_id, h)] == i]


def latest_per_cell(records: list[ResultRecord]) -> list[ResultRecord]:
    """The latest record of each cell on each host (`latest_indexes`), in order."""
    return [records[i] for i in latest_indexes(records)]


def latest_repeats(records: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """cell_id -> the records of every repeat of the cell's latest run (the run_id of its last record),
    in repeat order; of several records of one cell, run and repeat (a resumed run), the last is kept."""
    latest_run = {r.cell_id: r.run_id for r in records}
    by_repeat: dict[str, dict[int, ResultRecord]] = {}
    for r in records:
        if r.run_id == latest_run[r.cell_id]:
            by_repeat.setdefault(r.cell_id, {})[r.repeat] = r
    return {cell: [reps[k] for k in sorted(reps)] for cell, reps in by_repeat.items()}


def finished_cell_ids(path: Path) -> set[str]:
    """cell_ids that --resume skips: those whose latest record is ok, oom or skipped."""
    if not Path(path).exists():
        return set()
    return {r.cell_id for r in latest_per_cell(read_records(path)) if r.status in FINISHED_STATUSES}

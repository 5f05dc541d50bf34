"""Which regen_all.sh parts are current: reads the parts table (stdin, `part|kind|minutes|what|files`, as
scripts/gpu/regen_all.sh holds it) and each part's committed files under reports/, and prints per part the
records, their schema versions, the dates and commits they name, and "current" (every record at today's
schema, every commit in this repository) or what is still to re-measure. Run from the repository root:
`bash scripts/gpu/regen_all.sh status`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.run.env import commits_not_in_repository
from bench.schema.record import SCHEMA_VERSION


def part_files(files: str) -> list[Path]:
    """The results files a part writes: its .jsonl / .json paths, a folder's *.jsonl."""
    paths: list[Path] = []
    for f in files.split():
        p = Path("reports") / f
        paths += sorted(p.glob("*.jsonl")) if f.endswith("/") else [p] if p.suffix in (".jsonl", ".json") else []
    return paths


def rows_of(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [json.loads(text)]


def commit_of(row: dict) -> str:
    """A record's suite commit (results and kernels-check files: env.git_commit; pytest-benchmark: commit_info.id)."""
    return str((row.get("env") or {}).get("git_commit") or (row.get("commit_info") or {}).get("id"))


def main() -> int:
    parts = []
    for line in sys.stdin.read().splitlines():
        if not line.strip():
            continue
        name, _kind, _minutes, _what, files = line.split("|")
        paths = part_files(files)
        rows = [(p, r) for p in paths if p.exists() for r in rows_of(p)]
        parts.append((name, paths, rows))
    missing = set(commits_not_in_repository({commit_of(r) for _, _, rows in parts for _, r in rows}))
    print(f"{'part':<14} {'files':>5} {'records':>7}  {'schema':<7} {'measured':<22}  state (commits)")
    for name, paths, rows in parts:
        commits = sorted({commit_of(r) for _, r in rows})
        schemas = sorted({r.get("schema_version") for p, r in rows if p.suffix == ".jsonl"}, key=str)
        dates = sorted(str(r.get("finished_at") or r.get("datetime"))[:10] for _, r in rows
                       if r.get("finished_at") or r.get("datetime"))
        why = [] if rows else ["nothing committed"]
        old = [str(v) for v in schemas if v != SCHEMA_VERSION]
        why += [f"schema {','.join(old)} records"] if old else []
        bad = [c for c in commits if c in missing]
        why += ["commits not in this repository: " + ", ".join(c.replace("\n", " ")[:12] for c in bad)] if bad else []
        state = "re-measure: " + "; ".join(why) if why else "current"
        span = f"{dates[0]}..{dates[-1]}" if dates else "-"
        shown = ", ".join(c.replace("\n", " ")[:8] for c in commits) or "-"
        present = sum(p.exists() for p in paths)
        print(f"{name:<14} {present:>5} {len(rows):>7}  {','.join(map(str, schemas)) or '-':<7} {span:<22}  {state} ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

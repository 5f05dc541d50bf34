"""The committed GPU evidence files, read for scripts/gpu/regen_all.sh (run from the repository root):

  python3 scripts/gpu/evidence_files.py status < PARTS
      per regen_all.sh part (stdin: its `part|kind|minutes|what|files` table), the records of its committed
      files under reports/, their schema versions, the dates and commits they name, and "current" (every
      record at today's schema, every commit an id of one commit of this repository) or what is still to re-measure
  python3 scripts/gpu/evidence_files.py bad-commits FILE...
      the commits the given results / kernels-check / pytest-benchmark files name that are not ids (7 to 40 digits) of one commit of
      this repository (one per line; nothing when all are): regen_all.sh install refuses them
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's bench, installed or not
from bench.run.env import commits_not_in_repository
from bench.schema.record import SCHEMA_VERSION


def rows_of(path: Path) -> list[dict]:
    """A .jsonl file's records, or a .json file's one document."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [json.loads(text)]


def commit_of(row: dict) -> str:
    """A record's suite commit (results and kernels-check files: env.git_commit; pytest-benchmark: commit_info.id)."""
    return str((row.get("env") or {}).get("git_commit") or (row.get("commit_info") or {}).get("id"))


def bad_commits(commits) -> set[str]:
    """Of `commits`, those that do not name one commit of this repository (bench.run.env's rule: a placeholder,
    "unknown", a mistyped id, an abbreviation of several commits)."""
    return set(commits_not_in_repository(commits))


def part_files(files: str) -> list[Path]:
    """The results files a part writes: its .jsonl / .json paths, a folder's *.jsonl."""
    paths: list[Path] = []
    for f in files.split():
        p = Path("reports") / f
        paths += sorted(p.glob("*.jsonl")) if f.endswith("/") else [p] if p.suffix in (".jsonl", ".json") else []
    return paths


def status(table: str) -> None:
    parts = []
    for line in table.splitlines():
        if not line.strip():
            continue
        name, _kind, _minutes, _what, files = line.split("|")
        paths = part_files(files)
        rows = [(p, r) for p in paths if p.exists() for r in rows_of(p)]
        parts.append((name, paths, rows))
    bad = bad_commits(commit_of(r) for _, _, rows in parts for _, r in rows)
    print(f"{'part':<14} {'files':>5} {'records':>7}  {'schema':<7} {'measured':<22}  state (commits)")
    for name, paths, rows in parts:
        commits = sorted({commit_of(r) for _, r in rows})
        schemas = sorted({r.get("schema_version") for p, r in rows if p.suffix == ".jsonl"}, key=str)
        dates = sorted(str(r.get("finished_at") or r.get("datetime"))[:10] for _, r in rows
                       if r.get("finished_at") or r.get("datetime"))
        why = [] if rows else ["nothing committed"]
        old = [str(v) for v in schemas if v != SCHEMA_VERSION]
        why += [f"schema {','.join(old)} records"] if old else []
        named = [c for c in commits if c in bad]
        why += ["commits not in this repository: " + ", ".join(c.replace("\n", " ")[:12] for c in named)] if named else []
        state = "re-measure: " + "; ".join(why) if why else "current"
        span = f"{dates[0]}..{dates[-1]}" if dates else "-"
        shown = ", ".join(c.replace("\n", " ")[:8] for c in commits) or "-"
        present = sum(p.exists() for p in paths)
        print(f"{name:<14} {present:>5} {len(rows):>7}  {','.join(map(str, schemas)) or '-':<7} {span:<22}  {state} ({shown})")


def main(argv: list[str]) -> int:
    if argv[:1] == ["status"]:
        status(sys.stdin.read())
        return 0
    if argv[:1] == ["bad-commits"]:
        found = bad_commits(commit_of(r) for p in argv[1:] for r in rows_of(Path(p)))
        print("\n".join(sorted(found)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

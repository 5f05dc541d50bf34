"""The package's shape, as ARCHITECTURE.md states it: which stage may import which, no import cycles,
no private names across packages, and modules and functions of a readable size. Read from the source with ast."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "kernels_check")

#: stage -> stages it may import (ARCHITECTURE.md, "Who imports whom").
ALLOWED = {
    "units": set(),
    "analysis.metrics": set(),
    "analysis.stats": set(),
    "schema": {"units", "analysis.metrics", "analysis.stats"},
    "config": {"units", "schema"},
    "run": {"units", "schema", "config", "analysis.metrics", "analysis.stats", "kernels_check"},
    "analysis": {"units", "schema", "config", "analysis.metrics", "analysis.stats", "kernels_check"},
    "render": {"units", "schema", "config", "analysis", "analysis.metrics", "analysis.stats", "kernels_check"},
    "cli": {"units", "schema", "config", "run", "analysis", "analysis.metrics", "analysis.stats", "render",
            "kernels_check", "plugin"},
    "plugin": {"units", "schema", "config", "run", "analysis", "analysis.metrics", "analysis.stats", "render",
               "kernels_check"},
    "main": {"cli"},
    "package": set(),
    "kernels_check": set(),
}
# Every stage may read the package itself (bench/__init__.py: the version only).
MAX_MODULE_LINES = 520


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def stage(module: str) -> str:
    if module.startswith("kernels_check"):
        return "kernels_check"
    parts = module.split(".")
    if module == "bench":
        return "package"
    if parts[1] == "__main__":
        return "main"
    if parts[1] == "pytest_plugin":
        return "plugin"
    if module in ("bench.analysis.metrics", "bench.analysis.stats"):  # pure leaves every later stage may use
        return module.removeprefix("bench.")
    return parts[1]


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported suite module, names imported from it, line) for every import in the file, nested too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
            if submodules:
                out += [(m, [], node.lineno) for m in submodules]
                names = [n for n in names if f"{node.module}.{n}" not in modules]
            if names or not submodules:
                out.append((node.module, names, node.lineno))
    return out


MODULES = _modules()
GRAPH = {m: _imports(p, MODULES) for m, p in MODULES.items()}


def test_stages_import_only_what_they_may():
    bad = []
    for module, imports in GRAPH.items():
        mine = stage(module)
        for target, _, line in imports:
            theirs = stage(target)
            if theirs != mine and theirs != "package" and theirs not in ALLOWED[mine]:
                bad.append(f"{MODULES[module].relative_to(REPO)}:{line}: {mine} imports {target} ({theirs})")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_packages():
    bad = []
    for module, imports in GRAPH.items():
        for target, names, line in imports:
            package = target.rsplit(".", 1)[0] if target in MODULES and not MODULES[target].name == "__init__.py" \
                else target
            if package == module.rsplit(".", 1)[0] or target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{MODULES[module].relative_to(REPO)}:{line}: {', '.join(private)} from {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges = defaultdict(set)
    for module, imports in GRAPH.items():
        for target, _, _ in imports:
            if target in MODULES and target != module:
                edges[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    # a package __init__ re-exporting its own modules is not a cycle between modules
    real = [c for c in cycles if not all(x.startswith(c.split(" -> ")[0].rsplit(".", 1)[0]) for x in c.split(" -> "))
            or len({x for x in c.split(" -> ")}) > 2]
    assert not real, "\n".join(real)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{MODULES[module].relative_to(REPO)} has {lines} lines"


MAX_FUNCTION_BODY_LINES = 80


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring and signature left out."""
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:] or body
    return fn.end_lineno - body[0].lineno + 1


def test_functions_stay_readable():
    long = [f"{path.relative_to(REPO)}:{fn.lineno} {fn.name} ({_body_lines(fn)} lines)"
            for path in MODULES.values() for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(fn) > MAX_FUNCTION_BODY_LINES]
    assert not long, "\n".join(long)


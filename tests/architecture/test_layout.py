"""The layout rules of DESIGN.md, checked on the source: layers, cycles, sizes, train's scope."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
AURA = ROOT / "aura"

# Lower layers never import higher ones; packages of one rank do not import each other.
RANK = {"nn": 0, "data": 0, "brain": 1, "models": 2, "mixtures": 2.5, "train": 3, "memory": 3,
        "experiments": 4, "serve": 5, "configs": 6, "commands": 6, "build": 7}  # fmt: skip


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(AURA.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    for path in sorted((ROOT / "configs").glob("*.py")):
        name = "aura.configs" if path.stem == "__init__" else f"aura.configs.{path.stem}"
        out[name] = path
    return out


def imports(path: pathlib.Path) -> tuple[list[str], list[str]]:
    """(module-level aura imports, aura imports inside functions) of one file."""
    tree = ast.parse(path.read_text())
    top, inner = [], []

    def names(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` depends on the submodule; `from mod import name` on mod.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found = [s for s in subs if s in MODULES]
            return found if len(found) == len(subs) else [node.module, *found]
        return []

    for node in tree.body:
        top += [n for n in names(node) if n.startswith("aura")]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                inner += [n for n in names(sub) if n.startswith("aura")]
    return top, inner


MODULES = modules()


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "aura"


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    bad = []
    for mod, path in MODULES.items():
        me = package(mod)
        if me not in RANK:
            continue
        for target in imports(path)[0]:
            other = package(target)
            if other == me or other not in RANK or target not in MODULES and other == "aura":
                continue
            if RANK[other] >= RANK[me]:
                bad.append(f"{mod} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_of_aura_modules():
    bad = [f"{m}: {t}" for m, p in MODULES.items() for t in imports(p)[1]]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {t for t in imports(p)[0] if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_files_and_functions_stay_small():
    long_files = [
        f"{p}: {n}" for p in AURA.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long_files, long_files
    long_funcs = []
    for p in AURA.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            is_func = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_func and node.end_lineno - node.lineno + 1 > 80:
                long_funcs.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_funcs, long_funcs


def test_train_holds_only_what_every_experiment_shares():
    mods = sorted(p.stem for p in (AURA / "train").glob("*.py") if p.stem != "__init__")
    assert len(mods) <= 8, mods


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_every_module_has_a_docstring(mod):
    assert ast.get_docstring(ast.parse(MODULES[mod].read_text())), mod

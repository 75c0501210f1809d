"""The library's shape: it imports neither Prefect nor Ray, its modules import no cycle, and every plugin module
is one member of its family's discriminated union."""

from __future__ import annotations

import ast
import importlib
import re
import typing
from pathlib import Path

import pytest

from .conftest import REPO

LIBRARY = REPO / "sppo"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """sppo modules `path` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "sppo"}


def test_the_library_imports_neither_prefect_nor_ray():
    pattern = re.compile(r"^\s*(import|from) (prefect|ray)\b", re.M)
    offenders = [str(p) for p in LIBRARY.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_no_import_cycles():
    modules = {_module(p): p for p in LIBRARY.rglob("*.py")}
    graph = {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}
    # A package's __init__ re-exporting its members is not a cycle with them: drop member -> own package edges.
    for name, deps in graph.items():
        deps -= {d for d in deps if name.startswith(d + ".")}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(trail[trail.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize(
    ("family", "union", "others"),
    [
        ("sppo.judges", "JudgeConfig", {"base", "blender_compat"}),
        ("sppo.generators", "GeneratorConfig", {"base"}),
        ("sppo.losses", "LossConfig", {"base"}),
        ("sppo.adapters", "AdapterConfig", {"base"}),
    ],
)
def test_every_plugin_module_is_one_member_of_its_union(family, union, others):
    package = importlib.import_module(family)
    members = typing.get_args(typing.get_args(getattr(package, union))[0])
    by_module = {m.__module__.rsplit(".", 1)[1]: m for m in members}
    files = {p.stem for p in Path(package.__file__).parent.glob("*.py")} - others - {"__init__"}
    assert set(by_module) == files, f"{family}: modules {sorted(files)} vs union members {sorted(by_module)}"
    types = [typing.get_args(m.model_fields["type"].annotation)[0] for m in members]
    assert len(set(types)) == len(types), f"{family}: two members share a type name: {types}"

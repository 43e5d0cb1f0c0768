"""Imports run one way, cli -> training -> evaluation / inference -> checkpoints -> models, with no cycles between
the package's top-level modules, models import nothing from the layers above them, and no module imports another
module's private (_underscored) names (read with `ast`)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "segformer"
LAYERS = {"models": 0, "checkpoints": 1, "inference": 2, "evaluation": 2, "training": 3, "cli": 4}


def _unit(module: str) -> str:
    """The top-level part of `segformer.<unit>...` ("__init__" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _targets(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
    module = ".".join(base + ([node.module] if node.module else []))
    out = []
    for alias in node.names:  # `from pkg import sub` imports the submodule when there is one
        sub = SRC.joinpath(*module.split("."), alias.name)
        out.append(f"{module}.{alias.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() else module)
    return out


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (module level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        me = _unit(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package):
                if target.split(".")[0] == "segformer" and _unit(target) != me:
                    graph.setdefault(me, set()).add(_unit(target))
    return graph


def test_layers_import_downwards_only():
    graph = import_graph()
    upward = [(a, b) for a, deps in graph.items() for b in deps
              if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]]
    assert upward == []
    assert not graph.get("models", set()) & {"checkpoints", "training", "data", "cli", "inference", "evaluation",
                                              "serve", "runtimes"}
    assert [a for a, deps in graph.items() if "cli" in deps and a != "__init__"] == []


def test_no_import_cycles():
    graph, state, cycles = import_graph(), {}, []

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for dep in sorted(graph.get(unit, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [unit, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    assert cycles == []


def test_no_private_names_imported_across_modules():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("segformer")):
                found += [f"{path.relative_to(SRC)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []

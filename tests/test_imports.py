"""The package's import graph, read from the code (its AST, nothing imported): no circle, no module taking another
module's underscore names, and every import pointing down the layers of docs/architecture.md. Each check is also
run on small planted packages, so that a check that cannot fail would fail here."""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

# Lowest first. A module may import from a lower layer, or from its own folder (a package's modules use each other).
LAYERS = [
    {"errors"},
    {"schema", "registry", "progress"},
    {"files"},
    {"data"},
    {"params"},
    {"models", "analysis", "figures"},
    {"learning"},  # trains what pipeline/models evaluates, reading windows as models/normalisation.py does
    {"stages", "experiments"},
    {"cluster"},
    {"cli"},
    {"__main__", "__init__"},
]


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package folder (`pipeline.stages.train`)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(package: Path) -> dict[str, list[tuple[str, str | None, int]]]:
    """Module -> (imported module, name taken from it or None, line) for every import of the package by the
    package, at any depth (the stages import lazily inside functions)."""
    known = modules(package)
    root = package.name
    graph: dict[str, list[tuple[str, str | None, int]]] = {name: [] for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == root and alias.name in known:
                        graph[name].append((alias.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != root:
                    continue
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in known:
                        graph[name].append((submodule, None, node.lineno))
                    else:
                        graph[name].append((node.module, alias.name, node.lineno))
    return graph


def circles(graph: dict[str, list[tuple[str, str | None, int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself), by Tarjan."""
    edges = {m: sorted({target for target, _, _ in out if target in graph}) for m, out in graph.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def private_imports(graph: dict[str, list[tuple[str, str | None, int]]]) -> list[str]:
    """`from pipeline.x import _name` in another module than x: a private name used across modules."""
    return [f"{module} line {line}: takes {name} from {target}"
            for module, out in graph.items() for target, name, line in out
            if name is not None and name.startswith("_") and target != module]


def private_attributes(package: Path) -> list[str]:
    """`module._name` where `module` is a name bound by an import of a package module: the same, spelt as an
    attribute."""
    known, root, found = modules(package), package.name, []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        bound = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root:
                bound |= {alias.asname or alias.name for alias in node.names
                          if f"{node.module}.{alias.name}" in known}
            elif isinstance(node, ast.Import):
                bound |= {alias.asname for alias in node.names if alias.asname and alias.name in known}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name} line {node.lineno}: uses {node.value.id}.{node.attr}")
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for level, names in enumerate(LAYERS):
        if key in names:
            return level
    raise AssertionError(f"{module} is in no layer of LAYERS: add its folder there (and to docs/architecture.md)")


def upward_imports(graph: dict[str, list[tuple[str, str | None, int]]]) -> list[str]:
    """Imports of a module in the same or a higher layer, other than within one folder."""
    def folder(module: str) -> str:
        return module.split(".")[1] if module.count(".") >= 1 else ""

    return [f"{module} line {line}: imports {target} (layer {layer_of(target)} from layer {layer_of(module)})"
            for module, out in graph.items() for target, _, line in out
            if target in graph and folder(target) != folder(module) and layer_of(target) >= layer_of(module)]


# --- the package itself -----------------------------------------------------------------------------------------

PACKAGE = ROOT / "pipeline"


def test_the_package_has_no_import_circle():
    assert circles(imports(PACKAGE)) == []


def test_no_module_takes_another_modules_underscore_names():
    assert private_imports(imports(PACKAGE)) == [] and private_attributes(PACKAGE) == []


def test_imports_point_down_the_layers():
    assert upward_imports(imports(PACKAGE)) == []


def test_every_module_is_in_a_layer():
    for module in modules(PACKAGE):
        layer_of(module)


# --- the checks themselves, on planted packages -------------------------------------------------------------------

def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pipeline"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in package.rglob("*.py")} | {package}:
        (folder / "__init__.py").touch()
    return package


def test_a_planted_circle_is_found_even_through_a_lazy_import(tmp_path):
    package = plant(tmp_path, {
        "cluster/sweep.py": "from pipeline.cluster.repro import run_stage\n",
        "cluster/repro.py": "def run_stage():\n    from pipeline.cluster import sweep\n",
        "stages/train.py": "from pipeline import errors\n",
        "errors.py": "",
    })
    assert circles(imports(package)) == [["pipeline.cluster.repro", "pipeline.cluster.sweep"]]


def test_a_planted_private_import_is_found_in_both_spellings(tmp_path):
    package = plant(tmp_path, {
        "cluster/repro.py": "from pipeline.cluster.sweep import _client, tail\n",
        "cluster/sweep.py": "def _client():\n    pass\n\ndef tail():\n    pass\n",
        "cli.py": "from pipeline.cluster import sweep\nsweep._client()\nsweep.tail()\n",
    })
    assert private_imports(imports(package)) == ["pipeline.cluster.repro line 1: takes _client from "
                                                 "pipeline.cluster.sweep"]
    assert private_attributes(package) == ["pipeline.cli line 2: uses sweep._client"]


def test_a_planted_upward_import_is_found(tmp_path):
    package = plant(tmp_path, {
        "files/artifacts.py": "from pipeline.params import Params\n",  # files sits below params
        "params.py": "from pipeline.files import artifacts\n",
        "stages/train.py": "from pipeline.stages import report\nfrom pipeline.models import baselines\n",
        "stages/report.py": "",
        "models/baselines.py": "",
    })
    assert upward_imports(imports(package)) == [
        "pipeline.files.artifacts line 1: imports pipeline.params (layer 4 from layer 2)"]


def test_a_module_outside_every_layer_is_named(tmp_path):
    package = plant(tmp_path, {"helpers/misc.py": ""})
    with pytest.raises(AssertionError, match="pipeline.helpers is in no layer"):
        for module in modules(package):
            layer_of(module)

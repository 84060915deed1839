"""The packages form layers, each importing only from those below it, with no import cycles.

infrastructure <- datamodules <- callbacks <- lightning_modules <- experiments <- tagging <- sweeps <- run.py:
data flows one way, and a package can be read knowing only the packages under it. Every package of the
repository must be named here (a new top-level package has to be given its place).
"""

from __future__ import annotations

import ast

from tests.support.paths import REPO_ROOT

LAYERS = ("infrastructure", "datamodules", "callbacks", "lightning_modules", "experiments", "tagging", "sweeps", "run")
NOT_LAYERED = {"tests", "benchmarks", "docs", "configs", "slurm", "build", "site"}


def test_every_top_level_package_has_a_layer():
    packages = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").is_file()} - NOT_LAYERED
    assert packages == set(LAYERS[:-1]), f"packages without a layer: {sorted(packages - set(LAYERS))}"


def _imports() -> dict[str, set[str]]:
    """module name -> the suite's modules it imports (top-level and inside functions alike)."""
    graph = {}
    files = [REPO_ROOT / "run.py", *[p for layer in LAYERS[:-1] for p in (REPO_ROOT / layer).rglob("*.py")]]
    modules = {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__") for p in files}
    for path in files:
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules and n != name}
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_module_imports_a_higher_layer():
    upward = [(m, t) for m, targets in _imports().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_no_import_cycles():
    graph = _imports()
    # a package imports its own submodules through __init__; edges into a package's __init__ from its
    # own submodules would make every package a cycle, so drop package -> own-submodule edges
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(target):] + [target])}")
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)



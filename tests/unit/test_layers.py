"""Dependencies point one way: api ← engine ← datasets ← runner ← controller / backends ← REST / CLI.

Every `import flageval…` of the package counts, at module level or inside a function (a function-level
import is a cycle deferred, not removed): the graph of modules must be acyclic and each import must go
to the importer's own package or to a lower layer.
"""

import ast
from pathlib import Path

import flageval

PACKAGE = Path(flageval.__file__).parent

# Lowest first. A module may import its own top-level package and anything in a lower layer.
LAYERS = [
    {"api"},
    {"engine", "results", "verdict", "baseline"},  # on api only
    {"datasets", "report"},  # report: reads finished runs (results, verdict, baseline)
    {"taskresult"},
    {"runner", "mock_model"},
    {"controller", "backends"},
    {"shim", "evaluate"},  # the REST layer; `flageval eval`
    {"cli"},
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["flageval", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The flageval modules `name` imports anywhere in its body, each as the most specific module named."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` imports the submodule; `from pkg import name` the package.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("flageval") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top(module) in names)


def test_every_package_has_a_layer():
    missing = sorted({top(m) for m in graph() if top(m)} - set().union(*LAYERS))
    assert not missing, f"place {missing} in LAYERS"


def test_imports_point_down_the_layers():
    wrong = sorted(f"{m} → {t}" for m, targets in graph().items() if top(m) for t in targets
                   if top(t) and top(t) != top(m) and layer(t) >= layer(m))
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle_even_inside_functions():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" → ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_function_level_import(tmp_path):
    # The rule above is only worth something if imports inside functions are read too.
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from flageval.shim.app import create_app\n    import flageval.api.results\n")
    known = module_names()
    assert imports_of("flageval.engine.probe", source, known) == {"flageval.shim.app", "flageval.api.results"}

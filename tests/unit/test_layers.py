"""The house flows one way: no import circle among suite/, objectives/ and tasks/ (function-local imports count),
the ground floors never reach up, and no file grows past 400 lines. Read from the source with `ast`."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("suite", "objectives", "tasks")
FILES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in FILES}


def owner(name: str) -> str | None:
    """The project module that `import name` executes last (a package's submodule, or the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path) -> set[str]:
    """The project modules a file imports anywhere in it, function bodies included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {owner(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            for alias in node.names:  # `from suite import errors` imports the module suite.errors
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else owner(base))
    return {m for m in found if m and m != name}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle_it_is_shown():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_function_local_imports():
    assert "suite.errors" in GRAPH["objectives"]  # `from suite.errors import ...` at the top
    assert "suite.overhead" in GRAPH["suite.estimate"]  # imported inside estimate()


def test_no_import_circle():
    assert cycles(GRAPH) == []


FLOORS = {  # what each ground floor may import from the project, besides itself
    "suite.errors": set(), "suite.provenance": set(), "suite.sizes": {"suite.errors"},
    "suite.quantize": {"suite.errors"}, "suite.cache": {"suite.quantize"},
    "suite.model": {"suite.errors", "suite.sizes", "suite.quantize", "suite.cache"},
    "suite.architectures": {"suite.errors", "suite.sizes"},
}


@pytest.mark.parametrize("module", sorted(FLOORS))
def test_the_ground_floor_never_imports_upward(module):
    assert GRAPH[module] <= FLOORS[module]


def test_objectives_and_tasks_never_read_checkpoints_or_know_the_harness():
    allowed = {"suite.errors", "suite.sandbox"}  # errors, and the sandbox the code tasks score in
    for name, found in GRAPH.items():
        if name.split(".")[0] in ("objectives", "tasks"):
            outside = {m for m in found if m.split(".")[0] == "suite"}
            assert outside <= allowed, (name, outside - allowed)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_grows_past_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400

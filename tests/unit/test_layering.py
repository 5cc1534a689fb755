"""The house's layering, checked statically: who imports whom, and what the function layer ships.

- Functions (functions/*/app.py) reach only modules the ShelfwiseLayer ships: never the simulator,
  the command line or the local runtime, at module level or inside a function.
- The domain (shared/shelfwise) never imports shelfwise_local; handlers never import each other.
- No import cycles between shelfwise modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
NOT_IN_LAYER = ("shelfwise.simulator", "shelfwise.cli", "shelfwise_local")


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SHARED / "shelfwise").rglob("*.py"):
        parts = p.relative_to(SHARED).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every shelfwise* module ``path`` imports (outside ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in MODULES] or [node.module]
        for name in names:
            if name.startswith("shelfwise_local"):
                found.add(name)
            elif name.startswith("shelfwise"):
                resolved = _resolve(name)
                if resolved:
                    found.add(resolved)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [d for d in GRAPH.get(m, ()) if d not in seen]
        parent = m.rpartition(".")[0]
        if parent in MODULES and parent not in seen:
            todo.append(parent)  # importing a submodule runs its package's __init__
    return seen


@pytest.mark.parametrize("app", sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py")))
def test_functions_reach_only_what_the_layer_ships(app: str) -> None:
    reached = _closure(_imports(ROOT / "functions" / app / "app.py"))
    assert not [m for m in reached if m.startswith(NOT_IN_LAYER)]


def test_the_domain_never_imports_the_local_runtime() -> None:
    assert not {m: sorted(d) for m, ds in GRAPH.items() for d in ds if d.startswith("shelfwise_local")}


@pytest.mark.parametrize(
    ("a", "b"), [("shelfwise.ingest", "shelfwise.serving"), ("shelfwise.monitoring", "shelfwise.rollout")]
)
def test_no_sideways_imports(a: str, b: str) -> None:
    """Contracts two parts share live in neutral modules (events, served_lists, catalogue_contract)."""
    assert not [(m, d) for m, ds in GRAPH.items() if m.startswith(a) for d in ds if d.startswith(b)]


def test_handlers_never_import_each_other() -> None:
    for app in (ROOT / "functions").glob("*/app.py"):
        text = app.read_text()
        assert "functions." not in text and "from app import" not in text


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_shelfwise_layer_leaves_out_simulator_and_cli(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "-f", str(SHARED / "Makefile"), "build-ShelfwiseLayer", f"ARTIFACTS_DIR={tmp_path}"],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    shipped = tmp_path / "python" / "shelfwise"
    assert (shipped / "serving" / "service.py").exists() and (shipped / "wiring.py").exists()
    assert not (shipped / "simulator").exists() and not (shipped / "cli").exists()

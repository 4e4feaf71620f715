"""The relay's modules import one another without a cycle, so the store can be split behind its keys."""

import ast
import subprocess
import sys
from pathlib import Path

RELAY = Path(__file__).resolve().parents[1] / "relay"


def _module_name(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_at_module_level(path: Path) -> set[str]:
    """The relay modules `path` imports as it loads: its top level, not functions or TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("relay")}


def test_no_import_cycle_among_the_relay_modules():
    graph = {_module_name(path): _imports_at_module_level(path) for path in RELAY.rglob("*.py")}
    graph = {
        module: {name for name in names if name in graph and name != module}
        for module, names in graph.items()
    }
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        for imported in sorted(graph[module]):
            if imported not in done:
                visit(imported, [*trail, module])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [])

    assert cycles == []


def test_importing_the_keys_or_the_metrics_does_not_import_the_worker():
    check = (
        "import importlib, sys; importlib.import_module(sys.argv[1]); "
        "print(sorted(name for name in ('relay.worker', 'relay.app') if name in sys.modules))"
    )
    for module in ("relay.keys", "relay.ops.metrics"):
        result = subprocess.run(
            [sys.executable, "-c", check, module], capture_output=True, text=True, check=True
        )
        assert (module, result.stdout.strip()) == (module, "[]")


def test_the_sqlite_intake_process_loads_only_the_standard_library_and_its_own_modules():
    # It starts beside every web process on SQLite, under `python -I -S`: nothing of the relay's dependencies.
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import relay.store.sqlite.intake_process; "
        "print(' '.join(sorted(name for name in sys.modules if name.split('.')[0] not in "
        "(*sys.stdlib_module_names, '__main__'))))"
    )
    command = [sys.executable, "-I", "-S", "-c", check, str(RELAY.parent)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [
        "relay",
        "relay.store",
        "relay.store.sqlite",
        "relay.store.sqlite.arrivals",
        "relay.store.sqlite.intake_process",
        "relay.store.sqlite.turns",
    ]

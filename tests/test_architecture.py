"""The layout holds: doors import only the core, the pure core imports no I/O, no cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.support import REPO

SHIPPED = ("registry", "webhooks", "worker", "bot", "gate")
PACKAGES = (*SHIPPED, "devkit")
IO_LIBRARIES = ("slack_sdk", "slack_bolt", "requests", "redis", "mlflow", "celery", "flask")
# The layers whose modules do no I/O: importing any of them loads no I/O library.
PURE_LAYERS = ("registry.rules", "registry.views", "registry.ports")
PURE = tuple(
    f"{layer}.{path.stem}"
    for layer in PURE_LAYERS
    for path in sorted((REPO / layer.replace(".", "/")).glob("*.py"))
    if path.stem != "__init__"
)
LAYERS = ("rules", "views", "ports", "flows", "adapters", "process")
MOST_MODULES = 12  # a folder with more is a room to split
LONGEST_FUNCTION = 40  # lines; a longer one reads better as a few named steps


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Every import among the project's packages, function-level and TYPE_CHECKING ones too."""
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _tool(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_loads_no_io_library(module):
    probe = (
        f"import sys, {module}; print(','.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


@pytest.mark.parametrize("door", ["webhooks", "bot"])
def test_a_door_imports_only_the_core_and_itself(graph, door):
    foreign = set()
    for module in graph.find_descendants(door) | {door}:
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top in PACKAGES and top not in ("registry", door):
                foreign.add(f"{module} -> {imported}")
    assert not foreign


@pytest.mark.parametrize("door", ["webhooks", "bot"])
def test_a_door_reaches_neither_mlflow_nor_matplotlib(door):
    # Every import, function-level ones too: only the worker reads artifacts and draws.
    full = grimp.build_graph(*PACKAGES, cache_dir=None, include_external_packages=True)
    reached = {
        heavy: chain
        for heavy in ("mlflow", "matplotlib")
        for module in sorted(full.find_descendants(door) | {door})
        if (chain := full.find_shortest_chain(importer=module, imported=heavy))
    }
    assert reached == {}


def test_no_import_cycle_anywhere(graph):
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    cycles = []
    for module in sorted(ours):
        for imported in graph.find_modules_directly_imported_by(module) & ours:
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join([module, *back[1:]]))
    assert not cycles, cycles


def test_the_import_contracts_hold():
    # [tool.importlinter] in pyproject.toml: independence of the doors, layers, purity.
    out = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def test_the_notify_cli_loads_neither_flask_nor_the_queue():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "webhooks", "notify", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "registry.rules.events" in loaded  # the probe sees what notify does import
    assert loaded.isdisjoint({"flask", "redis", "celery", "kombu", "mlflow", "slack_sdk"})


def test_mypy_checks_the_core_and_the_fakes_against_the_protocols():
    out = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "tests/fakes.py" in _mypy_files()


def _mypy_files() -> list[str]:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    return list(config.get("files", []))


def test_the_layers_are_folders_none_of_them_crowded():
    found = {p.name for p in (REPO / "registry").iterdir() if (p / "__init__.py").exists()}
    assert set(LAYERS) <= found, found
    loose = sorted(p.name for p in (REPO / "registry").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside a layer: {loose}"
    for layer in LAYERS:
        modules = [p for p in (REPO / "registry" / layer).glob("*.py") if p.stem != "__init__"]
        assert len(modules) <= MOST_MODULES, f"registry/{layer} holds {len(modules)} modules"


def test_no_product_function_is_longer_than_forty_lines():
    import ast

    long = []
    for package in SHIPPED:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                    if lines > LONGEST_FUNCTION:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert long == []

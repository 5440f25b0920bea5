"""The import rules of the layout (README "Layout"): policy code is pure and planes depend one way."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mlplane"

# Modules that do I/O, threads or clocks: the policy core decides on a snapshot and never touches them.
IMPURE = {"socket", "sqlite3", "subprocess", "threading", "time", "http", "urllib", "os", "asyncio",
          "multiprocessing", "signal", "shutil", "tempfile", "select", "random"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


@pytest.mark.parametrize("path", _files("api"), ids=lambda p: str(p.relative_to(PKG)))
def test_api_imports_nothing_above_it(path):
    bad = {m for m in _imports(path) if m.startswith("mlplane.") and not m.startswith("mlplane.api")}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _files("policy"), ids=lambda p: str(p.relative_to(PKG)))
def test_policy_is_pure(path):
    imports = _imports(path)
    upward = {m for m in imports if m.startswith("mlplane.") and not m.startswith(("mlplane.api", "mlplane.policy"))}
    impure = {m for m in imports if m.split(".")[0] in IMPURE}
    assert not upward, f"{path.relative_to(PKG)} imports {sorted(upward)}"
    assert not impure, f"{path.relative_to(PKG)} does I/O or reads clocks via {sorted(impure)}"


@pytest.mark.parametrize("path", _files("control"), ids=lambda p: str(p.relative_to(PKG)))
def test_control_does_not_import_cli(path):
    bad = {m for m in _imports(path) if m.startswith(("mlplane.cli", "mlplane.bench"))}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _files("net"), ids=lambda p: str(p.relative_to(PKG)))
def test_net_is_a_leaf(path):
    bad = {m for m in _imports(path) if m.startswith("mlplane.") and not m.startswith("mlplane.net")}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _files("gateway") + _files("modelserver"), ids=lambda p: str(p.relative_to(PKG)))
def test_the_data_path_does_not_import_cli_or_bench(path):
    bad = {m for m in _imports(path) if m.startswith(("mlplane.cli", "mlplane.bench"))}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _files("modelserver"), ids=lambda p: str(p.relative_to(PKG)))
def test_the_model_server_simulator_knows_nothing_of_routing_or_the_control_plane(path):
    bad = {m for m in _imports(path) if m.startswith(("mlplane.gateway", "mlplane.control", "mlplane.policy"))}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_the_simulated_engine_is_pure():
    path = PKG / "modelserver" / "engine.py"
    impure = {m for m in _imports(path) if m.split(".")[0] in IMPURE}
    assert not impure, f"modelserver/engine.py does I/O or reads clocks via {sorted(impure)}"

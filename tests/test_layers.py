"""Layers point one way (DESIGN.md); this walks the imports with ast so the rule is checked.

Order, top to bottom: cli > worker, client > workflow, activity > runtime > store > engine >
definitions, commands, history, converter, retry, errors. ``store`` calls the pure ``engine``
rules inside its transactions, so it sits above ``engine`` (see docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import duro

SRC = Path(duro.__file__).parent

FORBIDDEN: dict[str, set[str]] = {
    "engine": {"store", "runtime", "worker", "client", "cli", "workflow", "activity", "server"},
    "store": {"runtime", "worker", "client", "cli", "workflow", "activity", "server"},
    "runtime": {"store", "worker", "client", "cli", "workflow", "activity", "server"},
    "workflow": {"store", "worker", "client", "cli", "engine"},
    "activity": {"store", "worker", "client", "cli", "engine", "workflow"},
    "client": {"worker", "cli", "runtime"},
    "worker": {"cli"},
    "history": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "converter": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "errors": {
        "store",
        "engine",
        "runtime",
        "worker",
        "client",
        "workflow",
        "activity",
        "converter",
    },
    "retry": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "definitions": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "commands": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "search_attributes": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "visibility": {"store", "engine", "runtime", "worker", "client", "workflow", "activity"},
    "replayer": {"worker", "cli", "store"},
    "schedules": {"worker", "cli", "runtime", "workflow", "activity"},
    "retention": {"worker", "client", "cli", "runtime", "workflow", "activity"},
    "testing": {"cli"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("duro."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "duro":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("duro."):
                    found.add(alias.name.split(".")[1])
    return found


def test_no_module_imports_a_layer_above_it() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        layer = _layer(path)
        for imported in _imports(path) & FORBIDDEN.get(layer, set()):
            violations.append(f"{path.relative_to(SRC)} imports duro.{imported}")
    assert not violations, "\n".join(violations)


def test_only_the_store_writes_sql() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if _layer(path) == "store":
            continue
        text = path.read_text()
        if "sqlite3" in text or "INSERT INTO" in text or "UPDATE executions" in text:
            offenders.append(str(path.relative_to(SRC)))
    assert not offenders

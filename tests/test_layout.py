"""The package's shape, kept so: no import cycle, and the ledger's tables are the ledger's.

docs/architecture.md ("Layout") says where code belongs; these tests fail when a
change breaks what it promises, naming the modules involved.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "tokenbank"
# The Alembic scripts are loaded by Alembic, not imported by the package.
SKIPPED_FOLDERS = ("db/migrations",)
LEDGER_MODELS = {"Wallet", "LedgerEntry", "LedgerTransaction", "Hold", "IdempotencyKey"}
LEDGER_TABLE_HANDLES = {"wallets", "entries", "transactions", "holds", "idempotency_keys"}
LEDGER_TABLE_NAMES = re.compile(
    r"\b(wallets|ledger_entries|ledger_transactions|holds|idempotency_keys)\b"
)
# Modules outside the ledger that may name its tables: the schema and its migrations.
LEDGER_TABLE_OWNERS = ("tokenbank.ledger", "tokenbank.db")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT).as_posix()
        if not relative.startswith(SKIPPED_FOLDERS):
            modules[module_name(path)] = path
    return modules


def imported_names(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """Each import as (module, names imported from it); ``import a.b`` has no names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def dependencies(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a import b`` counts a.b if a module)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for module, names in imported_names(ast.parse(path.read_text(), str(path))):
            submodules = {f"{module}.{n}" for n in names} & modules.keys()
            targets |= submodules or ({module} & modules.keys())
        graph[name] = targets - {name}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = dependencies(package_modules())
    assert len(graph) > 50, "the walk found too few modules to mean anything"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_cycle_check_finds_a_cycle() -> None:
    # A positive control: the same check on a graph that has one.
    with pytest.raises(CycleError):
        tuple(TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).static_order())


def outside_the_ledger() -> Iterator[tuple[str, Path]]:
    for name, path in package_modules().items():
        if not name.startswith(LEDGER_TABLE_OWNERS):
            yield name, path


def test_only_the_ledger_imports_its_tables_and_models() -> None:
    offenders = []
    for name, path in outside_the_ledger():
        for module, names in imported_names(ast.parse(path.read_text(), str(path))):
            handles = LEDGER_TABLE_HANDLES & set(names)
            if module == "tokenbank.ledger.repository.tables" or (
                module.startswith("tokenbank.ledger.repository") and handles
            ):
                offenders.append(f"{name} imports {module} {sorted(handles)}")
            if module == "tokenbank.db.models" and LEDGER_MODELS & set(names):
                offenders.append(f"{name} imports {sorted(LEDGER_MODELS & set(names))}")
    assert offenders == []


def test_no_sql_outside_the_ledger_names_its_tables() -> None:
    offenders = []
    for name, path in outside_the_ledger():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if _looks_like_sql(node.value) and LEDGER_TABLE_NAMES.search(node.value):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def _looks_like_sql(text: str) -> bool:
    return re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text) is not None

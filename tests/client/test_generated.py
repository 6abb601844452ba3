"""The blocking client is generated from the asyncio one, and the committed copy is current.

clients/python/scripts/generate_sync.py (``make sync-client``) writes
``tokenbank/client/_sync/`` from ``tokenbank/client/_async/``. Here it writes into a
temporary directory instead, and every file must equal the committed one.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "python"
SCRIPT = CLIENT_PACKAGE / "scripts" / "generate_sync.py"
CLIENT_DIR = CLIENT_PACKAGE / "src" / "tokenbank" / "client"
SYNC_DIR = CLIENT_DIR / "_sync"


def _modules(directory: Path) -> dict[str, str]:
    """Each module but ``__init__.py`` (hand-written in both packages), by name."""
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(directory.glob("*.py"))
        if path.name != "__init__.py"
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    output = tmp_path_factory.mktemp("generated-sync")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return _modules(output)


def test_every_async_module_has_a_generated_twin(generated: dict[str, str]) -> None:
    assert set(generated) == set(_modules(CLIENT_DIR / "_async")) == {"client.py"}
    assert set(_modules(SYNC_DIR)) == set(generated), "a module of _sync that is not generated"


def test_the_committed_blocking_client_is_current(generated: dict[str, str]) -> None:
    committed = _modules(SYNC_DIR)
    for name, text in generated.items():
        if committed.get(name) != text:
            path = (SYNC_DIR / name).relative_to(CLIENT_PACKAGE.parents[1])
            diff = difflib.unified_diff(
                committed.get(name, "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path} (committed)",
                f"{path} (generated)",
            )
            pytest.fail(f"{path} is stale: run `make sync-client`\n{''.join(diff)}")


def test_the_generated_client_says_so(generated: dict[str, str]) -> None:
    for name, text in generated.items():
        assert text.startswith(f"# Generated from _async/{name} by scripts/generate_sync.py")
        assert "async " not in text and "await " not in text and "Async" not in text, name

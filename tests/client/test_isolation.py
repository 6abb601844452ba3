"""``import tokenbank.client`` needs httpx and the standard library only.

A fresh interpreter refuses to import anything of the server (its dependencies and
every ``tokenbank`` module outside the SDK), then imports the SDK, builds both
clients and verifies a JWT. Any server import there fails the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_DEPENDENCIES = (
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "typer",
    "click",
    "uvicorn",
    "fastapi",
    "starlette",
    "jwt",
)

PROGRAM = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[1].split(","))
    SDK = "tokenbank.client"


    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            server_module = name.startswith("tokenbank.") and not (
                name == SDK or name.startswith(SDK + "._")
            )
            if top in BLOCKED or server_module:
                raise ImportError(f"blocked server import: {name}")
            return None


    sys.meta_path.insert(0, Refuse())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import tokenbank.client as sdk

    with sdk.TokenClient("http://tokens.test", "tb_key"):
        pass
    sdk.AsyncTokenClient("http://tokens.test", "tb_key")
    try:
        sdk.verify_jwt("a.b.c", "x" * 32)
    except sdk.InvalidTokenError:
        pass
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    assert "tokenbank.client.fastapi" not in sys.modules
    print("isolated:", len([m for m in sys.modules if m.startswith("tokenbank")]))
    """
)


def test_the_sdk_imports_without_the_server() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, ",".join(SERVER_DEPENDENCIES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("isolated:")


def test_the_blocker_does_block() -> None:
    """The same program fails when the SDK is replaced by a server module."""
    program = PROGRAM.replace("import tokenbank.client as sdk", "import tokenbank.ledger.service")
    result = subprocess.run(
        [sys.executable, "-c", program, ",".join(SERVER_DEPENDENCIES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "blocked server import" in result.stderr

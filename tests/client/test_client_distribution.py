"""The SDK installs alone: ``pip install ./clients/python`` into an empty virtual
environment gives a working client whose only third-party dependency is httpx.

The environment is made without pip (this interpreter's pip installs into it with
``--python``), from a copy of clients/python (the build leaves nothing in the work
tree), and its clients charge a real ``tokenbank serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.client.conftest import RealServer

CLIENT_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "python"
INSTALL_TIMEOUT_SECONDS = 300
# httpx and what httpx itself needs; anything else installed is a dependency too many.
HTTPX_AND_ITS_DEPENDENCIES = {"httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio"}
HTTPX_AND_ITS_DEPENDENCIES |= {"typing-extensions", "exceptiongroup"}
SERVER_MODULES = ("tokenbank.ledger", "tokenbank.api", "tokenbank.config")
SERVER_DEPENDENCIES = ("fastapi", "starlette", "sqlalchemy", "pydantic", "alembic", "jwt")

PROGRAM = textwrap.dedent(
    """
    import asyncio
    import importlib.metadata as metadata
    import importlib.resources
    import importlib.util
    import json
    import sys

    import tokenbank
    from tokenbank.client import AsyncTokenClient, TokenClient

    base_url, api_key, user, server_modules, dependencies = sys.argv[1:]

    with TokenClient(base_url, api_key) as tokens:
        with tokens.charge(user, 5, description="installed alone") as charge:
            pass
        balance = tokens.get_balance(user).balance


    async def async_balance():
        async with AsyncTokenClient(base_url, api_key) as tokens:
            return (await tokens.get_balance(user)).balance


    print(json.dumps({
        "charged": charge.amount,
        "balance": balance,
        "async_balance": asyncio.run(async_balance()),
        "requires": metadata.requires("tokenbank-client"),
        "installed": sorted(d.metadata["Name"] for d in metadata.distributions()),
        "importable": [
            name
            for name in [*server_modules.split(","), *dependencies.split(",")]
            if importlib.util.find_spec(name) is not None
        ],
        "tokenbank_file": getattr(tokenbank, "__file__", None),
        "py_typed": importlib.resources.files("tokenbank.client").joinpath("py.typed").is_file(),
    }))
    """
)


def _run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=INSTALL_TIMEOUT_SECONDS,
        **options,
    )


@pytest.fixture(scope="module")
def lone_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interpreter of a new virtual environment with tokenbank-client only."""
    directory = tmp_path_factory.mktemp("client-distribution")
    source = directory / "tokenbank-client"
    shutil.copytree(
        CLIENT_PACKAGE, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build")
    )
    venv = directory / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            str(source),
        ],
        env=environment,
    )
    assert installed.returncode == 0, installed.stderr
    return python


@pytest.mark.slow
def test_the_client_installs_alone_with_httpx_only(
    lone_python: Path, real_server: RealServer, tmp_path: Path
) -> None:
    user = real_server.new_user(plan=None)  # 1000 tokens
    arguments = [real_server.base_url, real_server.api_key, user]
    arguments += [",".join(SERVER_MODULES), ",".join(SERVER_DEPENDENCIES)]
    # -I: neither this checkout nor PYTHONPATH is on the path, only the environment.
    result = _run([str(lone_python), "-I", "-c", PROGRAM, *arguments], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert (report["charged"], report["balance"], report["async_balance"]) == (5, 995, 995)
    requirements = [Requirement(line) for line in report["requires"]]
    assert [r.name for r in requirements if r.marker is None] == ["httpx"]
    assert all("extra" in str(r.marker) for r in requirements if r.marker is not None)
    installed = {canonicalize_name(name) for name in report["installed"]}
    assert installed - HTTPX_AND_ITS_DEPENDENCIES == {"tokenbank-client"}
    assert report["importable"] == []  # no server module, no server dependency
    assert report["tokenbank_file"] is None  # a namespace package: no tokenbank/__init__.py
    assert report["py_typed"]

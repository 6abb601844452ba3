"""One test against a real ``tokenbank serve`` process, over TCP on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port, wait_until_healthy


def _tokenbank(*args: str, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "tokenbank.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = os.environ | {
        "TOKENBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "TOKENBANK_WELCOME_BONUS_TOKENS": "100",
    }
    port = free_port()
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tokenbank.cli", "serve", "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--workers", "2", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log_path)
        yield base_url, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_answers_over_tcp(server: tuple[str, dict[str, str]]) -> None:
    base_url, env = server
    key = (
        _tokenbank("apps", "create", "real-app", "--scope", "read", "--scope", "spend", env=env)
        .strip()
        .splitlines()[-1]
    )
    _tokenbank("users", "create", "alice", env=env)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert (
            client.get("/api/tokens/balance/alice", headers=headers).json()["data"]["balance"]
            == 100
        )
        body = {"userId": "alice", "amount": 30, "referenceId": "r-1"}
        first = client.post("/api/tokens/deduct", headers=headers, json=body)
        again = client.post("/api/tokens/deduct", headers={"x-server-api-key": key}, json=body)
        assert first.status_code == again.status_code == 200
        assert first.json()["data"]["ledgerEntryId"] == again.json()["data"]["ledgerEntryId"]
        short = client.post(
            "/api/tokens/deduct", headers=headers, json={"userId": "alice", "amount": 71}
        )
        assert short.status_code == 402
        assert short.json()["available"] == 70
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "tokenbank"
    assert "audit passed" in _tokenbank("audit", env=env)

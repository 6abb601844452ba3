"""Fixtures for the SDK's tests: a scripted mock transport, and a real server process.

Unit tests drive :class:`TokenClient` and :class:`AsyncTokenClient` through
``httpx.MockTransport`` with a :class:`Script` of answers. End-to-end tests share one
``tokenbank serve`` process per session (SQLite in a temporary directory), set up
through the admin API with a ``TOKENBANK_API_KEY`` that has every scope.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.server import free_port, wait_until_healthy
from tokenbank.client import AsyncTokenClient, RetryPolicy, TokenClient

BASE_URL = "http://tokens.test"
API_KEY = "tb_test_key"
# Retries without waiting, so retry tests take no time.
FAST_RETRY = RetryPolicy(backoff_seconds=0, max_backoff_seconds=0)

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def ok(data: Any, status_code: int = 200) -> httpx.Response:
    return httpx.Response(status_code, json={"data": data})


def process_ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "message": "ok", "data": data})


def failure(status_code: int, body: Any) -> httpx.Response:
    return httpx.Response(status_code, json=body)


@dataclass
class Script:
    """A MockTransport handler: answers in order (the last one repeats), every request kept."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content or b"null")

    @property
    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


def sync_client(script: Script, **options: Any) -> TokenClient:
    options.setdefault("retry", FAST_RETRY)
    return TokenClient(BASE_URL, API_KEY, transport=httpx.MockTransport(script), **options)


def async_client(script: Script, **options: Any) -> AsyncTokenClient:
    options.setdefault("retry", FAST_RETRY)
    return AsyncTokenClient(BASE_URL, API_KEY, transport=httpx.MockTransport(script), **options)


# --- a real server ---------------------------------------------------------------------------


@dataclass
class RealServer:
    base_url: str
    api_key: str  # TOKENBANK_API_KEY: every scope
    jwt_secret: str
    env: dict[str, str]

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as http:
            response = http.request(method, path, json=body)
        assert response.is_success, response.text
        return response.json()

    def new_user(self, *, plan: str | None = "starter", prefix: str = "user") -> str:
        """A fresh wallet (with the welcome bonus, 1000 tokens), on ``plan``."""
        user_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.admin("POST", "/api/users", {"userId": user_id})
        if plan is not None:
            self.admin("PUT", f"/api/admin/users/{user_id}/plan", {"plan": plan})
        return user_id

    def client(self, **options: Any) -> TokenClient:
        return TokenClient(self.base_url, self.api_key, **options)

    def async_client(self, **options: Any) -> AsyncTokenClient:
        return AsyncTokenClient(self.base_url, self.api_key, **options)


def _set_up(server: RealServer) -> None:
    """Two features (plain and hold mode, the Token Process dialect's output / 4) on a 20% plan."""
    server.admin(
        "POST",
        "/api/admin/features",
        {
            "id": "summarize",
            "name": "Summarize text",
            "rule": {"type": "output_ratio", "ratio": 4},
            "min_balance_tokens": 10,
        },
    )
    server.admin(
        "POST",
        "/api/admin/features",
        {
            "id": "summarize-held",
            "name": "Summarize text (hold mode)",
            "rule": {"type": "output_ratio", "ratio": 4},
            "min_balance_tokens": 10,
            "hold_tokens": 50,
        },
    )
    server.admin(
        "POST",
        "/api/admin/plans",
        {
            "name": "starter",
            "profit_percent": 20,
            "features": ["summarize", "summarize-held"],
        },
    )
    server.admin("PUT", "/api/admin/costs/image_generation", {"tokens": 10})


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    directory = tmp_path_factory.mktemp("real-server")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    api_key = "tb_" + secrets.token_urlsafe(32)
    jwt_secret = secrets.token_urlsafe(32)
    env = os.environ | {
        "TOKENBANK_DATABASE_URL": f"sqlite:///{directory / 'served.db'}",
        "TOKENBANK_WELCOME_BONUS_TOKENS": "1000",
        "TOKENBANK_API_KEY": api_key,
        "TOKENBANK_JWT_SECRET": jwt_secret,
        "TOKENBANK_PUBLIC_URL": base_url,
    }
    log_path = directory / "serve.log"
    command = [sys.executable, "-m", "tokenbank.cli", "serve", "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--workers", "1", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(base_url, process, log_path)
        server = RealServer(base_url=base_url, api_key=api_key, jwt_secret=jwt_secret, env=env)
        _set_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

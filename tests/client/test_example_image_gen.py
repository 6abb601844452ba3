"""examples/image_gen end to end: the example app in-process, tokenbank a real server.

A user gets a JWT from ``tokenbank users token`` (the CLI), then uses the example as
a Token Service frontend would: costs, estimate, generate (dynamic cost), a failed
generation (refunded), upscale (fixed cost), and too few tokens (402 + buyTokensUrl).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.client.conftest import RealServer
from tokenbank.cli import app as cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "image_gen" / "app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_gen_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load_example()


def user_token(server: RealServer, user_id: str) -> str:
    result = CliRunner().invoke(
        cli, ["users", "token", user_id], env={"TOKENBANK_JWT_SECRET": server.jwt_secret}
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def failing_generation(kind: str, prompt: str) -> dict[str, Any]:
    raise RuntimeError("the image model is down")


class ImageGen:
    """The example app, driven over ASGI, and the token service's view of a user."""

    def __init__(self, server: RealServer, **options: Any) -> None:
        self.server = server
        self.tokens = server.async_client()
        self.app = example.create_app(client=self.tokens, jwt_secret=server.jwt_secret, **options)
        transport = httpx.ASGITransport(app=self.app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://image-gen.test")

    async def close(self) -> None:
        await self.http.aclose()
        await self.tokens.aclose()

    async def balance(self, user_id: str) -> int:
        return (await self.tokens.get_balance(user_id)).balance


@pytest.fixture
async def image_gen(real_server: RealServer) -> AsyncIterator[ImageGen]:
    app = ImageGen(real_server)
    yield app
    await app.close()


async def test_costs_and_estimate(image_gen: ImageGen) -> None:
    user = image_gen.server.new_user(plan=None)
    auth = {"Authorization": f"Bearer {user_token(image_gen.server, user)}"}
    costs = (await image_gen.http.get("/costs")).json()["data"]
    assert {"action": "image-1024", "tokens": 12, "estimatedUsd": "$0.0012"} in costs
    estimate = await image_gen.http.post("/estimate", json={"type": "video-long"}, headers=auth)
    assert estimate.json() == {
        "data": {
            "action": "video-long",
            "cost": 50,
            "currentBalance": 1000,
            "canAfford": True,
            "remainingAfter": 950,
        }
    }


async def test_generate_charges_the_dynamic_cost(image_gen: ImageGen) -> None:
    user = image_gen.server.new_user(plan=None)
    auth = {"Authorization": f"Bearer {user_token(image_gen.server, user)}"}
    body = {"type": "image-1024", "prompt": "a lighthouse at dusk"}
    response = await image_gen.http.post("/generate", json=body, headers=auth)
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["tokensUsed"], data["remainingBalance"]) == (12, 988)
    assert data["url"].startswith("https://images.example/")
    assert await image_gen.balance(user) == 988
    upscale = await image_gen.http.post("/upscale", headers=auth)
    assert upscale.json() == {"data": {"upscaled": True, "remainingBalance": 985}}


async def test_a_failed_generation_is_refunded(real_server: RealServer) -> None:
    broken = ImageGen(real_server, generate=failing_generation)
    try:
        user = real_server.new_user(plan=None)
        auth = {"Authorization": f"Bearer {user_token(real_server, user)}"}
        response = await broken.http.post(
            "/generate", json={"type": "video-long", "prompt": "waves"}, headers=auth
        )
        assert response.status_code == 500
        assert response.json() == {"error": "Generation failed — tokens refunded"}
        assert await broken.balance(user) == 1000
        kinds = [entry.operation_type for entry in await broken.tokens.get_ledger(user)]
        assert kinds[:2] == ["refund", "usage"]
    finally:
        await broken.close()


async def test_too_few_tokens_is_a_402_with_where_to_buy(image_gen: ImageGen) -> None:
    user = image_gen.server.new_user(plan=None)
    await image_gen.tokens.deduct(user, 995)
    auth = {"Authorization": f"Bearer {user_token(image_gen.server, user)}"}
    response = await image_gen.http.post(
        "/generate", json={"type": "image-1024", "prompt": "x"}, headers=auth
    )
    assert response.status_code == 402
    assert response.json() == {
        "error": "Insufficient tokens",
        "required": 12,
        "available": 5,
        "buyTokensUrl": f"{image_gen.server.base_url}/tokens",
    }
    assert await image_gen.balance(user) == 5


async def test_users_must_prove_who_they_are(image_gen: ImageGen) -> None:
    body = {"type": "image-256", "prompt": "x"}
    missing = await image_gen.http.post("/generate", json=body)
    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    forged = await image_gen.http.post(
        "/generate", json=body, headers={"Authorization": "Bearer a.b.c"}
    )
    assert (forged.status_code, forged.json()) == (401, {"error": "Invalid or expired token"})

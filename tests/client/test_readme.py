"""The README's "Integrate your app" examples run as written, against a real server.

Each ```python block of that section is executed with the app's own pieces (the
work: ``make_image``, ``llm``, ...) stubbed, then driven like a user would.
"""

import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.client.conftest import RealServer
from tokenbank.client import _decorator
from tokenbank.client.asgi import RequireTokensMiddleware

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = re.compile(r"^## Integrate your app\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    section = SECTION.search(README.read_text())
    assert section is not None, "README has no 'Integrate your app' section"
    return BLOCK.findall(section.group(1))


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.fixture
def environment(real_server: RealServer, monkeypatch: pytest.MonkeyPatch) -> RealServer:
    monkeypatch.setenv("TOKEN_SERVICE_URL", real_server.base_url)
    monkeypatch.setenv("TOKEN_SERVICE_API_KEY", real_server.api_key)
    monkeypatch.setenv("PLATFORM_JWT_SECRET", real_server.jwt_secret)
    return real_server


def bearer(server: RealServer, user_id: str) -> dict[str, str]:
    token = jwt.encode(
        {"sub": user_id, "exp": int(time.time()) + 60}, server.jwt_secret, algorithm="HS256"
    )
    return {"Authorization": f"Bearer {token}"}


def balance(server: RealServer, user_id: str) -> int:
    with server.client() as tokens:
        return tokens.get_balance(user_id).balance


def test_there_is_one_block_per_way_in() -> None:
    assert len(readme_blocks()) == 6


def test_a_plain_call(environment: RealServer) -> None:
    environment.admin("POST", "/api/users", {"userId": "alice"})
    before = balance(environment, "alice")
    run(readme_blocks()[0], {"make_image": lambda prompt: "image", "prompt": "a cat"})
    assert balance(environment, "alice") == before - 5


async def test_the_fastapi_dependencies(environment: RealServer) -> None:
    user = environment.new_user(plan=None)

    async def make_image(kind: str = "image-512") -> str:
        return f"{kind}.png"

    async def llm(prompt: str) -> SimpleNamespace:
        return SimpleNamespace(text="hi", cost_tokens=120)

    blocks = readme_blocks()
    namespace: dict[str, Any] = {
        "make_image": make_image,
        "llm": llm,
        "prompt": "hello",
        "COSTS": {"big": 12},
    }
    for block in blocks[1:4]:
        run(block, namespace)
    transport = httpx.ASGITransport(app=namespace["app"])
    headers = bearer(environment, user)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
        assert (await http.post("/generate", headers=headers)).status_code == 200
        dynamic = await http.post("/generate/big", headers=headers)
        assert dynamic.json() == {"image": "big.png", "remainingBalance": 983}
        assert (await http.post("/chat", headers=headers)).json() == {"reply": "hi"}
        assert (await http.post("/generate")).status_code == 401
    assert balance(environment, user) == 1000 - 5 - 12 - 120
    await namespace["bank"].aclose()


async def test_the_asgi_middleware(environment: RealServer) -> None:
    user = environment.new_user(plan=None)

    async def generate(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    namespace = run(
        readme_blocks()[4], {"routes": [Route("/generate", generate, methods=["POST"])]}
    )
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
        response = await http.post("/generate", headers=bearer(environment, user))
    assert response.json() == {"ok": True}
    assert balance(environment, user) == 995
    layer = namespace["app"].middleware_stack
    while not isinstance(layer, RequireTokensMiddleware):
        layer = layer.app
    await layer.client.aclose()  # made from the environment on first use


async def test_the_token_process_decorator(environment: RealServer) -> None:
    user = environment.new_user()

    async def llm(text: str) -> SimpleNamespace:
        return SimpleNamespace(text=text[:3], input_tokens=120, output_tokens=400)

    namespace = run(readme_blocks()[5], {"llm": llm})
    try:
        result = await namespace["summarize"]({"user_id": user, "text": "a long text"})
    finally:  # the shared client the decorator made from the environment
        await _decorator.default_async_client().aclose()
        _decorator.default_async_client.cache_clear()
    assert result["summary"] == "a l"
    assert balance(environment, user) == 1000 - 120  # 400 / 4 = 100, + 20% profit

"""Option A from an app's side: the SDK's ``session_user_id`` dependency forwards the
tokenbank session cookie to a real tokenbank server and learns the user (both engines)."""

import asyncio
from typing import Annotated

import httpx
import uvicorn
from fastapi import Depends, FastAPI

from tests.accounts.conftest import PASSWORD
from tests.support.server import free_port
from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.client.fastapi import session_user_id
from tokenbank.config import Settings


def an_app(base_url: str, api_key: str) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(
        user_id: Annotated[str, Depends(session_user_id(base_url, api_key))],
    ) -> dict[str, str]:
        return {"userId": user_id}

    return app


async def test_an_app_learns_the_signed_in_user_from_the_forwarded_cookie(
    database_url: str, clock: ManualClock
) -> None:
    settings = Settings(database_url=database_url, hold_sweep_interval_seconds=0)
    tokens = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    tokenbank = create_app(settings, token_service=tokens, clock=clock)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(tokenbank, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        services = tokenbank.state.services
        _, key = await services.apps.create_app("app", scopes=["read"])
        await tokens.open_wallet("bob")
        await services.accounts.create("bob@example.com", PASSWORD, user_id="bob")
        session = await services.accounts.sign_in("bob@example.com", PASSWORD)
        app = an_app(f"http://127.0.0.1:{port}", key)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            signed_in = await client.get("/me", headers={"Cookie": f"tb_session={session.token}"})
            assert (signed_in.status_code, signed_in.json()) == (200, {"userId": "bob"})
            assert (await client.get("/me")).status_code == 401
            stale = await client.get("/me", headers={"Cookie": "tb_session=not-a-session"})
            assert stale.status_code == 401
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        await tokens.close()

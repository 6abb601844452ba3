"""The fixture itself works on both engines; the real API tests live beside this."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_health_and_balance(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "database": "ok"}
    await api.tokens.open_wallet("u1")
    response = await api.client.get("/api/tokens/balance/u1", headers=api.headers("read"))
    assert response.status_code == 200
    assert response.json()["data"]["balance"] == 0

"""The webhook endpoints' admin API: create, list, change, rotate, delete, deliveries,
redelivery; bad input is a 4xx that writes nothing; every change is audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.api.conftest import Api

BASE = "/api/admin/webhooks"


async def call(api: Api, method: str, path: str = "", body: Any = None) -> Any:
    return await api.client.request(method, BASE + path, json=body, headers=api.headers("admin"))


async def count(api: Api, table: str) -> int:
    engine = await api.tokens.engine()
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_endpoint_lifecycle(api: Api) -> None:
    created = await call(
        api,
        "POST",
        body={"app": "test-app", "url": "https://a.example.test/h", "eventTypes": ["balance.low"]},
    )
    assert created.status_code == 201, created.json()
    endpoint = created.json()["data"]
    assert endpoint["secret"].startswith("whsec_")
    assert (endpoint["app"], endpoint["eventTypes"], endpoint["enabled"]) == (
        "test-app",
        ["balance.low"],
        True,
    )
    path = f"/{endpoint['id']}"
    listed = (await call(api, "GET")).json()["data"]
    assert [item["id"] for item in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    changed = await call(api, "PATCH", path, {"enabled": False, "eventTypes": ["*"]})
    assert changed.status_code == 200, changed.json()
    assert changed.json()["data"]["enabled"] is False
    assert len(changed.json()["data"]["eventTypes"]) == 12
    rotated = (await call(api, "POST", f"{path}/rotate-secret")).json()["data"]
    assert rotated["secret"] != endpoint["secret"]
    assert (await call(api, "GET", f"{path}/deliveries")).json() == {"data": []}
    missing = await call(api, "POST", f"{path}/redeliver", {"eventId": "evt_nothing"})
    assert missing.status_code == 404
    assert (await call(api, "DELETE", path)).status_code == 200
    assert (await call(api, "GET", path)).status_code == 404
    actions = [entry.action for entry in await api.services.accounts.audit_entries()]
    assert actions == [
        "webhook.delete",
        "webhook.rotate_secret",
        "webhook.update",
        "webhook.create",
    ]


BAD_BODIES = [
    {"app": "test-app", "url": "ftp://a.example.test/h", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "javascript:alert(1)", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "https://", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "HTTPS://a.example.test/h", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "https://a.example.test:0/h", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "https://a.example.test/h", "eventTypes": ["balance.sideways"]},
    {"app": "test-app", "url": "https://a.example.test/h", "eventTypes": []},
    {"app": "test-app", "url": "https://a.example.test/h"},
    {"app": "no-such-app", "url": "https://a.example.test/h", "eventTypes": ["balance.low"]},
    {"app": "test-app", "url": "https://a.example.test/h", "eventTypes": "balance.low"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_bad_endpoints_are_refused_and_write_nothing(api: Api, body: dict[str, Any]) -> None:
    answer = await call(api, "POST", body=body)
    assert 400 <= answer.status_code < 500, answer.json()
    assert "error" in answer.json()
    assert await count(api, "webhook_endpoints") == 0
    assert await count(api, "admin_audit_log") == 0


async def test_a_bad_change_writes_nothing(api: Api) -> None:
    body = {"app": "test-app", "url": "https://a.example.test/h", "eventTypes": ["balance.low"]}
    endpoint = (await call(api, "POST", body=body)).json()["data"]
    for change in ({"url": "gopher://x"}, {"eventTypes": ["nope"]}, {"enabled": None}):
        answer = await call(api, "PATCH", f"/{endpoint['id']}", change)
        assert 400 <= answer.status_code < 500, (change, answer.json())
    again = (await call(api, "GET", f"/{endpoint['id']}")).json()["data"]
    assert (again["url"], again["eventTypes"]) == (body["url"], body["eventTypes"])
    assert await count(api, "admin_audit_log") == 1


async def test_only_admin_keys(api: Api) -> None:
    answer = await api.client.get(BASE, headers=api.headers("spend"))
    assert answer.status_code == 403

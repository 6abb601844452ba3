"""The admin page of webhooks (both engines): a superadmin adds, disables, rotates,
redelivers and deletes, each audited; an admin sees and is refused every change; bad
input is a 400 page that writes nothing; a form without its CSRF token is refused."""

from __future__ import annotations

import re

from tests.web_admin.conftest import Site
from tokenbank.db.models import WebhookEndpoint

ADD = {
    "app": "shop",
    "url": "https://shop.example.test/hooks",
    "type_balance.low": "on",
    "type_wallet.suspended": "on",
}


async def test_a_superadmin_manages_endpoints(site: Site) -> None:
    await site.services.apps.create_app("shop")
    root = await site.sign_in_as("superadmin")
    added = await site.post("/admin/webhooks", ADD, root.csrf_token)
    assert added.status_code == 200, added.text
    secret = re.search(r'value="(whsec_[^"]+)"', added.text)
    assert secret is not None
    [endpoint] = await site.services.webhooks.list_endpoints()
    assert endpoint.event_types == ["balance.low", "wallet.suspended"]
    assert endpoint.secret == secret.group(1)
    listing = (await site.client.get("/admin/webhooks")).text
    assert endpoint.url in listing
    assert secret.group(1) not in listing
    base = f"/admin/webhooks/{endpoint.id}"
    assert (await site.post(f"{base}/disable", {}, root.csrf_token)).status_code == 303
    assert not (await site.services.webhooks.get(endpoint.id)).enabled
    rotated = await site.post(f"{base}/rotate", {}, root.csrf_token)
    assert secret.group(1) not in rotated.text and "whsec_" in rotated.text
    missing = await site.post(f"{base}/redeliver", {"event_id": "evt_none"}, root.csrf_token)
    assert missing.status_code == 404
    assert (await site.post(f"{base}/delete", {}, root.csrf_token)).status_code == 303
    assert await site.count(WebhookEndpoint) == 0
    actions = [row.action for row in await site.audit_rows()]
    assert actions == [
        "webhook.delete",
        "webhook.rotate_secret",
        "webhook.update",
        "webhook.create",
    ]
    assert all(row.actor == "superadmin@example.com" for row in await site.audit_rows())


async def test_bad_input_is_a_400_page_that_writes_nothing(site: Site) -> None:
    await site.services.apps.create_app("shop")
    root = await site.sign_in_as("superadmin")
    for form in (
        {**ADD, "url": "ftp://shop.example.test/"},
        {"app": "shop", "url": "https://shop.example.test/hooks"},  # no event type
    ):
        answer = await site.post("/admin/webhooks", form, root.csrf_token)
        assert answer.status_code == 400, form
    unknown_app = await site.post("/admin/webhooks", {**ADD, "app": "nope"}, root.csrf_token)
    assert unknown_app.status_code == 404
    assert await site.count(WebhookEndpoint) == 0
    assert await site.audit_count() == 0


async def test_an_admin_sees_and_changes_nothing(site: Site) -> None:
    await site.services.apps.create_app("shop")
    endpoint = await site.services.webhooks.create("shop", ADD["url"], ["balance.low"])
    admin = await site.sign_in_as("admin")
    page = await site.client.get("/admin/webhooks")
    assert page.status_code == 200 and endpoint.url in page.text
    assert endpoint.secret not in page.text
    assert (await site.post("/admin/webhooks", ADD, admin.csrf_token)).status_code == 403
    deleted = await site.post(f"/admin/webhooks/{endpoint.id}/delete", {}, admin.csrf_token)
    assert deleted.status_code == 403
    root = await site.sign_in_as("superadmin")
    assert root.csrf_token
    no_csrf = await site.post(f"/admin/webhooks/{endpoint.id}/delete", {}, None)
    assert no_csrf.status_code == 403
    assert await site.count(WebhookEndpoint) == 1
    assert await site.audit_count() == 1  # the create above, made through the service


async def test_the_tokens_page_shows_the_users_recent_alerts(site: Site) -> None:
    await site.sign_in_as("user")
    # The list is there for the live stream to fill, hidden while it is empty.
    assert (
        'id="recent-alerts" aria-labelledby="recent-alerts-title" aria-live="polite" hidden>'
        in (await site.client.get("/tokens")).text
    )
    tokens = site.services.tokens
    await tokens.credit("plain-user", amount=1_500, operation_type="purchase")
    await tokens.debit("plain-user", amount=600, operation_type="usage")
    await tokens.open_wallet("someone-else")
    await tokens.set_wallet_status("someone-else", "suspended")
    html = (await site.client.get("/tokens")).text
    assert "Your balance went below the low-balance level." in html
    assert 'aria-live="polite" hidden>' not in html
    assert "wallet.suspended" not in html  # another user's event

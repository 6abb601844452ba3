"""Who may open the admin pages (both engines): admins and superadmins see every page,
a user is refused (403), a signed-out visitor is sent to sign in."""

from __future__ import annotations

import pytest

from tests.web_admin.conftest import Site, seed

PAGES = [
    "/admin/tokens",
    "/admin/accounts",
    "/admin/accounts/alice",
    "/admin/settings",
    "/admin/packs",
    "/admin/plans",
    "/admin/apps",
    "/admin/audit",
]
CHANGES = [
    "/admin/accounts/alice/grant",
    "/admin/settings",
    "/admin/packs",
    "/admin/packs/starter",
    "/admin/packs/starter/deactivate",
    "/admin/plans",
    "/admin/plans/Gift",
    "/admin/apps",
    "/admin/apps/some-app/rotate",
    "/admin/apps/some-app/revoke",
]


async def test_a_signed_out_visitor_is_sent_to_sign_in(site: Site) -> None:
    for path in PAGES:
        answer = await site.client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/login?next={path}"
    answer = await site.client.get("/admin/accounts?status=active&page=2")
    assert answer.headers["location"].startswith("/login?next=/admin/accounts%3Fstatus")
    for path in CHANGES:
        assert (await site.client.post(path, data={})).status_code == 303, path


async def test_a_user_is_refused_every_admin_page_and_change(site: Site) -> None:
    await seed(site.services)
    user = await site.sign_in_as("user")
    for path in PAGES:
        answer = await site.client.get(path)
        assert answer.status_code == 403, path
        assert "This page is for admins." in answer.text
    for path in CHANGES:
        answer = await site.post(path, {"amount": "5", "reason": "x"}, user.csrf_token)
        assert answer.status_code == 403, path
    assert await site.grants_made() == 0
    assert await site.audit_count() == 0


@pytest.mark.parametrize("role", ["admin", "superadmin"])
async def test_every_page_renders_for_admins_and_superadmins(site: Site, role: str) -> None:
    await seed(site.services)
    await site.services.plans.seed_default_plans()
    await site.services.apps.create_app("shop", scopes=["read", "spend"], name="The shop")
    await site.sign_in_as(role)
    for path in PAGES:
        answer = await site.client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert answer.headers["cache-control"] == "no-store"
        assert 'aria-current="page"' in answer.text
    forms = (await site.client.get("/admin/packs")).text
    # The forms that change things are a superadmin's; an admin sees the figures only.
    assert ('action="/admin/packs"' in forms) == (role == "superadmin")
    account = (await site.client.get("/admin/accounts/alice")).text
    assert ('action="/admin/accounts/alice/grant"' in account) == (role == "superadmin")
    assert "shop" in (await site.client.get("/admin/apps")).text
    assert "Professional" in (await site.client.get("/admin/plans")).text

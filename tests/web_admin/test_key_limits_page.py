"""The admin apps page shows each key's limits (issue 14)."""

from __future__ import annotations

from tests.web_admin.conftest import Site


async def test_the_apps_page_shows_each_keys_limits(site: Site) -> None:
    limits = {"rate_limit_per_minute": 600, "daily_spend_cap_tokens": 50_000}
    await site.services.apps.create_app("capped", scopes=["spend"], limits=limits)
    await site.services.apps.create_app("free", scopes=["spend"])
    await site.sign_in_as("admin")

    page = (await site.client.get("/admin/apps")).text

    capped = page[page.index('id="app-capped"') : page.index('id="app-free"')]
    assert "600/min" in capped and "50,000 tokens/day" in capped
    free = page[page.index('id="app-free"') :]
    assert "no rate limit" in free and "no daily cap" in free

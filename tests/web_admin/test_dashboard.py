"""What the dashboard and the wallet pages show, against books seeded through the
services (both engines): every figure is the one the seed implies."""

from __future__ import annotations

import dataclasses

from tests.web_admin.conftest import Site, figure, section, seed
from tokenbank.web import admin_reads


async def test_the_dashboard_shows_the_figures_of_the_books(site: Site) -> None:
    await seed(site.services)
    await site.sign_in_as("admin")
    html = (await site.client.get("/admin/tokens")).text
    # Used: 1,000 + 1,500 + 500 + 200; actual: the per-unit charge's 1,000 for its 1,500.
    assert figure(html, "fig-used") == "3,200"
    assert figure(html, "fig-actual") == "2,700"
    assert figure(html, "fig-margin") == "15.6%"  # 500 / 3,200
    assert figure(html, "fig-refused") == "not recorded"
    # Two Starter packs at $15.00, $5.00 refunded.
    assert figure(html, "fig-revenue-usd") == "$25.00"
    assert figure(html, "fig-average-usd") == "$15.00"
    assert figure(html, "fig-purchases-usd") == "2"
    assert "2 in 30 days; 1.00 per buyer" in html
    assert figure(html, "fig-recharge") == "-"  # no recharge has finished
    assert figure(html, "fig-webhooks") == "3"  # two checkouts and a refund, all applied
    assert figure(html, "fig-active") == "2"
    assert figure(html, "fig-suspended") == "1"
    # (97,500 + 149,300 + 0) / 3
    assert figure(html, "fig-average-balance") == "82,267"
    flows = section(html, "flows")
    for label, tokens in [("Sold", "300,000"), ("Used", "3,200"), ("Clawed back", "50,000")]:
        assert f"{label}" in flows
        assert f'<td class="num">{tokens}</td>' in flows
    by_operation = section(html, "by-operation")
    assert "<td>usage</td>" in by_operation
    assert '<td class="num">3,000</td>' in by_operation
    assert "<td>image_generation</td>" in by_operation
    by_model = section(html, "by-model")
    assert "<td>gpt-4o</td>" in by_model
    assert '<td class="num">2,500</td><td class="num">2,000</td>' in by_model
    assert "(no model recorded)" in by_model
    days = section(html, "days")
    assert days.count("<tr>") == 31  # the heading and 30 days
    assert '<td>2026-01-01</td><td class="num">3,200</td><td class="num">300,000</td>' in days
    # The newest wallets, linked to their pages.
    assert 'href="/admin/accounts/carol"' in html
    assert "alice@example.com" in html


async def test_an_empty_dashboard_says_so(site: Site) -> None:
    await site.sign_in_as("superadmin")
    html = (await site.client.get("/admin/tokens")).text
    assert figure(html, "fig-used") == "0"
    assert figure(html, "fig-margin") == "-"
    assert figure(html, "fig-revenue") == "$0.00"
    assert "No usage yet." in html


async def test_the_accounts_list_filters_and_pages_in_the_database(site: Site) -> None:
    await seed(site.services)
    for number in range(30):
        await site.services.tokens.open_wallet(f"extra-{number:02d}")
    await site.services.plans.seed_default_plans()
    await site.services.plans.set_user_plan("bob", "Business")
    await site.sign_in_as("admin")

    async def users(query: str, status: int = 200) -> list[str]:
        answer = await site.client.get(f"/admin/accounts?{query}")
        assert answer.status_code == status, answer.text[:300]
        table = answer.text[answer.text.index("<tbody>") :]
        return [part.split('"')[0] for part in table.split('href="/admin/accounts/')[1:]]

    assert await users("status=suspended") == ["carol"]
    assert await users("plan=Business") == ["bob"]
    assert "bob" not in await users("plan=-")
    assert await users("min_balance=100000&max_balance=149300") == ["bob"]
    assert await users("max_balance=-1") == []
    assert await users("q=ALICE@example") == ["alice"]  # an email, any case
    assert await users("q=extra-2") == [f"extra-{n}" for n in range(29, 19, -1)]
    assert await users("q=b&status=active") == ["bob"]
    # Newest first, 25 a page: 33 wallets (and the admin's none) make two pages.
    first = await users("")
    assert first[0] == "extra-29"
    assert len(first) == 25
    second = await users("page=2")
    assert second[-1] == "alice"
    assert len(second) == 8
    page_one = (await site.client.get("/admin/accounts?status=active")).text
    assert 'href="/admin/accounts?status=active&amp;page=2"' in page_one
    for bad in ("status=gone", "min_balance=ten", "min_balance=5&max_balance=1", "page=0"):
        assert await users(bad, status=400) == [f"extra-{n:02d}" for n in range(29, 4, -1)]


async def test_a_wallet_page_shows_its_balance_grants_ledger_and_purchases(site: Site) -> None:
    await seed(site.services)
    for number in range(30):
        await site.services.tokens.debit("bob", amount=1, description=f"call {number}")
    await site.sign_in_as("admin")
    html = (await site.client.get("/admin/accounts/alice")).text
    assert figure(html, "fig-balance") == "97,500"
    assert "alice@example.com" in html
    assert "<td>starter</td><td>paid</td>" in section(html, "purchases")
    assert "$5.00" in section(html, "purchases")
    assert "<td>purchase</td><td>paid</td>" in section(html, "grants")
    ledger = section(html, "ledger")
    assert ledger.count("<tr>") == 1 + 4  # the heading; purchase, two debits, clawback
    bob = (await site.client.get("/admin/accounts/bob")).text
    assert section(bob, "ledger").count("<tr>") == 26
    assert "call 29" in bob
    assert 'href="?page=2"' in bob
    older = (await site.client.get("/admin/accounts/bob?page=2")).text
    assert "call 4" in older
    assert "call 29" not in older
    assert section(older, "ledger").count("<tr>") == 1 + 8  # 33 entries: 25 and 8
    assert (await site.client.get("/admin/accounts/nobody")).status_code == 404
    assert (await site.client.get("/admin/accounts/bob?page=x")).status_code == 400


async def test_the_kept_sums_stay_exact_as_the_ledger_grows(site: Site) -> None:
    await seed(site.services)
    tokens = site.services.tokens
    engine = await tokens.engine()
    await site.sign_in_as("admin")

    async def used() -> str:
        return figure((await site.client.get("/admin/tokens")).text, "fig-used")

    assert await used() == "3,200"
    assert admin_reads._kept.get(engine) is None  # nothing is old enough to keep yet
    site.clock.advance(admin_reads.SETTLE_SECONDS + 1)
    assert await used() == "3,200"
    kept = admin_reads._kept[engine]
    assert kept.flows["tokens_consumed"] == [3_200, 0]
    await tokens.debit("bob", amount=300)  # newer than the mark: summed on each visit
    assert await used() == "3,500"
    assert admin_reads._kept[engine] is kept
    site.clock.advance(86_400)  # the next day; the debit is kept now
    await tokens.debit("bob", amount=7)
    html = (await site.client.get("/admin/tokens")).text
    assert figure(html, "fig-used") == "3,507"
    assert admin_reads._kept[engine].upto_id > kept.upto_id
    assert '<td>2026-01-02</td><td class="num">7</td>' in section(html, "days")
    assert '<td>2026-01-01</td><td class="num">3,500</td>' in section(html, "days")
    # An entry that took an id below the mark and committed after it was read would
    # leave the kept sums short by one entry: the count tells, and they are made again.
    short = admin_reads._kept[engine]
    admin_reads._kept[engine] = dataclasses.replace(short, entries=short.entries - 1, flows={})
    assert await used() == "3,507"
    assert admin_reads._kept[engine].flows == short.flows

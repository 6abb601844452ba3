"""/tokens: the balance and what it is made of, the alerts, the packs and buying them
through Stripe Checkout (the test front), and the pages' shared refusals."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.payments.support import count
from tests.web_pages.conftest import Site, running_site, site_settings
from tokenbank import ManualClock
from tokenbank.db.models import Purchase
from tokenbank.testing.stripe_front import StripeFront

PAGES = [
    "/tokens",
    "/tokens/bought",
    "/tokens/history",
    "/tokens/history.csv",
    "/tokens/usage",
    "/tokens/events",
    "/settings/billing",
    "/settings/billing/purchases/pur_x",
]


def figure(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found is not None, element_id
    return found.group(1)


async def purchases(site: Site) -> int:
    return await count(site.tokens, Purchase)


async def test_the_page_shows_the_balance_its_grants_and_the_packs(site: Site) -> None:
    expiry = site.clock() + timedelta(days=10)
    await site.tokens.credit("alice", amount=5_000, operation_type="bonus", expires_at=expiry)
    await site.tokens.credit("alice", amount=2_000, operation_type="purchase")
    hold = await site.tokens.hold("alice", amount=300)
    assert hold.success

    answer = await site.alice.get("/tokens")

    assert answer.status_code == 200
    html = answer.text
    assert figure(html, "balance") == "7,000"
    assert figure(html, "available") == "6,700"
    assert figure(html, "held") == "300"
    assert figure(html, "paid") == "2,000"
    assert figure(html, "promotional") == "5,000"
    assert '5,000<div class="muted">on 2026-01-11' in html  # the next expiry
    assert 'class="alert' not in html.split('id="balance-alerts"')[1].split("</div>")[0]
    # The grants, newest first: source, category, granted, remaining, expiry.
    grants = html.split('id="grants-title"')[1]
    assert grants.index(">purchase<") < grants.index(">bonus<")
    assert "2026-01-11 00:00 UTC" in grants and "never" in grants
    # The four default packs, Pro highlighted, each with a Buy form.
    for name in ("Starter", "Pro", "Business", "Enterprise"):
        assert f">{name}" in html
    assert html.count('action="/tokens/buy"') == 5  # four packs and the custom amount
    assert re.search(r'class="pack popular">\s*<h3>Pro <span class="badge">Most popular', html)
    assert "$65.00" in html and "750,000" in html
    assert 'src="/static/live-balance.js"' in html


@pytest.mark.parametrize(
    ("available", "level"),
    [(1_000, None), (999, "warning"), (100, "warning"), (99, "critical"), (0, "critical")],
)
async def test_alerts_below_the_low_and_critical_thresholds(
    site: Site, available: int, level: str | None
) -> None:
    await site.tokens.credit("alice", amount=5_000, operation_type="bonus")
    await site.tokens.debit("alice", amount=5_000 - available)

    html = (await site.alice.get("/tokens")).text

    alerts = html.split('id="balance-alerts"')[1].split("</div>")[0]
    assert 'data-low="1000"' in alerts and 'data-critical="100"' in alerts
    if level is None:
        assert "alert" not in alerts.split(">", 1)[1]
    else:
        assert f'<p class="alert {level}" role="alert">' in alerts
        assert f"<span data-available>{available:,}</span>" in alerts


@pytest.mark.parametrize("path", PAGES)
async def test_signed_out_visitors_are_sent_to_sign_in(site: Site, path: str) -> None:
    answer = await site.anonymous.get(path)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=/")


async def test_an_account_without_a_wallet_gets_a_message(site: Site) -> None:
    accounts = site.services.accounts
    admin = await accounts.create("admin@example.com", "correct horse battery", role="admin")
    session = await accounts.start_session(admin)
    site.anonymous.cookies.set("tb_session", session.token)

    for path in [p for p in PAGES if p != "/tokens/events"]:
        answer = await site.anonymous.get(path)
        assert (path, answer.status_code) == (path, 200)
        assert "No token wallet" in answer.text
    assert (await site.anonymous.get("/tokens/events")).status_code == 204


async def test_buying_a_pack_without_the_csrf_token_is_refused_and_writes_nothing(
    site: Site,
) -> None:
    answer = await site.post(site.alice, "/tokens/buy", {"pack_id": "starter"}, csrf=False)
    wrong = await site.alice.post("/tokens/buy", data={"pack_id": "pro", "csrf_token": "x" * 43})

    assert (answer.status_code, wrong.status_code) == (403, 403)
    assert "did not come from tokenbank" in answer.text
    assert await purchases(site) == 0


async def test_buying_a_pack_goes_to_stripe_checkout(site: Site, stripe_front: StripeFront) -> None:
    answer = await site.post(site.alice, "/tokens/buy", {"pack_id": "pro"})

    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{stripe_front.api_base}/pay/")
    [bought] = await site.services.payments.list_purchases(user_id="alice")
    assert (bought.pack_id, bought.amount_cents, bought.tokens) == ("pro", 6_500, 750_000)
    assert bought.status == "pending"
    session = stripe_front.session(bought.stripe_checkout_session_id)
    assert session["success_url"] == (
        "http://tokenbank.test/tokens/bought?session={CHECKOUT_SESSION_ID}"
    )
    assert session["cancel_url"] == "http://tokenbank.test/tokens?canceled=1"


@pytest.mark.parametrize(("typed", "cents"), [("12.50", 1_250), ("$5", 500), ("1,000", 100_000)])
async def test_buying_a_custom_amount_in_dollars(site: Site, typed: str, cents: int) -> None:
    answer = await site.post(site.alice, "/tokens/buy", {"amount": typed})

    assert answer.status_code == 303
    [bought] = await site.services.payments.list_purchases(user_id="alice")
    assert (bought.kind, bought.amount_cents, bought.tokens) == ("amount", cents, cents * 100)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"amount": "4.99"}, "the smallest purchase is $5.00"),
        ({"amount": "abc"}, "an amount in dollars"),
        ({"amount": "-10"}, "an amount in dollars"),
        ({"amount": "10.001"}, "an amount in dollars"),
        ({"amount": "9" * 70}, "at most 64 characters"),
        ({"amount": "99999999"}, "Amount:"),
        ({}, "choose a pack, or enter an amount"),
        ({"pack_id": "nope"}, "not on sale"),
        ({"pack_id": "Not A Pack!"}, "Pack:"),
    ],
)
async def test_bad_purchases_are_refused_with_the_page_and_write_nothing(
    site: Site, form: dict[str, str], message: str
) -> None:
    answer = await site.post(site.alice, "/tokens/buy", form)

    assert answer.status_code == 400
    assert message in answer.text
    assert 'id="form-error"' in answer.text and 'id="balance"' in answer.text
    assert await purchases(site) == 0


async def test_without_stripe_the_packs_show_and_nothing_can_be_bought(
    database_url: str, clock: ManualClock
) -> None:
    settings = site_settings(
        database_url, "http://127.0.0.1:9", stripe_secret_key=None, stripe_publishable_key=None
    )
    async with running_site(settings, clock) as site:
        page = await site.alice.get("/tokens")
        assert page.status_code == 200
        assert "Starter" in page.text and "Payments are not available" in page.text
        assert '<button type="submit" disabled>Payments are not available</button>' in page.text
        billing = await site.alice.get("/settings/billing")
        assert billing.status_code == 200 and "Card form unavailable" in billing.text

        answer = await site.post(site.alice, "/tokens/buy", {"pack_id": "starter"})

        assert answer.status_code == 503
        assert "buying tokens is switched off" in answer.text
        assert await purchases(site) == 0


async def test_a_canceled_checkout_is_noted(site: Site) -> None:
    html = (await site.alice.get("/tokens?canceled=1")).text

    assert "Checkout was canceled: nothing was charged." in html


async def test_the_page_after_checkout_says_the_purchase_is_being_credited(site: Site) -> None:
    await site.post(site.alice, "/tokens/buy", {"pack_id": "starter"})
    [bought] = await site.services.payments.list_purchases(user_id="alice")

    answer = await site.alice.get(f"/tokens/bought?session={bought.stripe_checkout_session_id}")
    unknown = await site.alice.get("/tokens/bought?session=cs_someone_elses")

    assert answer.status_code == 200
    assert "Your purchase is being credited" in answer.text
    assert f'href="/settings/billing/purchases/{bought.id}"' in answer.text
    assert figure(answer.text, "balance") == "0"
    assert 'src="/static/live-balance.js"' in answer.text
    assert unknown.status_code == 200 and "/settings/billing/purchases/" not in unknown.text


async def test_pages_are_not_cached_or_framed(site: Site) -> None:
    answer = await site.alice.get("/tokens")

    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"

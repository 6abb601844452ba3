"""/settings/billing: auto-recharge through RechargeService.configure, saving a card
with a SetupIntent (Stripe.js's part played by the SDK against the test front), the
reason tokenbank turned auto-recharge off, past purchases and their receipts (one's
own only)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.payments.support import count
from tests.web_pages.conftest import Site, running_site, site_settings
from tokenbank import ManualClock
from tokenbank.db.engine import write_transaction
from tokenbank.db.models import AutoRechargeSetting, Recharge
from tokenbank.payments.recharge import turn_off
from tokenbank.testing.stripe_front import StripeFront

VISA = "4242424242424242"


async def settings_rows(site: Site) -> int:
    return await count(site.tokens, AutoRechargeSetting)


async def save_card(site: Site, stripe_front: StripeFront) -> str:
    """What billing-card.js does: a SetupIntent from the page, confirmed by Stripe.js,
    then the card's id posted back."""
    answer = await site.alice.post(
        "/settings/billing/setup-intent", headers={"X-CSRF-Token": site.csrf["alice"]}
    )
    assert answer.status_code == 200, answer.text
    secret = answer.json()["clientSecret"]
    client = stripe_front.client()
    method = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    setup_id = secret.split("_secret_")[0]
    confirmed: Any = client.v1.setup_intents.confirm(setup_id, {"payment_method": method.id})
    assert confirmed.status == "succeeded"
    saved = await site.post(site.alice, "/settings/billing/card", {"payment_method_id": method.id})
    assert saved.status_code == 303 and saved.headers["location"] == "/settings/billing?saved=card"
    return str(method.id)


async def test_the_page_shows_auto_recharge_the_card_and_no_stripe_js(site: Site) -> None:
    answer = await site.alice.get("/settings/billing")

    assert answer.status_code == 200
    html = answer.text
    assert "Auto-recharge is off." in html
    assert "No card saved yet." in html
    assert "Card form unavailable" in html
    assert "js.stripe.com" not in html and 'src=""' not in html
    assert '<script src="/static/billing-card.js" defer></script>' in html
    assert 'data-publishable-key="pk_test_tokenbank"' in html
    assert "No purchases yet." in html
    for field in ("enabled", "threshold", "pack_id", "amount"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html


async def test_stripe_js_is_loaded_only_when_configured(
    database_url: str, clock: ManualClock, stripe_front: StripeFront
) -> None:
    url = "http://127.0.0.1:9/stripe.js"
    settings = site_settings(database_url, stripe_front.api_base, stripe_js_url=url)
    async with running_site(settings, clock) as site:
        html = (await site.alice.get("/settings/billing")).text
        assert f'<script src="{url}"></script>' in html
        assert "Card form unavailable" in html  # until Stripe.js runs and says otherwise


async def test_saving_auto_recharge_with_a_card(site: Site, stripe_front: StripeFront) -> None:
    method = await save_card(site, stripe_front)
    await site.tokens.credit("alice", amount=50_000, operation_type="bonus")

    answer = await site.post(
        site.alice,
        "/settings/billing/auto-recharge",
        {"enabled": "on", "threshold": "10,000", "pack_id": "starter", "amount": ""},
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/settings/billing?saved=auto-recharge"
    html = (await site.alice.get("/settings/billing?saved=auto-recharge")).text
    assert "Auto-recharge saved." in html
    assert "Auto-recharge is on: below 10,000 tokens." in html
    assert f"<code>{method}</code>" in html
    assert '<option value="starter" selected>' in html
    assert await count(site.tokens, Recharge) == 0  # 50,000 is above the threshold


async def test_a_custom_amount_and_turning_it_off(site: Site, stripe_front: StripeFront) -> None:
    await save_card(site, stripe_front)
    form = {"enabled": "on", "threshold": "500", "pack_id": "amount", "amount": "7.50"}
    await site.post(site.alice, "/settings/billing/auto-recharge", form)
    off = await site.post(site.alice, "/settings/billing/auto-recharge", {**form, "enabled": ""})

    assert off.status_code == 303
    html = (await site.alice.get("/settings/billing")).text
    assert "Auto-recharge is off." in html
    assert 'value="7.50"' in html and '<option value="amount" selected>' in html


async def test_the_reason_tokenbank_turned_it_off_is_shown(
    site: Site, stripe_front: StripeFront
) -> None:
    await save_card(site, stripe_front)
    await site.tokens.credit("alice", amount=50_000, operation_type="bonus")
    form = {"enabled": "on", "threshold": "1000", "pack_id": "pro"}
    assert (await site.post(site.alice, "/settings/billing/auto-recharge", form)).status_code == 303
    async with write_transaction(await site.tokens.engine()) as conn:
        assert await turn_off(conn, "alice", "your card was declined", site.clock())

    html = (await site.alice.get("/settings/billing")).text

    assert "tokenbank turned auto-recharge off: your card was declined" in html


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"enabled": "on", "threshold": "1000", "pack_id": "starter"}, "needs a saved card"),
        ({"threshold": "lots", "pack_id": "starter"}, "Threshold: a whole number of tokens"),
        ({"threshold": "", "pack_id": "starter"}, "Threshold: a whole number of tokens"),
        ({"threshold": "0", "pack_id": "starter"}, "Threshold: from 1 to"),
        ({"threshold": "1000", "pack_id": ""}, "choose a pack, or a custom amount"),
        ({"threshold": "1000", "pack_id": "nope"}, "not on sale"),
        ({"threshold": "1000", "pack_id": "amount", "amount": "1"}, "smallest purchase is $5.00"),
        ({"threshold": "1000", "pack_id": "amount", "amount": "five"}, "an amount in dollars"),
    ],
)
async def test_bad_auto_recharge_input_is_refused_and_writes_nothing(
    site: Site, form: dict[str, str], message: str
) -> None:
    answer = await site.post(site.alice, "/settings/billing/auto-recharge", form)

    assert answer.status_code == 400
    assert message in answer.text and 'id="form-error"' in answer.text
    assert f'value="{form["threshold"]}"' in answer.text  # what was typed, shown again
    assert await settings_rows(site) == 0


async def test_forms_without_the_csrf_token_are_refused(site: Site) -> None:
    form = {"threshold": "1000", "pack_id": "starter"}
    recharge = await site.post(site.alice, "/settings/billing/auto-recharge", form, csrf=False)
    card = await site.post(
        site.alice, "/settings/billing/card", {"payment_method_id": "pm_x"}, csrf=False
    )
    setup = await site.alice.post("/settings/billing/setup-intent")
    other = await site.alice.post(
        "/settings/billing/setup-intent", headers={"X-CSRF-Token": site.csrf["bob"]}
    )

    assert [recharge.status_code, card.status_code, setup.status_code] == [403, 403, 403]
    assert other.status_code == 403
    assert await settings_rows(site) == 0


@pytest.mark.parametrize(
    ("method", "message"),
    [("pm_nope", "Card: Stripe refused the card"), ("  ", "Card: no card was given")],
)
async def test_a_card_that_is_not_one_is_a_400(site: Site, method: str, message: str) -> None:
    answer = await site.post(site.alice, "/settings/billing/card", {"payment_method_id": method})

    assert answer.status_code == 400 and message in answer.text
    assert await settings_rows(site) == 0


async def test_purchases_are_listed_with_receipts_for_their_owner_only(site: Site) -> None:
    assert (await site.post(site.alice, "/tokens/buy", {"pack_id": "business"})).status_code == 303
    assert (await site.post(site.alice, "/tokens/buy", {"amount": "20"})).status_code == 303
    bought = await site.services.payments.list_purchases(user_id="alice")
    pack, amount = sorted(bought, key=lambda purchase: purchase.kind != "pack")

    html = (await site.alice.get("/settings/billing")).text
    receipt = await site.alice.get(f"/settings/billing/purchases/{pack.id}")
    others = await site.bob.get(f"/settings/billing/purchases/{pack.id}")
    unknown = await site.alice.get("/settings/billing/purchases/pur_unknown")
    too_long = await site.alice.get("/settings/billing/purchases/" + "p" * 300)

    assert "Business" in html and "Custom amount" in html
    assert "$175.00" in html and "$20.00" in html and "2,250,000" in html and "pending" in html
    assert f'href="/settings/billing/purchases/{amount.id}"' in html
    assert receipt.status_code == 200
    assert "Business pack" in receipt.text and "$175.00" in receipt.text
    assert pack.id in receipt.text
    for refused in (others, unknown, too_long):
        assert refused.status_code == 404 and "No such purchase" in refused.text
        assert pack.id not in refused.text
    assert "No purchases yet." in (await site.bob.get("/settings/billing")).text


async def test_purchases_are_paged(site: Site) -> None:
    for _ in range(26):
        await site.post(site.alice, "/tokens/buy", {"pack_id": "starter"})

    first = await site.alice.get("/settings/billing")
    second = await site.alice.get("/settings/billing?page=2")
    bad = await site.alice.get("/settings/billing?page=-1")

    assert (
        first.text.count('href="/settings/billing/purchases/') == 25
        and 'href="/settings/billing?page=2"' in first.text
    )
    assert (
        second.text.count('href="/settings/billing/purchases/') == 1
        and 'rel="next"' not in second.text
    )
    assert bad.status_code == 400 and "page: a page number" in bad.text

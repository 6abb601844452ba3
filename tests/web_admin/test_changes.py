"""What a superadmin changes through the admin pages, and what nobody else can (both
engines): grants, settings, packs, plans and apps, each audited with before and after;
bad input is a 400 page that writes nothing; an admin and a form without its CSRF token
are refused (403) and write nothing."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.web_admin.conftest import Site, seed
from tokenbank.db.models import LedgerTransaction


async def _grant_key(site: Site, user_id: str) -> str:
    html = (await site.client.get(f"/admin/accounts/{user_id}")).text
    found = re.search(r'name="grant_key" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


# --- grants ------------------------------------------------------------------------------


async def test_a_superadmins_grant_is_an_admin_grant_with_its_audit_entry(site: Site) -> None:
    await seed(site.services)
    root = await site.sign_in_as("superadmin")
    key = await _grant_key(site, "bob")
    form = {"amount": "2,500", "reason": "Goodwill after the outage", "grant_key": key}
    answer = await site.post("/admin/accounts/bob/grant", form, root.csrf_token)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/accounts/bob?granted=1"
    balance = await site.services.tokens.get_balance("bob")
    assert balance is not None
    assert balance.tokens_balance == 149_300 + 2_500
    async with (await site.services.tokens.engine()).connect() as conn:
        query = select(LedgerTransaction.__table__).where(
            LedgerTransaction.operation_type == "admin_grant"
        )
        grants = (await conn.execute(query)).all()
    assert len(grants) == 1
    assert grants[0].kind == "credit"
    assert grants[0].description == "Goodwill after the outage"
    assert grants[0].metadata == {"granted_by": "superadmin@example.com"}
    [entry] = await site.audit_rows()
    assert (entry.actor, entry.action, entry.target) == (
        "superadmin@example.com",
        "wallet.admin_grant",
        "bob",
    )
    assert entry.before == {"balance": 149_300}
    assert entry.after == {
        "balance": 151_800,
        "amount": 2_500,
        "reason": "Goodwill after the outage",
        "transaction_id": grants[0].id,
    }
    # The same form posted again (a reload, a double click) grants once.
    again = await site.post("/admin/accounts/bob/grant", form, root.csrf_token)
    assert again.status_code == 303
    assert await site.grants_made() == 1
    assert await site.audit_count() == 1
    page = (await site.client.get("/admin/accounts/bob?granted=1")).text
    assert "Tokens granted." in page
    assert "Goodwill after the outage" in page
    log = (await site.client.get("/admin/audit")).text
    assert "wallet.admin_grant" in log
    assert "{&#34;balance&#34;:149300}" in log


async def test_an_admin_cannot_grant(site: Site) -> None:
    await seed(site.services)
    admin = await site.sign_in_as("admin")
    form = {"amount": "100", "reason": "please", "grant_key": "k1"}
    answer = await site.post("/admin/accounts/bob/grant", form, admin.csrf_token)
    assert answer.status_code == 403
    assert "Only a superadmin can change this." in answer.text
    assert await site.grants_made() == 0
    assert await site.audit_count() == 0


async def test_a_grant_without_its_csrf_token_is_refused(site: Site) -> None:
    await seed(site.services)
    await site.sign_in_as("superadmin")
    form = {"amount": "100", "reason": "forged", "grant_key": "k1"}
    assert (await site.post("/admin/accounts/bob/grant", form, None)).status_code == 403
    assert (await site.post("/admin/accounts/bob/grant", form, "wrong")).status_code == 403
    # Another session's token is not this one's.
    other = await site.services.accounts.start_session(
        await site.services.accounts.get("superadmin@example.com")
    )
    answer = await site.post("/admin/accounts/bob/grant", form, other.signed_in.csrf_token)
    assert answer.status_code == 403
    assert await site.grants_made() == 0
    assert await site.audit_count() == 0


@pytest.mark.parametrize(
    "form",
    [
        {"amount": "0", "reason": "zero"},
        {"amount": "-5", "reason": "negative"},
        {"amount": "ten", "reason": "words"},
        {"amount": "1.5", "reason": "a fraction"},
        {"amount": "", "reason": "none"},
        {"amount": "1000000000001", "reason": "too many"},
        {"amount": "100", "reason": ""},
        {"amount": "100", "reason": "x" * 501},
        {"amount": "100", "reason": "no key", "grant_key": ""},
    ],
)
async def test_a_bad_grant_is_a_400_page_that_writes_nothing(
    site: Site, form: dict[str, str]
) -> None:
    await seed(site.services)
    root = await site.sign_in_as("superadmin")
    fields = {"grant_key": "k1", **form}
    answer = await site.post("/admin/accounts/bob/grant", fields, root.csrf_token)
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text
    assert await site.grants_made() == 0
    assert await site.audit_count() == 0
    balance = await site.services.tokens.get_balance("bob")
    assert balance is not None
    assert balance.tokens_balance == 149_300


async def test_a_grant_to_no_wallet_is_a_404(site: Site) -> None:
    root = await site.sign_in_as("superadmin")
    form = {"amount": "5", "reason": "r", "grant_key": "k"}
    answer = await site.post("/admin/accounts/ghost/grant", form, root.csrf_token)
    assert answer.status_code == 404
    assert await site.grants_made() == 0
    assert await site.audit_count() == 0


# --- pricing settings ----------------------------------------------------------------------


async def test_settings_edits_are_audited_and_bad_ones_write_nothing(site: Site) -> None:
    admin = await site.sign_in_as("admin")
    form = {"token_multiplier": "2", "tokens_per_usd": "10000"}
    assert (await site.post("/admin/settings", form, admin.csrf_token)).status_code == 403
    root = await site.sign_in_as("superadmin")
    for bad in (
        {"token_multiplier": "0", "tokens_per_usd": "10000"},
        {"token_multiplier": "1.5e3", "tokens_per_usd": "10000"},
        {"token_multiplier": "two", "tokens_per_usd": "10000"},
        {"token_multiplier": "2", "tokens_per_usd": "0"},
        {"token_multiplier": "2", "tokens_per_usd": ""},
    ):
        answer = await site.post("/admin/settings", bad, root.csrf_token)
        assert answer.status_code == 400, bad
    assert await site.audit_count() == 0
    current = await site.services.pricing.settings()
    assert (str(current.token_multiplier), current.tokens_per_usd) == ("1.5", 10_000)
    answer = await site.post("/admin/settings", form, root.csrf_token)
    assert answer.status_code == 303
    assert (await site.services.pricing.settings()).token_multiplier == 2
    [entry] = await site.audit_rows()
    assert (entry.action, entry.before, entry.after) == (
        "pricing.update_settings",
        {"tokenMultiplier": "1.5"},
        {"tokenMultiplier": "2"},
    )
    # Saving what is already there changes nothing and logs nothing.
    assert (await site.post("/admin/settings", form, root.csrf_token)).status_code == 303
    assert await site.audit_count() == 1
    assert 'value="2"' in (await site.client.get("/admin/settings")).text


async def test_model_rates_are_overridden_and_restored_with_audit(site: Site) -> None:
    root = await site.sign_in_as("superadmin")
    page = (await site.client.get("/admin/settings")).text
    assert 'id="model-rates"' in page and "dall-e-3" in page  # the shipped rates are listed
    form = {"model": "my-model", "input_tokens_per_unit": "0.5", "output_tokens_per_unit": "2"}
    answer = await site.post("/admin/settings/models", form, root.csrf_token)
    assert answer.status_code == 303
    rates = {rate.model: rate for rate in await site.services.pricing.list_model_rates()}
    assert (str(rates["my-model"].input_tokens_per_unit), rates["my-model"].source) == (
        "0.5",
        "database",
    )
    answer = await site.post("/admin/settings/models/my-model/delete", {}, root.csrf_token)
    assert answer.status_code == 303
    assert "my-model" not in {r.model for r in await site.services.pricing.list_model_rates()}
    created, deleted = sorted(await site.audit_rows(), key=lambda entry: entry.id)
    assert (created.action, created.target, created.before) == (
        "pricing.set_model_rate",
        "my-model",
        None,
    )
    assert created.after["outputTokensPerUnit"] == "2"
    assert (deleted.action, deleted.after) == ("pricing.delete_model_rate", None)


@pytest.mark.parametrize(
    "form",
    [
        {"model": "", "input_tokens_per_unit": "1", "output_tokens_per_unit": "1"},
        {"model": "m", "input_tokens_per_unit": "-1", "output_tokens_per_unit": "1"},
        {"model": "m", "input_tokens_per_unit": "1", "output_tokens_per_unit": "lots"},
        {"model": "m", "input_tokens_per_unit": "1", "output_tokens_per_unit": "1e9"},
        {"model": "m" * 200, "input_tokens_per_unit": "1", "output_tokens_per_unit": "1"},
        {"model": "m", "input_tokens_per_unit": "1", "output_tokens_per_unit": "1",
         "image_tokens": "0"},
    ],
)  # fmt: skip
async def test_a_bad_model_rate_is_a_400_page_that_writes_nothing(
    site: Site, form: dict[str, str]
) -> None:
    root = await site.sign_in_as("superadmin")
    before = await site.services.pricing.list_model_rates()
    answer = await site.post("/admin/settings/models", form, root.csrf_token)
    assert answer.status_code == 400, form
    assert await site.services.pricing.list_model_rates() == before
    assert await site.audit_count() == 0


async def test_operation_costs_are_set_and_deleted_with_audit(site: Site) -> None:
    shipped = await site.services.tokens.get_operation_costs()
    admin = await site.sign_in_as("admin")
    form = {"operation_type": "video_render", "tokens": "1,500"}
    assert (await site.post("/admin/settings/costs", form, admin.csrf_token)).status_code == 403
    root = await site.sign_in_as("superadmin")
    assert (await site.post("/admin/settings/costs", form, None)).status_code == 403  # no CSRF
    for bad in ({"operation_type": "usage", "tokens": "5"}, {"operation_type": "x", "tokens": "0"}):
        assert (await site.post("/admin/settings/costs", bad, root.csrf_token)).status_code == 400
    assert await site.services.tokens.get_operation_costs() == shipped
    assert await site.audit_count() == 0
    assert (await site.post("/admin/settings/costs", form, root.csrf_token)).status_code == 303
    costs = await site.services.tokens.get_operation_costs()
    assert costs == {**shipped, "video_render": 1_500}
    page = (await site.client.get("/admin/settings")).text
    assert '<th scope="row">video_render</th>' in page
    path = "/admin/settings/costs/video_render/delete"
    assert (await site.post(path, {}, root.csrf_token)).status_code == 303
    assert await site.services.tokens.get_operation_costs() == shipped
    entries = sorted(await site.audit_rows(), key=lambda entry: entry.id)
    assert [(e.action, e.before, e.after) for e in entries] == [
        ("pricing.set_operation_cost", None, {"tokens": 1_500}),
        ("pricing.delete_operation_cost", {"tokens": 1_500}, None),
    ]


# --- packs ---------------------------------------------------------------------------------


async def test_packs_are_created_edited_and_taken_off_sale_with_audit(site: Site) -> None:
    packs = await site.services.payments.packs()
    root = await site.sign_in_as("superadmin")
    new = {
        "pack_id": "mini",
        "name": "Mini",
        "tokens": "50,000",
        "price": "4.99",
        "currency": "usd",
        "stripe_price_id": "price_mini",
        "sort_order": "0",
        "active": "on",
    }
    assert (await site.post("/admin/packs", new, root.csrf_token)).status_code == 303
    mini = await packs.get("mini")
    assert (mini.terms.tokens, mini.terms.price_cents, mini.terms.stripe_price_id) == (
        50_000,
        499,
        "price_mini",
    )
    edit = {**new, "price": "5", "stripe_price_id": "price_mini_2", "popular": "on"}
    assert (await site.post("/admin/packs/mini", edit, root.csrf_token)).status_code == 303
    off = await site.post("/admin/packs/mini/deactivate", {}, root.csrf_token)
    assert off.status_code == 303
    assert not (await packs.get("mini")).terms.active
    created, edited, deactivated = reversed(await site.audit_rows())
    assert (created.action, created.before, created.after["price_cents"]) == (
        "pack.create",
        None,
        499,
    )
    assert edited.action == "pack.update"
    assert edited.before == {"price_cents": 499, "stripe_price_id": "price_mini", "popular": False}
    assert edited.after == {"price_cents": 500, "stripe_price_id": "price_mini_2", "popular": True}
    assert (deactivated.before, deactivated.after) == ({"active": True}, {"active": False})
    assert "price_mini_2" in (await site.client.get("/admin/packs")).text


@pytest.mark.parametrize(
    "change",
    [
        {"pack_id": "Bad Id"},
        {"tokens": "0"},
        {"price": "4.999"},
        {"price": "free"},
        {"currency": "dollars"},
        {"name": ""},
        {"stripe_price_id": "p" * 256},
    ],
)
async def test_a_bad_pack_is_a_400_page_that_writes_nothing(
    site: Site, change: dict[str, str]
) -> None:
    root = await site.sign_in_as("superadmin")
    form = {"pack_id": "mini", "name": "Mini", "tokens": "5", "price": "1", **change}
    answer = await site.post("/admin/packs", form, root.csrf_token)
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text
    assert await (await site.services.payments.packs()).list_packs(active_only=False) == []
    assert await site.audit_count() == 0


async def test_an_admin_cannot_change_packs(site: Site) -> None:
    await (await site.services.payments.packs()).seed_defaults()
    admin = await site.sign_in_as("admin")
    answer = await site.post("/admin/packs/starter/deactivate", {}, admin.csrf_token)
    assert answer.status_code == 403
    assert (await (await site.services.payments.packs()).get("starter")).terms.active
    assert await site.audit_count() == 0


# --- plans ---------------------------------------------------------------------------------


async def test_plans_are_created_and_edited_with_audit(site: Site) -> None:
    root = await site.sign_in_as("superadmin")
    new = {
        "name": "Team",
        "monthly_allocation_tokens": "5000",
        "allocation_policy": "rollover",
        "rollover_cap_tokens": "",
        "profit_percent": "10",
    }
    assert (await site.post("/admin/plans", new, root.csrf_token)).status_code == 303
    edit = {
        **new,
        "monthly_allocation_tokens": "6000",
        "allocation_policy": "keep",
        "profit_percent": "10.0",  # the same number: not a change
        "stripe_price_id": "price_team",
    }
    assert (await site.post("/admin/plans/Team", edit, root.csrf_token)).status_code == 303
    plan = await site.services.plans.get_plan("Team")
    assert (plan.monthly_allocation_tokens, plan.allocation_policy) == (6_000, "keep")
    created, edited = reversed(await site.audit_rows())
    assert (created.action, created.target) == ("plan.create", "Team")
    assert created.after["allocation_policy"] == "rollover"
    assert edited.before == {
        "monthly_allocation_tokens": 5_000,
        "allocation_policy": "rollover",
        "stripe_price_id": None,
    }
    assert edited.after == {
        "monthly_allocation_tokens": 6_000,
        "allocation_policy": "keep",
        "stripe_price_id": "price_team",
    }
    assert "price_team" in (await site.client.get("/admin/plans")).text
    # One Stripe price sells one plan.
    await site.post("/admin/plans", {**new, "name": "Other"}, root.csrf_token)
    taken = await site.post(
        "/admin/plans/Other", {**new, "stripe_price_id": "price_team"}, root.csrf_token
    )
    assert taken.status_code == 400
    assert await site.audit_count() == 3


@pytest.mark.parametrize(
    "change",
    [
        {"monthly_allocation_tokens": "-1"},
        {"monthly_allocation_tokens": ""},
        {"allocation_policy": "hoard"},
        {"profit_percent": "-3"},
        {"rollover_cap_tokens": "lots"},
        {"description": "d" * 501},
    ],
)
async def test_a_bad_plan_edit_is_a_400_page_that_writes_nothing(
    site: Site, change: dict[str, str]
) -> None:
    await site.services.plans.seed_default_plans()
    before = await site.services.plans.get_plan("Gift")
    root = await site.sign_in_as("superadmin")
    form = {"monthly_allocation_tokens": "100", "allocation_policy": "expire", **change}
    answer = await site.post("/admin/plans/Gift", form, root.csrf_token)
    assert answer.status_code == 400
    assert await site.services.plans.get_plan("Gift") == before
    assert await site.audit_count() == 0
    assert (await site.post("/admin/plans/Nope", form, root.csrf_token)).status_code in (400, 404)


# --- apps ----------------------------------------------------------------------------------


async def test_apps_keys_are_shown_once_and_never_logged(site: Site) -> None:
    apps = site.services.apps
    root = await site.sign_in_as("superadmin")
    form = {"slug": "shop", "name": "The shop", "scope_read": "on", "scope_spend": "on"}
    created = await site.post("/admin/apps", form, root.csrf_token)
    assert created.status_code == 201
    key = re.search(r'value="(tb_[^"]+)"', created.text)
    assert key is not None
    principal = await apps.authenticate(key.group(1))
    assert principal is not None
    assert principal.scopes == frozenset({"read", "spend"})
    assert key.group(1) not in (await site.client.get("/admin/apps")).text
    rotated = await site.post("/admin/apps/shop/rotate", {"grace_seconds": "0"}, root.csrf_token)
    assert rotated.status_code == 200
    new_key = re.search(r'value="(tb_[^"]+)"', rotated.text)
    assert new_key is not None
    assert await apps.authenticate(new_key.group(1)) is not None
    prefix = new_key.group(1)[:10]
    revoked = await site.post("/admin/apps/shop/revoke", {"key": prefix}, root.csrf_token)
    assert revoked.status_code == 303
    assert await apps.authenticate(new_key.group(1)) is None
    rows = list(reversed(await site.audit_rows()))
    assert [row.action for row in rows] == ["app.create", "app.rotate_key", "app.revoke_keys"]
    assert rows[0].after == {
        "name": "The shop",
        "scopes": ["read", "spend"],
        "keys": [key.group(1)[:10]],
    }
    assert rows[2].before == {"keys": [prefix]}
    assert rows[2].after == {"keys": [], "revoked": 1}
    logged = repr([(row.before, row.after) for row in rows])
    assert key.group(1) not in logged
    assert new_key.group(1) not in logged
    # Bad input: nothing made.
    bad = await site.post("/admin/apps", {"slug": "Bad Slug", "scope_read": "on"}, root.csrf_token)
    assert bad.status_code == 400
    none = await site.post("/admin/apps", {"slug": "empty"}, root.csrf_token)  # no scope
    assert none.status_code == 400
    assert [app.slug for app in await apps.list_apps()] == ["shop"]
    assert await site.audit_count() == 3


async def test_an_admin_cannot_make_keys(site: Site) -> None:
    admin = await site.sign_in_as("admin")
    form = {"slug": "shop", "scope_read": "on"}
    assert (await site.post("/admin/apps", form, admin.csrf_token)).status_code == 403
    assert await site.services.apps.list_apps() == []


# --- the audit log -------------------------------------------------------------------------


async def test_the_audit_log_is_newest_first_and_paged(site: Site) -> None:
    accounts = site.services.accounts
    for number in range(55):
        await accounts.audit("cli", "test.step", f"target-{number:02d}", None, {"n": number})
        site.clock.advance(1)
    await site.sign_in_as("admin")
    first = (await site.client.get("/admin/audit")).text
    assert first.index("target-54") < first.index("target-53")
    assert "target-04" not in first
    assert 'href="?page=2"' in first
    second = (await site.client.get("/admin/audit?page=2")).text
    assert "target-04" in second
    assert "target-05" not in second
    assert "{&#34;n&#34;:0}" in second


# --- features ------------------------------------------------------------------------------


async def test_a_superadmin_edits_a_feature_with_audit_and_bad_input_writes_nothing(
    site: Site,
) -> None:
    await site.services.plans.create_feature(
        "summarize", name="Summarize", rule={"type": "fixed", "tokens": 3}
    )
    root = await site.sign_in_as("superadmin")
    page = await site.client.get("/admin/plans")
    assert 'action="/admin/features/summarize"' in page.text
    form = {
        "name": "Summarize text",
        "rule": '{"type": "fixed", "tokens": 5}',
        "min_balance_tokens": "100",
        "hold_tokens": "",
        "profit_percent": "20",
    }
    assert (await site.post("/admin/features/summarize", form, root.csrf_token)).status_code == 303
    feature = await site.services.plans.get_feature("summarize")
    assert (feature.name, feature.min_balance_tokens, feature.pricing_version) == (
        "Summarize text",
        100,
        2,
    )
    (entry,) = [row for row in await site.audit_rows() if row.action == "feature.update"]
    assert entry.before["rule"] == {"type": "fixed", "tokens": 3}
    assert entry.after["rule"]["tokens"] == 5
    for bad in ({"rule": "not json"}, {"rule": '{"type": "nope"}'}, {"min_balance_tokens": "-1"}):
        answer = await site.post("/admin/features/summarize", {**form, **bad}, root.csrf_token)
        assert answer.status_code == 400, bad
    assert (await site.services.plans.get_feature("summarize")).pricing_version == 2
    viewer = await site.sign_in_as("admin")
    refused = await site.post("/admin/features/summarize", form, viewer.csrf_token)
    assert refused.status_code == 403
    assert 'action="/admin/features/' not in (await site.client.get("/admin/plans")).text

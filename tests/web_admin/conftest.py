"""The app on each engine for the admin pages' tests, driven with httpx over ASGI
(the approach of tests/accounts/conftest.py), and the books they look at."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tokenbank import ManualClock, TokenService
from tokenbank.accounts.service import SignedIn
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.db.models import AdminAuditEntry, LedgerTransaction

PASSWORD = "correct horse battery"
# The per_unit pricing record the token process writes (pricing/calculator.py): 1,000
# actual tokens billed as 1,500 at the default multiplier of 1.5.
PER_UNIT_PRICING = {
    "rule": {"type": "per_unit", "model": "gpt-4o"},
    "model": "gpt-4o",
    "usage": {"input_units": 400, "output_units": 600},
    "token_multiplier": "1.5",
    "exact_cost": "1500",
    "cost_tokens": 1_500,
}


@dataclass
class Site:
    client: httpx.AsyncClient
    services: Services
    clock: ManualClock
    people: dict[str, SignedIn] = field(default_factory=dict)

    async def sign_in_as(self, role: str) -> SignedIn:
        """A session of an account with ``role`` (one per role), its cookie on the client."""
        email = f"{role}@example.com"
        accounts = self.services.accounts
        if role not in self.people:
            user_id = None
            if role == "user":
                await self.services.tokens.open_wallet("plain-user")
                user_id = "plain-user"
            await accounts.create(email, PASSWORD, role=role, user_id=user_id)
        session = await accounts.start_session(await accounts.get(email))
        self.client.cookies.set("tb_session", session.token)
        self.people[role] = session.signed_in
        return session.signed_in

    def sign_out(self) -> None:
        self.client.cookies.clear()

    async def post(self, path: str, data: dict[str, Any], csrf: str | None) -> httpx.Response:
        """A form post, with the session's CSRF token when given."""
        fields = dict(data)
        if csrf is not None:
            fields["csrf_token"] = csrf
        return await self.client.post(path, data=fields)

    async def count(self, model: Any, *conditions: Any) -> int:
        async with (await self.services.tokens.engine()).connect() as conn:
            query = select(func.count()).select_from(model.__table__).where(*conditions)
            return int((await conn.execute(query)).scalar_one())

    async def grants_made(self) -> int:
        return await self.count(
            LedgerTransaction, LedgerTransaction.operation_type == "admin_grant"
        )

    async def audit_rows(self) -> list[Any]:
        return list(await self.services.accounts.audit_entries(limit=500))

    async def audit_count(self) -> int:
        return await self.count(AdminAuditEntry)


def figure(html: str, figure_id: str) -> str:
    """The value shown by the dashboard figure ``figure_id``."""
    found = re.search(rf'id="{re.escape(figure_id)}"><div class="value">([^<]*)</div>', html)
    assert found is not None, f"no figure {figure_id}"
    return found.group(1)


def section(html: str, element_id: str) -> str:
    """The HTML of the element with ``id`` up to the end of its table."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</table>", start)]


@pytest.fixture
async def site(database_url: str, clock: ManualClock) -> AsyncIterator[Site]:
    settings = Settings(
        database_url=database_url,
        welcome_bonus_tokens=0,
        hold_sweep_interval_seconds=0,
        sign_in_slowdown_seconds=0,
    )
    service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as c:
            yield Site(client=c, services=services, clock=clock)
    await service.close()


async def buy_starter(services: Services, user_id: str) -> str:
    """A paid Starter pack (150,000 tokens, $15.00) through the webhook's own path: the
    purchase row, then Stripe's checkout.session.completed. The PaymentIntent id."""
    payments = services.payments
    order = await payments.order(pack_id="starter", amount_cents=None)
    purchase_id = await payments._open_purchase(user_id, order)
    intent = f"pi_{uuid.uuid4().hex[:20]}"
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:20]}",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "client_reference_id": purchase_id,
        "amount_total": order.amount_cents,
        "currency": order.currency,
        "payment_intent": intent,
        "metadata": {"tokenbank_purchase_id": purchase_id},
    }
    taken = await payments.take_event(_event("checkout.session.completed", session))
    assert taken.outcome == "applied", taken
    return intent


async def refund(services: Services, intent: str, cents: int) -> None:
    charge: dict[str, Any] = {"object": "charge", "payment_intent": intent, "currency": "usd"}
    charge["amount_refunded"] = cents
    taken = await services.payments.take_event(_event("charge.refunded", charge))
    assert taken.outcome == "applied", taken


def _event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "data": {"object": obj},
    }


async def seed(services: Services) -> None:
    """Three wallets and their books (the figures test_dashboard.py expects):

    alice (alice@example.com): Starter bought, $5.00 of it refunded (50,000 tokens clawed
      back), 1,000 used (metadata model gpt-4o), 1,500 used priced per unit (1,000 actual)
      -> 97,500
    bob: Starter bought, 500 used (no model), one image_generation (200) -> 149,300
    carol: nothing, suspended by an admin -> 0
    """
    tokens = services.tokens
    await (await services.payments.packs()).seed_defaults()
    for user_id in ("alice", "bob", "carol"):
        await tokens.open_wallet(user_id)
    await services.accounts.create("alice@example.com", PASSWORD, user_id="alice")
    intent = await buy_starter(services, "alice")
    await buy_starter(services, "bob")
    await tokens.debit("alice", amount=1_000, metadata={"model": "gpt-4o"})
    await tokens.debit("alice", amount=1_500, pricing=PER_UNIT_PRICING)
    await tokens.debit("bob", amount=500)
    await tokens.set_operation_cost("image_generation", 200)
    await tokens.charge_for_operation("bob", "image_generation")
    await refund(services, intent, 500)
    await tokens.set_wallet_status("carol", "suspended")

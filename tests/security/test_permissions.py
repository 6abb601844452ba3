"""The permission matrix: every endpoint of the OpenAPI document against every kind
of credential, on SQLite and PostgreSQL.

Rows are the operations of the app's own document (a new endpoint fails
``test_the_matrix_covers_every_endpoint`` until it is given a row here). Columns:

- refused with 401: no key, a wrong key, a malformed key, a revoked key, and a
  rotated-out key whose grace period has passed (both used once before, so that the
  key cache holds them as valid);
- each scope alone: the route's scope (per the README's table) succeeds, any other
  is a 403;
- keys with every scope (an app's, the rotated-in key, ``TOKENBANK_API_KEY``) succeed.

Every request has a valid body, so that a 401 or 403 is never masked by a 422 (and
the matrix checks each refusal's body shape). A refused call changes nothing: every
table is compared before and after.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import fastapi.routing

from tests.security.conftest import Secured, table_rows
from tokenbank.apps.keys import display_prefix, generate_key
from tokenbank.db.models import API_SCOPES
from tokenbank.events import repository as events_repository

ALICE = "alice"
PLAN = "basic"
FEATURE = "chat"
COST = "image_generation"

Request = tuple[str, Any]  # path, JSON body (None: no body)


class World:
    """Fresh resources for each call that needs its own (a hold to capture, a plan to
    delete), made through the services, not the API under test."""

    def __init__(self, secured: Secured) -> None:
        self.s = secured
        self._numbers = itertools.count()

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._numbers)}"

    async def seed(self) -> None:
        services = self.s.services
        await services.tokens.open_wallet(ALICE)
        credited = await services.tokens.credit(ALICE, amount=1_000_000, operation_type="bonus")
        assert credited.success
        await services.plans.create_feature(
            FEATURE, name="Chat", rule={"type": "fixed", "tokens": 3}
        )
        await services.plans.create_plan(PLAN, features=[FEATURE])
        await services.plans.set_user_plan(ALICE, PLAN)
        await services.tokens.set_operation_cost(COST, 10)
        await (await services.payments.packs()).seed_defaults()
        # Alice signed in: GET /api/session answers for her forwarded cookie (option A);
        # the API's other routes ignore cookies.
        account = await services.accounts.create(
            "alice@example.com", "alice's password", user_id=ALICE
        )
        session = await services.accounts.start_session(account)
        self.s.client.cookies.set("tb_session", session.token, domain="tokenbank.test")

    async def hold(self) -> str:
        result = await self.s.tokens.hold(ALICE, 5, ttl_seconds=3600)
        assert result.success and result.hold_id is not None
        return result.hold_id

    async def debit(self) -> str:
        result = await self.s.tokens.debit(ALICE, amount=2, idempotency_key=self.name("debit"))
        assert result.success and result.transaction_id is not None
        return result.transaction_id

    async def plan(self, features: tuple[str, ...] = ()) -> str:
        name = self.name("plan")
        await self.s.services.plans.create_plan(name, features=list(features))
        return name

    async def feature(self) -> str:
        feature_id = self.name("feature")
        await self.s.services.plans.create_feature(
            feature_id, name="F", rule={"type": "fixed", "tokens": 1}
        )
        return feature_id

    async def user(self) -> str:
        user_id = self.name("user")
        await self.s.tokens.open_wallet(user_id)
        return user_id

    async def webhook(self) -> str:
        """A webhook endpoint of an app of its own (decision 15)."""
        slug = self.name("hooks")
        await self.s.services.apps.create_app(slug)
        url = "https://hooks.example.test/in"
        return (await self.s.services.webhooks.create(slug, url, ["*"])).id

    async def event(self) -> str:
        """An event: a wallet suspended."""
        user_id = await self.user()
        await self.s.tokens.set_wallet_status(user_id, "suspended")
        [alert] = await self.s.services.webhooks.user_alerts(user_id)
        engine = await self.s.tokens.engine()
        async with engine.connect() as conn:
            [event] = await events_repository.user_events(conn, user_id, 1)
        assert alert.type == event.type
        return str(event.id)


Prepare = Callable[[World], Awaitable[Request]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # as in the OpenAPI document
    scope: str | None  # None: any valid key
    success: int
    prepare: Prepare


def fixed(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World) -> Request:
        return path, body

    return prepare


async def _capture(world: World) -> Request:
    return f"/api/tokens/holds/{await world.hold()}/capture", {"amount": 3}


async def _void(world: World) -> Request:
    return f"/api/tokens/holds/{await world.hold()}/void", {}


async def _get_hold(world: World) -> Request:
    return f"/api/tokens/holds/{await world.hold()}", None


async def _deduct(world: World) -> Request:
    return "/api/tokens/deduct", {"userId": ALICE, "amount": 1, "referenceId": world.name("d")}


async def _refund(world: World) -> Request:
    return "/api/tokens/refund", {"userId": ALICE, "amount": 1, "refundOf": await world.debit()}


async def _open_wallet(world: World) -> Request:
    return "/api/users", {"userId": world.name("new-user")}


async def _end(world: World) -> Request:
    body = {
        "user_id": ALICE,
        "feature_endpoint_id": FEATURE,
        "input_token": 10,
        "output_token": 20,
        "request_id": world.name("end"),
    }
    return "/api/token-process/end", body


async def _key_limits(world: World) -> Request:
    slug = world.name("limited")
    _, key = await world.s.services.apps.create_app(slug)
    body = {"rateLimitPerMinute": 600, "dailySpendCapTokens": 50_000}
    return f"/api/admin/apps/{slug}/keys/{display_prefix(key)}/limits", body


async def _create_webhook(world: World) -> Request:
    slug = world.name("hooks")
    await world.s.services.apps.create_app(slug)
    body = {"app": slug, "url": "https://hooks.example.test/new", "eventTypes": ["*"]}
    return "/api/admin/webhooks", body


async def _on_webhook(world: World, tail: str = "", body: Any = None) -> Request:
    return f"/api/admin/webhooks/{await world.webhook()}{tail}", body


async def _get_webhook(world: World) -> Request:
    return await _on_webhook(world)


async def _patch_webhook(world: World) -> Request:
    return await _on_webhook(world, "", {"enabled": False})


async def _rotate_webhook(world: World) -> Request:
    return await _on_webhook(world, "/rotate-secret")


async def _webhook_deliveries(world: World) -> Request:
    return await _on_webhook(world, "/deliveries")


async def _redeliver(world: World) -> Request:
    return await _on_webhook(world, "/redeliver", {"eventId": await world.event()})


async def _create_plan(world: World) -> Request:
    return "/api/admin/plans", {"name": world.name("new-plan"), "features": [FEATURE]}


async def _patch_plan(world: World) -> Request:
    return f"/api/admin/plans/{await world.plan()}", {"description": "changed"}


async def _delete_plan(world: World) -> Request:
    return f"/api/admin/plans/{await world.plan()}", None


async def _add_plan_feature(world: World) -> Request:
    return f"/api/admin/plans/{await world.plan()}/features/{FEATURE}", None


async def _remove_plan_feature(world: World) -> Request:
    return f"/api/admin/plans/{await world.plan((FEATURE,))}/features/{FEATURE}", None


async def _create_feature(world: World) -> Request:
    body = {"id": world.name("new-feature"), "name": "N", "rule": {"type": "fixed", "tokens": 2}}
    return "/api/admin/features", body


async def _patch_feature(world: World) -> Request:
    return f"/api/admin/features/{await world.feature()}", {"name": "Renamed"}


async def _delete_feature(world: World) -> Request:
    return f"/api/admin/features/{await world.feature()}", None


async def _user_plan(world: World) -> Request:
    return f"/api/admin/users/{await world.user()}/plan", {"plan": PLAN}


async def _user_status(world: World) -> Request:
    return f"/api/admin/users/{await world.user()}/status", {"status": "suspended"}


async def _delete_cost(world: World) -> Request:
    operation = world.name("op").replace("-", "_")
    await world.s.tokens.set_operation_cost(operation, 4)
    return f"/api/admin/costs/{operation}", None


async def _delete_model(world: World) -> Request:
    model = world.name("model")
    await world.s.services.pricing.set_model_rate(
        model, input_tokens_per_unit=1, output_tokens_per_unit=2
    )
    return f"/api/admin/models/{model}", None


async def _session(world: World) -> Request:
    return "/api/session", None


async def _checkout(world: World) -> Request:
    body = {
        "userId": ALICE,
        "packId": "starter",
        "successUrl": "http://127.0.0.1:9/ok",
        "cancelUrl": "http://127.0.0.1:9/no",
    }
    return "/api/checkout", body


async def _purchase(world: World) -> Request:
    order = await world.s.services.payments.order(pack_id="starter", amount_cents=None)
    created = await world.s.services.payments.create_payment_intent(ALICE, order)
    return f"/api/payments/purchases/{created.purchase_id}", None


async def _new_pack(world: World) -> Request:
    body = {"packId": world.name("pack"), "name": "P", "tokens": 10, "priceCents": 100}
    return "/api/admin/packs", body


async def _auto_recharge(world: World) -> Request:
    body = {"enabled": False, "thresholdTokens": 1_000, "packId": "starter"}
    return f"/api/users/{await world.user()}/auto-recharge", body


PERIOD = "?startDate=2025-01-01T00:00:00Z&endDate=2030-01-01T00:00:00Z"

ENDPOINTS = [
    Endpoint("GET", "/api/ping", None, 200, fixed("/api/ping")),
    # dialect A: tokens
    Endpoint(
        "GET", "/api/tokens/balance/{userId}", "read", 200, fixed(f"/api/tokens/balance/{ALICE}")
    ),
    Endpoint("POST", "/api/tokens/deduct", "spend", 200, _deduct),
    Endpoint("POST", "/api/tokens/refund", "refund", 200, _refund),
    Endpoint(
        "POST",
        "/api/tokens/credit",
        "credit",
        200,
        fixed("/api/tokens/credit", {"userId": ALICE, "amount": 1, "operationType": "purchase"}),
    ),
    Endpoint(
        "POST",
        "/api/tokens/holds",
        "spend",
        200,
        fixed("/api/tokens/holds", {"userId": ALICE, "amount": 1, "ttlSeconds": 60}),
    ),
    Endpoint("POST", "/api/tokens/holds/{holdId}/capture", "spend", 200, _capture),
    Endpoint("POST", "/api/tokens/holds/{holdId}/void", "spend", 200, _void),
    Endpoint("GET", "/api/tokens/holds/{holdId}", "read", 200, _get_hold),
    Endpoint(
        "GET",
        "/api/tokens/ledger/{userId}",
        "read",
        200,
        fixed(f"/api/tokens/ledger/{ALICE}{PERIOD}&limit=5"),
    ),
    Endpoint(
        "GET",
        "/api/tokens/stats/{userId}",
        "read",
        200,
        fixed(f"/api/tokens/stats/{ALICE}{PERIOD}"),
    ),
    Endpoint(
        "GET", "/api/tokens/grants/{userId}", "read", 200, fixed(f"/api/tokens/grants/{ALICE}")
    ),
    # dialect A: users, costs, estimate
    Endpoint("POST", "/api/users", "credit", 201, _open_wallet),
    Endpoint("GET", "/api/users/{userId}", "read", 200, fixed(f"/api/users/{ALICE}")),
    Endpoint("GET", "/api/costs", "read", 200, fixed("/api/costs")),
    Endpoint(
        "POST",
        "/api/estimate",
        "read",
        200,
        fixed("/api/estimate", {"userId": ALICE, "action": COST}),
    ),
    # dialect B
    Endpoint(
        "POST",
        "/api/token-process/start",
        "spend",
        200,
        fixed("/api/token-process/start", {"user_id": ALICE, "feature_endpoint_id": FEATURE}),
    ),
    Endpoint("POST", "/api/token-process/end", "spend", 200, _end),
    # admin
    Endpoint("GET", "/api/admin/plans", "admin", 200, fixed("/api/admin/plans")),
    Endpoint("POST", "/api/admin/plans", "admin", 201, _create_plan),
    Endpoint("GET", "/api/admin/plans/{name}", "admin", 200, fixed(f"/api/admin/plans/{PLAN}")),
    Endpoint("PATCH", "/api/admin/plans/{name}", "admin", 200, _patch_plan),
    Endpoint("DELETE", "/api/admin/plans/{name}", "admin", 200, _delete_plan),
    Endpoint(
        "PUT", "/api/admin/plans/{name}/features/{featureId}", "admin", 200, _add_plan_feature
    ),
    Endpoint(
        "DELETE", "/api/admin/plans/{name}/features/{featureId}", "admin", 200, _remove_plan_feature
    ),
    Endpoint("GET", "/api/admin/features", "admin", 200, fixed("/api/admin/features")),
    Endpoint("POST", "/api/admin/features", "admin", 201, _create_feature),
    Endpoint(
        "GET",
        "/api/admin/features/{featureId}",
        "admin",
        200,
        fixed(f"/api/admin/features/{FEATURE}"),
    ),
    Endpoint("PATCH", "/api/admin/features/{featureId}", "admin", 200, _patch_feature),
    Endpoint("DELETE", "/api/admin/features/{featureId}", "admin", 200, _delete_feature),
    Endpoint("PUT", "/api/admin/users/{userId}/plan", "admin", 200, _user_plan),
    Endpoint("PUT", "/api/admin/users/{userId}/status", "admin", 200, _user_status),
    Endpoint("GET", "/api/admin/costs", "admin", 200, fixed("/api/admin/costs")),
    Endpoint(
        "GET", "/api/admin/costs/{operation}", "admin", 200, fixed(f"/api/admin/costs/{COST}")
    ),
    Endpoint(
        "PUT",
        "/api/admin/costs/{operation}",
        "admin",
        200,
        fixed("/api/admin/costs/summarize", {"tokens": 7}),
    ),
    Endpoint("DELETE", "/api/admin/costs/{operation}", "admin", 200, _delete_cost),
    Endpoint("GET", "/api/admin/models", "admin", 200, fixed("/api/admin/models")),
    Endpoint(
        "PUT",
        "/api/admin/models/{model}",
        "admin",
        200,
        fixed(
            "/api/admin/models/my-model", {"inputTokensPerUnit": 1, "outputTokensPerUnit": "2.5"}
        ),
    ),
    Endpoint("DELETE", "/api/admin/models/{model}", "admin", 200, _delete_model),
    Endpoint("GET", "/api/admin/settings", "admin", 200, fixed("/api/admin/settings")),
    Endpoint(
        "PATCH",
        "/api/admin/settings",
        "admin",
        200,
        fixed("/api/admin/settings", {"tokensPerUsd": 10_000}),
    ),
    Endpoint(
        "POST",
        "/api/admin/grants",
        "admin",
        200,
        fixed("/api/admin/grants", {"userId": ALICE, "amount": 1, "reason": "matrix"}),
    ),
    Endpoint(
        "GET",
        "/api/admin/users/{userId}/renewal",
        "admin",
        200,
        fixed(f"/api/admin/users/{ALICE}/renewal"),
    ),
    Endpoint(
        "POST",
        "/api/admin/renewals/run",
        "admin",
        200,
        fixed("/api/admin/renewals/run", {"dryRun": True}),
    ),
    # Option A (decision 17): any key that reads; no forwarded session answers 401,
    # so the matrix sends alice's (seeded by World.seed).
    Endpoint("GET", "/api/session", "read", 200, _session),
    # Payments (decision 14): buying needs the payments scope; the packs are read.
    Endpoint("GET", "/api/packs", "read", 200, fixed("/api/packs")),
    Endpoint("POST", "/api/checkout", "payments", 200, _checkout),
    Endpoint(
        "POST",
        "/api/payments/intents",
        "payments",
        200,
        fixed("/api/payments/intents", {"userId": ALICE, "amountCents": 500}),
    ),
    Endpoint("GET", "/api/payments/purchases", "payments", 200, fixed("/api/payments/purchases")),
    Endpoint("GET", "/api/payments/purchases/{purchaseId}", "payments", 200, _purchase),
    Endpoint(
        "GET",
        "/api/users/{userId}/auto-recharge",
        "payments",
        200,
        fixed(f"/api/users/{ALICE}/auto-recharge"),
    ),
    Endpoint("PUT", "/api/users/{userId}/auto-recharge", "payments", 200, _auto_recharge),
    Endpoint(
        "POST",
        "/api/users/{userId}/auto-recharge/setup-intent",
        "payments",
        200,
        fixed(f"/api/users/{ALICE}/auto-recharge/setup-intent"),
    ),
    Endpoint("GET", "/api/admin/packs", "admin", 200, fixed("/api/admin/packs")),
    Endpoint("POST", "/api/admin/packs", "admin", 201, _new_pack),
    Endpoint(
        "PATCH",
        "/api/admin/packs/{packId}",
        "admin",
        200,
        fixed("/api/admin/packs/pro", {"popular": True}),
    ),
    Endpoint("DELETE", "/api/admin/packs/{packId}", "admin", 200, fixed("/api/admin/packs/pro")),
    # per-key limits
    Endpoint("PATCH", "/api/admin/apps/{slug}/keys/{keyPrefix}/limits", "admin", 200, _key_limits),
    # webhooks (decision 15)
    Endpoint("GET", "/api/admin/webhooks", "admin", 200, fixed("/api/admin/webhooks")),
    Endpoint("POST", "/api/admin/webhooks", "admin", 201, _create_webhook),
    Endpoint("GET", "/api/admin/webhooks/{endpointId}", "admin", 200, _get_webhook),
    Endpoint("PATCH", "/api/admin/webhooks/{endpointId}", "admin", 200, _patch_webhook),
    Endpoint("DELETE", "/api/admin/webhooks/{endpointId}", "admin", 200, _get_webhook),
    Endpoint(
        "POST", "/api/admin/webhooks/{endpointId}/rotate-secret", "admin", 200, _rotate_webhook
    ),
    Endpoint(
        "GET", "/api/admin/webhooks/{endpointId}/deliveries", "admin", 200, _webhook_deliveries
    ),
    Endpoint("POST", "/api/admin/webhooks/{endpointId}/redeliver", "admin", 202, _redeliver),
]

# Answer without a key: liveness and the API's own documentation.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}
# Stripe's webhook: no key, a signature instead (decision 14).
SIGNED = {("POST", "/api/stripe/webhook")}
WIDGET = {("GET", "/api/widget/balance"), ("OPTIONS", "/api/widget/balance")}
# Credentials refused with 401, in both headers: name -> headers.
UNAUTHORIZED = ("none", "wrong", "malformed", "too-long", "revoked", "expired")
# Keys with every scope, which every endpoint accepts.
FULL_KEYS = ("all", "rotated", "env")


def _credential(secured: Secured, name: str) -> str | None:
    return {
        "none": None,
        "wrong": generate_key(),  # well-formed, never issued
        "malformed": "not a key",
        "too-long": "tb_" + "x" * 300,
    }.get(name, secured.keys.get(name))


def _headers(key: str | None, style: str) -> dict[str, str]:
    if key is None:
        return {}
    if style == "bearer":
        return {"Authorization": f"Bearer {key}"}
    return {"x-server-api-key": key}


def _refusal_problem(endpoint: Endpoint, status: int, body: Any) -> str | None:
    """What is wrong with a refusal's body, in its dialect's shape, or None."""
    code = {401: "unauthorized", 403: "forbidden"}[status]
    if endpoint.path.startswith("/api/token-process"):
        ok = body.get("success") is False and body.get("status") == status
        ok = ok and isinstance(body.get("message"), str) and body.get("code") == code
    else:
        ok = isinstance(body.get("error"), str) and body.get("code") == code
    return None if ok else f"bad {status} body {body}"


async def _call(secured: Secured, method: str, request: Request, headers: dict[str, str]) -> Any:
    path, body = request
    return await secured.client.request(method, path, json=body, headers=headers)


def test_the_matrix_covers_every_endpoint() -> None:
    from tokenbank.api.app import create_app
    from tokenbank.config import Settings

    app = create_app(Settings(database_url="sqlite:///unused.db"))
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    in_matrix = {(e.method, e.path) for e in ENDPOINTS}
    assert len(in_matrix) == len(ENDPOINTS)
    assert documented - PUBLIC - SIGNED == in_matrix
    # Every route the app serves is in the document or public.
    served = {
        (method, str(route.path).replace("{model:path}", "{model}"))
        for route in _routes(app)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    # Under /api/, every served route is in the matrix. The pages (sessions, not keys:
    # tests/web_pages, tests/web_admin) and the widget (a session or a user JWT, from a
    # registered origin: tests/accounts/test_widget.py) answer to people, not apps.
    api_served = {(method, path) for method, path in served if path.startswith("/api/")}
    assert api_served - SIGNED - WIDGET == in_matrix
    assert {path for _, path in served - api_served} >= {"/tokens", "/admin/tokens", "/login"}


def _routes(app: Any) -> list[Any]:
    """The app's routes with their full paths (FastAPI >= 0.16x nests included routers)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(contexts(app.routes)) if contexts is not None else list(app.routes)


async def test_public_endpoints_need_no_key(secured: Secured) -> None:
    for method, path in sorted(PUBLIC):
        response = await secured.client.request(method, path)
        assert response.status_code == 200, (path, response.text[:200])


async def test_the_webhook_answers_to_its_signature_not_a_key(secured: Secured) -> None:
    for method, path in SIGNED:
        for headers in ({}, {"Authorization": f"Bearer {secured.keys['all']}"}):
            response = await secured.client.request(
                method, path, content=b"{}", headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "invalid_webhook"


async def test_permission_matrix(secured: Secured) -> None:
    world = World(secured)
    await world.seed()
    engine = await secured.engine()
    problems: list[str] = []
    cells = 0
    styles = itertools.cycle(("bearer", "x-server-api-key"))

    for endpoint in ENDPOINTS:
        label = f"{endpoint.method} {endpoint.path}"
        request = await endpoint.prepare(world)
        before = await table_rows(engine)

        refusals = [(name, 401) for name in UNAUTHORIZED]
        refusals += [(scope, 403) for scope in API_SCOPES if endpoint.scope not in (None, scope)]
        for name, expected in refusals:
            cells += 1
            for style in ("bearer", "x-server-api-key"):
                headers = _headers(_credential(secured, name), style)
                response = await _call(secured, endpoint.method, request, headers)
                if response.status_code != expected:
                    problems.append(
                        f"{label} [{name}, {style}]: {response.status_code} != {expected}"
                    )
                    continue
                problem = _refusal_problem(endpoint, expected, response.json())
                if problem:
                    problems.append(f"{label} [{name}]: {problem}")
        if await table_rows(engine) != before:
            problems.append(f"{label}: a refused call changed the database")

        allowed = [s for s in API_SCOPES if endpoint.scope in (None, s)] + list(FULL_KEYS)
        for name in allowed:
            cells += 1
            request = await endpoint.prepare(world)
            headers = _headers(secured.keys[name], next(styles))
            response = await _call(secured, endpoint.method, request, headers)
            if response.status_code != endpoint.success:
                problems.append(
                    f"{label} [{name}]: {response.status_code} != {endpoint.success}"
                    f" {response.text[:200]}"
                )

    assert not problems, f"{len(problems)} of {cells} cells wrong:\n" + "\n".join(problems)
    # Each endpoint: every refused credential, and every scope and full key once.
    assert cells == len(ENDPOINTS) * (len(UNAUTHORIZED) + len(API_SCOPES) + len(FULL_KEYS))
    audit = await secured.tokens.audit()
    assert audit.ok, audit


async def test_expired_key_is_refused_even_while_cached(secured: Secured) -> None:
    """Rotation's grace period ends on the clock, not when the key cache expires."""
    apps = secured.services.apps
    _, old = await apps.create_app("grace-app", scopes=["read"])
    new = await apps.rotate_key("grace-app", old_key_expires_in_seconds=30)
    headers = {"Authorization": f"Bearer {old}"}
    assert (await secured.client.get("/api/ping", headers=headers)).status_code == 200
    secured.clock.advance(29)
    assert (await secured.client.get("/api/ping", headers=headers)).status_code == 200
    secured.clock.advance(1)  # the grace period is over; the principal is still cached
    refused = await secured.client.get("/api/ping", headers=headers)
    assert refused.status_code == 401, refused.text
    assert refused.json() == {"error": "Invalid API key", "code": "unauthorized"}
    fresh = await secured.client.get("/api/ping", headers={"Authorization": f"Bearer {new}"})
    assert fresh.status_code == 200

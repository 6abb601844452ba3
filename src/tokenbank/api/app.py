"""The FastAPI application: ``create_app()`` is what ``tokenbank serve`` runs."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tokenbank.accounts.service import AccountService
from tokenbank.api.direct import DirectFirstAPI, install_direct_routes
from tokenbank.api.docs import install_docs
from tokenbank.api.handlers import install_error_handlers
from tokenbank.api.limits import RequestLimitsMiddleware
from tokenbank.api.observe import ObserveMiddleware, keep_metrics_fresh
from tokenbank.api.observe import router as metrics_router
from tokenbank.api.observe import stop as stop_task
from tokenbank.api.routes import costs, estimate, health, token_process, tokens, users
from tokenbank.api.state import Services
from tokenbank.apps import routes as apps_routes
from tokenbank.apps.rate_limits import RateLimiter
from tokenbank.apps.service import AppService, Principal
from tokenbank.clock import Clock, system_clock
from tokenbank.config import Settings, get_settings
from tokenbank.db.models import API_SCOPES
from tokenbank.events import routes as events_routes
from tokenbank.events.service import WebhookService, sync_alert_levels
from tokenbank.ledger import routes as ledger_routes
from tokenbank.ledger.service import TokenService
from tokenbank.metrics import JobTimer, mark_process_dead
from tokenbank.payments import recharge_routes
from tokenbank.payments import routes as payments_routes
from tokenbank.payments.service import PaymentService
from tokenbank.plans import routes as plans_routes
from tokenbank.plans.service import PlanService
from tokenbank.pricing import routes as pricing_routes
from tokenbank.pricing.service import PricingService
from tokenbank.process.service import TokenProcess
from tokenbank.renewals import routes as renewals_routes
from tokenbank.web.install import install_pages
from tokenbank.web.warm import warm_pages

logger = logging.getLogger("tokenbank.api")

DESCRIPTION = """
tokenbank keeps users' tokens for apps that sell metered work.

**Authentication**: every `/api` endpoint takes an app's API key as
`Authorization: Bearer <key>` or `x-server-api-key: <key>`. An app key may act on
any user (option C in docs/compatibility.md): the app is responsible for knowing its user.

**Dialects**: `/api/tokens/...`, `/api/users`, `/api/costs`, `/api/estimate` answer
`{"data": ...}` and errors `{"error": ...}` (Token Service dialect); `/api/token-process/...`
answers `{"success", "message", "data"}` and errors `{"success": false, "status",
"message"}` (Token Process dialect).

**Numbers**: whole-token fields take JSON integers only: `5.0`, `"5"` and `true` are
refused with 422 (JSON Schema's `integer` would allow `5.0`).

**Errors**: every route documents its error answers; while the database is unreachable
any of them may answer 503 `{"error": "Database unavailable: try again shortly",
"code": "database_unavailable"}`.

**Idempotency**: send `referenceId` (or `request_id` in dialect B) or an
`Idempotency-Key` header; a retry returns the first result, and the same key with a
different request is refused with 409.
"""


async def _sweep_holds(services: Services, interval_seconds: float) -> None:
    """``TokenService.sweep`` now and then; every worker may run it."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            with JobTimer("sweep_holds"):
                await services.tokens.sweep()
        except Exception:
            logger.exception("sweep failed; retrying next interval")


def create_server_app() -> FastAPI:
    """What ``tokenbank serve`` runs in each worker: ``create_app`` with a frozen heap.

    Once the service has started, what exists (modules, SQLAlchemy's compiled
    statements, the app) lives as long as the process, yet the cyclic garbage
    collector would walk it on every full collection: pauses measured as the
    tail of deduct latency (p99 95 ms, 45 ms frozen, same medians). Freezing moves
    it out of the collector's sight. Only for the server process: an embedding
    application owns its own heap.
    """
    return create_app(freeze_heap_after_start=True)


def create_app(
    settings: Settings | None = None,
    *,
    token_service: TokenService | None = None,
    clock: Clock = system_clock,
    freeze_heap_after_start: bool = False,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tokens = token_service or TokenService(settings=settings, clock=clock, auto_migrate=False)
        engine = await tokens.engine()
        env_principal = None
        if settings.api_key is not None:
            env_principal = Principal(app_slug=settings.api_key_app, scopes=frozenset(API_SCOPES))
        plans = PlanService(engine, clock=clock)
        pricing = PricingService(engine, settings=settings, clock=clock)
        services = Services(
            settings=settings,
            tokens=tokens,
            apps=AppService(engine, clock=clock),
            plans=plans,
            pricing=pricing,
            token_process=TokenProcess(tokens, plans, pricing),
            payments=PaymentService(tokens, pricing=pricing),
            accounts=AccountService(engine, settings=settings, clock=clock),
            webhooks=WebhookService(engine, clock=clock),
            env_principal=env_principal,
            rate_limiter=RateLimiter(engine, clock=clock),
        )
        # The balance alert levels the database's triggers read are the settings'.
        await sync_alert_levels(engine, settings, clock())
        app.state.services = services
        if freeze_heap_after_start:  # the engine exists (above): its heap is frozen too
            gc.collect()
            gc.freeze()
        warmer = asyncio.create_task(warm_pages(tokens))
        sweeper = None
        if settings.hold_sweep_interval_seconds > 0:
            sweeper = asyncio.create_task(
                _sweep_holds(services, settings.hold_sweep_interval_seconds)
            )
        metrics_folder = asyncio.create_task(keep_metrics_fresh(engine))
        try:
            yield
        finally:
            await stop_task(warmer)
            await stop_task(sweeper)
            await stop_task(metrics_folder)
            mark_process_dead(os.getpid())  # multi-process mode: this worker's gauges go
            await services.payments.aclose()
            if token_service is None:
                await tokens.close()

    app = DirectFirstAPI(
        # FastAPI's native OpenTelemetry looks up the global providers on every request
        # (2 us of a 20 us ping, measured); tokenbank's own metrics are Prometheus's
        # (/metrics) and its logs carry request ids.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="tokenbank",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: /docs is served
        # below from assets installed with tokenbank, and nothing loads from elsewhere.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_request_body_bytes)
    # Added last, so outermost: it times and counts the limits' refusals too.
    app.add_middleware(ObserveMiddleware, access_log=settings.access_log)
    for router in (
        tokens.router,  # the hottest routes first (matched in order)
        health.router,
        metrics_router,
        users.router,
        costs.router,
        estimate.router,
        token_process.router,
        plans_routes.router,
        ledger_routes.router,
        pricing_routes.router,
        renewals_routes.router,
        payments_routes.router,
        payments_routes.admin,
        recharge_routes.router,
        apps_routes.router,
        events_routes.router,
    ):
        app.include_router(router)
    # Before every other route: the hot routes without FastAPI's per-request work.
    install_direct_routes(app, health.DIRECT + tokens.DIRECT + token_process.DIRECT)
    # After the API's routes: a request is matched against the routes in order, and
    # the pages' (tens of them) would otherwise be tried before every API call.
    install_docs(app)
    install_pages(app)
    return app

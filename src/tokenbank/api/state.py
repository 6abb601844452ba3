"""What a running API process holds: the services, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from tokenbank.accounts.service import AccountService
from tokenbank.apps.rate_limits import RateLimiter
from tokenbank.apps.service import AppService, Principal
from tokenbank.config import Settings
from tokenbank.events.service import WebhookService
from tokenbank.ledger.service import TokenService
from tokenbank.payments.service import PaymentService
from tokenbank.plans.service import PlanService
from tokenbank.pricing.service import PricingService
from tokenbank.process.service import TokenProcess


@dataclass
class Services:
    settings: Settings
    tokens: TokenService
    apps: AppService
    # Plans, features, pricing and the Token Process dialect's token process (issue: HTTP service).
    plans: PlanService
    pricing: PricingService
    token_process: TokenProcess
    # Stripe: packs, checkout, the webhook, auto-recharge (issue 12, decision 14).
    payments: PaymentService
    # People: accounts, sessions and the admin audit log (issue 13, decision 17).
    accounts: AccountService
    # Webhook endpoints and their deliveries (issue 14, decision 15).
    webhooks: WebhookService
    # The principal of TOKENBANK_API_KEY, when a single-app deployment sets one.
    env_principal: Principal | None = None
    # Per-key request rates, counted in the database (issue 14).
    rate_limiter: RateLimiter | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_tokens(request: Request) -> TokenService:
    return get_services(request).tokens

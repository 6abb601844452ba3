"""Errors of payments; each knows its HTTP status and its code.

TokenBankError
├── PaymentsNotConfigured  no Stripe secret key (or webhook secret) is set (503)
├── PaymentProviderError   Stripe refused or could not be reached (502)
├── BadWebhook             a webhook whose signature, timestamp or body is wrong (400)
├── SaleMismatch           an event whose amount or currency is not what was sold (400)
├── NotFound (404)
│   ├── PackNotFound, PurchaseNotFound, CustomerWalletNotFound
└── Conflict (409)
    └── PackExists
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound, TokenBankError


class PaymentsNotConfigured(TokenBankError):
    status_code = 503
    code = "payments_not_configured"


class PaymentProviderError(TokenBankError):
    status_code = 502
    code = "payment_provider_error"


class BadWebhook(TokenBankError):
    status_code = 400
    code = "invalid_webhook"


class SaleMismatch(TokenBankError):
    status_code = 400
    code = "sale_mismatch"


class PackNotFound(NotFound):
    code = "pack_not_found"


class PurchaseNotFound(NotFound):
    code = "purchase_not_found"


class CustomerWalletNotFound(NotFound):
    code = "user_not_found"


class PackExists(Conflict):
    code = "pack_exists"

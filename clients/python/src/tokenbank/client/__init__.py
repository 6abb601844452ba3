"""The tokenbank SDK: what an app imports to bill its users through tokenbank.

It needs ``httpx`` and the standard library only: nothing here imports the server
(SQLAlchemy, FastAPI, ...). The FastAPI integration is ``tokenbank.client.fastapi``
and the plain ASGI middleware ``tokenbank.client.asgi``; import them explicitly.

::

    from tokenbank.client import TokenClient

    with TokenClient() as tokens:   # TOKEN_SERVICE_URL, TOKEN_SERVICE_API_KEY
        with tokens.charge("alice", 5, description="Image generation"):
            make_image()            # raises? the 5 tokens are refunded
"""

from types import FunctionType as _FunctionType

from tokenbank.client._async.client import AsyncReservation, AsyncTokenClient
from tokenbank.client._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT
from tokenbank.client._decorator import with_token_process
from tokenbank.client._errors import (
    ConflictError,
    ForbiddenError,
    InsufficientTokensError,
    InvalidRequestError,
    InvalidTokenError,
    NotFoundError,
    RateLimitedError,
    SpendCapExceededError,
    TokenServiceError,
    UnauthorizedError,
    UnavailableError,
)
from tokenbank.client._jwt import user_id_from_jwt, verify_jwt
from tokenbank.client._models import (
    Balance,
    Charge,
    Cost,
    Estimate,
    Grant,
    Hold,
    LedgerEntry,
    ProcessEnd,
    ProcessStart,
    Receipt,
    Stats,
    Wallet,
)
from tokenbank.client._process import TokenProcess, UnsettledUsage
from tokenbank.client._retry import DEFAULT_RETRY_POLICY, NO_RETRIES, RetryPolicy
from tokenbank.client._sync.client import Reservation, TokenClient
from tokenbank.client._webhooks import Event, InvalidWebhookError, verify_webhook

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "NO_RETRIES",
    "AsyncReservation",
    "AsyncTokenClient",
    "Balance",
    "Charge",
    "ConflictError",
    "Cost",
    "Estimate",
    "Event",
    "ForbiddenError",
    "Grant",
    "Hold",
    "InsufficientTokensError",
    "InvalidRequestError",
    "InvalidTokenError",
    "InvalidWebhookError",
    "LedgerEntry",
    "NotFoundError",
    "ProcessEnd",
    "ProcessStart",
    "RateLimitedError",
    "Receipt",
    "Reservation",
    "RetryPolicy",
    "SpendCapExceededError",
    "Stats",
    "TokenClient",
    "TokenProcess",
    "TokenServiceError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsettledUsage",
    "Wallet",
    "user_id_from_jwt",
    "verify_jwt",
    "verify_webhook",
    "with_token_process",
]

# Public names say they come from here, not from the private module that defines them
# (as httpx does), so reprs, tracebacks and docs show ``tokenbank.client.X``.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type | _FunctionType):
        _value.__module__ = __name__
del _name, _value

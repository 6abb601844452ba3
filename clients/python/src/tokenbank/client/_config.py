"""Named defaults of the SDK, and where its settings come from.

Every limit is a named constant here (timeouts, connection pool, retries, key
lengths), so that a reader finds them in one place and an app can pass its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

# Timeouts: a token check sits in front of the app's own work, so it must fail fast.
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_TIMEOUT_SECONDS, connect=DEFAULT_CONNECT_TIMEOUT_SECONDS)

# Connection pool, per client.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_KEEPALIVE_CONNECTIONS = 20
DEFAULT_KEEPALIVE_EXPIRY_SECONDS = 30.0
DEFAULT_LIMITS = httpx.Limits(
    max_connections=DEFAULT_MAX_CONNECTIONS,
    max_keepalive_connections=DEFAULT_MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY_SECONDS,
)

# The server refuses idempotency keys longer than this (TOKENBANK's own limit).
MAX_IDEMPOTENCY_KEY_LENGTH = 255

# The environment variables of the seed documents, in order of preference:
# the Token Service dialect (Token Service) first, then the Token Process dialect (Token Process).
URL_VARIABLES = ("TOKEN_SERVICE_URL", "TOKEN_SERVER_URL")
API_KEY_VARIABLES = ("TOKEN_SERVICE_API_KEY", "SERVER_API_KEY")
# The secret an app verifies tokenbank-issued JWTs with: the Token Service dialect calls it
# PLATFORM_JWT_SECRET; an app on the same host as tokenbank may share its variable.
JWT_SECRET_VARIABLES = ("PLATFORM_JWT_SECRET", "TOKENBANK_JWT_SECRET")

USER_AGENT = "tokenbank-client/0.1"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the token service is and the key that opens it."""

    base_url: str
    api_key: str


def first_set(names: tuple[str, ...], environ: Mapping[str, str]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_connection(
    base_url: str | None, api_key: str | None, environ: Mapping[str, str] | None = None
) -> Connection:
    """Arguments win; otherwise the seed documents' environment variables."""
    environ = os.environ if environ is None else environ
    url = base_url or first_set(URL_VARIABLES, environ)
    key = api_key or first_set(API_KEY_VARIABLES, environ)
    if not url:
        raise ValueError(
            "no token service URL: pass base_url or set TOKEN_SERVICE_URL (or TOKEN_SERVER_URL)"
        )
    if not key:
        raise ValueError(
            "no token service API key: pass api_key or set TOKEN_SERVICE_API_KEY"
            " (or SERVER_API_KEY)"
        )
    return Connection(base_url=url.rstrip("/"), api_key=key)


def resolve_jwt_secret(secret: str | bytes | None) -> bytes:
    if secret is None:
        secret = first_set(JWT_SECRET_VARIABLES, os.environ)
    if not secret:
        raise ValueError(
            "no JWT secret: pass secret or set PLATFORM_JWT_SECRET (or TOKENBANK_JWT_SECRET)"
        )
    return secret.encode() if isinstance(secret, str) else secret

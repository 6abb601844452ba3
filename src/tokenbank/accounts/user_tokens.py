"""User JWTs (option B): what ``tokenbank users token`` and ``POST /auth/token`` mint,
in one shape, with one rule for the signing key (decision 17)."""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt
from pydantic import SecretStr

# HS256 wants a key at least as long as its 256-bit hash.
MIN_JWT_SECRET_BYTES = 32
JWT_ISSUER = "tokenbank"


def usable_key(secret: SecretStr | None) -> str | None:
    """TOKENBANK_JWT_SECRET's value, or None when it is unset or too short for HS256."""
    if secret is None:
        return None
    key = secret.get_secret_value()
    return key if len(key.encode()) >= MIN_JWT_SECRET_BYTES else None


def mint(
    key: str,
    user_id: str,
    *,
    issued_at: datetime,
    lifetime_seconds: int,
    email: str | None = None,
) -> str:
    """An HS256 JWT for the user (``sub``), which the SDK's ``verify_jwt`` accepts."""
    claims: dict[str, object] = {
        "sub": user_id,
        "iss": JWT_ISSUER,
        "iat": issued_at,
        "exp": issued_at + timedelta(seconds=lifetime_seconds),
    }
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, key, algorithm="HS256")

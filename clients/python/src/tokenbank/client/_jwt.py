"""Verify a tokenbank-issued user JWT (option B in docs/compatibility.md) with the standard library.

tokenbank signs short-lived HS256 tokens (``tokenbank users token USER_ID``) whose
``sub`` is the user id. An app holding the same secret verifies them without calling
tokenbank. Only what that needs is implemented, strictly:

- the header's ``alg`` must be ``HS256`` (never ``none``, never another algorithm);
- the signature is compared in constant time;
- ``exp`` is required and must be in the future, ``nbf`` (when present) in the past,
  both allowing ``leeway_seconds`` of clock skew;
- ``sub`` is required: a non-empty string, the user id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from typing import Any

from tokenbank.client._config import resolve_jwt_secret
from tokenbank.client._errors import InvalidTokenError

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 8_192  # bounds the work an attacker's token can cause
DEFAULT_LEEWAY_SECONDS = 30.0
SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _decode_segment(segment: str) -> bytes:
    if not SEGMENT.fullmatch(segment):
        raise InvalidTokenError("malformed token")
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        raise InvalidTokenError("malformed token") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidTokenError("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidTokenError("malformed token")
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTokenError(f"the {name} claim is not a number")
    return float(value)


def _check_signature(token: str, key: bytes) -> tuple[str, str]:
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidTokenError("malformed token")
    header_segment, payload_segment, signature_segment = token.split(".")
    header = _json_object(_decode_segment(header_segment))
    if header.get("alg") != ALGORITHM:
        raise InvalidTokenError(f"the token's algorithm is not {ALGORITHM}")
    if not SEGMENT.fullmatch(payload_segment):
        raise InvalidTokenError("malformed token")
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    expected = hmac.new(key, signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _decode_segment(signature_segment)):
        raise InvalidTokenError("bad signature")
    return header_segment, payload_segment


def _check_times(claims: dict[str, Any], now: float, leeway_seconds: float) -> None:
    expires_at = _number(claims, "exp")
    if expires_at is None:
        raise InvalidTokenError("the token has no exp claim")
    if now >= expires_at + leeway_seconds:
        raise InvalidTokenError("the token has expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now < not_before - leeway_seconds:
        raise InvalidTokenError("the token is not valid yet")


def verify_jwt(
    token: str,
    secret: str | bytes | None = None,
    *,
    leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a valid HS256 token; :class:`InvalidTokenError` otherwise.

    ``secret`` defaults to ``PLATFORM_JWT_SECRET`` (or ``TOKENBANK_JWT_SECRET``).
    The signature is checked before anything in the payload is read.
    """
    key = resolve_jwt_secret(secret)
    _, payload_segment = _check_signature(token, key)
    claims = _json_object(_decode_segment(payload_segment))
    _check_times(claims, time.time() if now is None else now, leeway_seconds)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidTokenError("the token has no sub claim (the user id)")
    return claims


def user_id_from_jwt(token: str, secret: str | bytes | None = None) -> str:
    """The user id (``sub``) of a valid tokenbank-issued token."""
    return str(verify_jwt(token, secret)["sub"])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None

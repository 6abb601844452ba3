"""Verify a webhook tokenbank delivered, and read its event, with the standard library.

tokenbank signs each delivery per the Standard Webhooks specification
(https://www.standardwebhooks.com): the headers ``webhook-id`` (the event's stable
id: dedupe on it, a delivery may come more than once), ``webhook-timestamp`` (Unix
seconds) and ``webhook-signature`` (space-separated ``v1,<base64>`` signatures), each
``v1`` being HMAC-SHA256, keyed with the base64 after ``whsec_`` in the endpoint's
secret, of ``{id}.{timestamp}.{body}``. Implemented here rather than through the
``standardwebhooks`` package so that the SDK keeps needing httpx only; the tests
check both agree.

::

    from tokenbank.client import verify_webhook

    event = verify_webhook(await request.body(), request.headers, secret)
    if event.type == "balance.low": ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
DEFAULT_TOLERANCE_SECONDS = 300.0  # the specification's five minutes
MAX_PAYLOAD_BYTES = 1_048_576


class InvalidWebhookError(ValueError):
    """The delivery is not tokenbank's: a header is missing, the signature does not
    match, or its timestamp is too far from now. Answer 400 and keep nothing."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its stable ``id``, its ``type``, when it happened, and its data."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not whsec_ followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise InvalidWebhookError(f"missing {name} header")


def _check_timestamp(value: str, tolerance_seconds: float, now: float) -> None:
    try:
        sent = int(value)
    except ValueError:
        raise InvalidWebhookError("webhook-timestamp is not a number") from None
    if abs(now - sent) > tolerance_seconds:
        raise InvalidWebhookError("webhook-timestamp is too far from now")


def _check_signature(
    key: bytes, message_id: str, timestamp: str, payload: bytes, header: str
) -> None:
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + payload
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in header.split():
        version, _, signature = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return
    raise InvalidWebhookError("no matching signature")


def _event(message_id: str, payload: bytes) -> Event:
    try:
        body = json.loads(payload)
        timestamp = datetime.fromisoformat(str(body["timestamp"]).replace("Z", "+00:00"))
        return Event(
            id=message_id, type=str(body["type"]), timestamp=timestamp, data=dict(body["data"])
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidWebhookError("the payload is not a tokenbank event") from None


def verify_webhook(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Event:
    """Check a delivery's signature (on the raw body, before any parsing) and the age
    of its timestamp, then parse its event. Raises :class:`InvalidWebhookError`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidWebhookError("the payload is too large")
    message_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    _check_timestamp(timestamp, tolerance_seconds, time.time() if now is None else now)
    _check_signature(_key(secret), message_id, timestamp, payload, signatures)
    return _event(message_id, payload)

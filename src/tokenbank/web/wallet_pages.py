"""What the signed-in user's pages share: their reads of the ledger, the page for an
account without a wallet, and the checks of their forms' fields.

A form's field is parsed here, before any service is called, into a value or an
``InvalidInput`` whose message a person can act on; the page shows it with a 400
and nothing is written (decision 11)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from fastapi import Request
from fastapi.responses import HTMLResponse

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.errors import InvalidInput
from tokenbank.ledger.pages import UserPages
from tokenbank.web.templating import page

MAX_FIELD_LENGTH = 64
MAX_PAGE_NUMBER = 10_000
WHOLE_NUMBER = re.compile(r"^\d{1,15}$")
DOLLARS = re.compile(r"^\$?\s*(\d{1,9}(?:,\d{3})*|\d{1,12})(?:\.(\d{1,2}))?$")
# What a person calls each field a service may refuse.
FIELD_NAMES = {
    "operation_type": "Type",
    "first_day": "From",
    "last_day": "To",
    "packId": "Pack",
    "amountCents": "Amount",
    "thresholdTokens": "Threshold",
    "paymentMethodId": "Card",
}


def reads(request: Request) -> UserPages:
    """The process's UserPages (one per app: it keeps what settled usage adds up to)."""
    tokens = get_services(request).tokens
    found: UserPages | None = getattr(request.app.state, "user_pages", None)
    if found is None or found.tokens is not tokens:
        found = UserPages(tokens)
        request.app.state.user_pages = found
    return found


def no_wallet(request: Request, signed_in: SignedIn, *, status_code: int = 200) -> HTMLResponse:
    """An account that owns no wallet (an admin's) has no tokens to show."""
    return page(
        request,
        "message.html",
        signed_in,
        status_code=status_code,
        title="No token wallet",
        message="This account has no token wallet of its own: it administers tokenbank."
        " Sign in with a user's account to buy and spend tokens.",
        back="/admin/tokens" if signed_in.is_admin else "/login",
    )


def refusal_text(error: InvalidInput) -> str:
    name = FIELD_NAMES.get(error.field, error.field)
    return f"{name}: {error.message}"


def _text(value: str, field: str) -> str:
    text = value.strip()
    if len(text) > MAX_FIELD_LENGTH:
        raise InvalidInput(field, f"at most {MAX_FIELD_LENGTH} characters")
    return text


def parse_day(value: str | None, field: str) -> date | None:
    """A date field (``<input type=date>`` sends YYYY-MM-DD); empty: none."""
    text = _text(value or "", field)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, "a date as YYYY-MM-DD") from None


def parse_page(value: str | None) -> int:
    text = _text(value or "", "page")
    if not text:
        return 1
    if not WHOLE_NUMBER.match(text) or not 1 <= int(text) <= MAX_PAGE_NUMBER:
        raise InvalidInput("page", f"a page number from 1 to {MAX_PAGE_NUMBER:,}")
    return int(text)


def parse_tokens(value: str, field: str) -> int:
    """A whole number of tokens, as typed (``1,000`` and ``1000`` alike)."""
    text = _text(value, field).replace(",", "").replace("_", "")
    if not WHOLE_NUMBER.match(text):
        raise InvalidInput(field, "a whole number of tokens")
    return int(text)


def parse_dollars(value: str, minimum_cents: int) -> int:
    """An amount in dollars (``12``, ``12.5``, ``$1,250.00``) as cents, at least the
    minimum purchase."""
    text = _text(value, "amountCents")
    match = DOLLARS.match(text)
    if match is None:
        raise InvalidInput("amountCents", "an amount in dollars, such as 25 or 12.50")
    try:
        cents = int(Decimal(text.lstrip("$").strip().replace(",", "")) * 100)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise InvalidInput("amountCents", "an amount in dollars") from None
    if cents < minimum_cents:
        raise InvalidInput(
            "amountCents",
            f"the smallest purchase is ${minimum_cents // 100}.{minimum_cents % 100:02d}",
        )
    return cents

"""Reading the admin pages' forms and query strings: every field arrives as text and
leaves as the value a service takes, or as ``InvalidInput`` naming the field, so that
a page answers 400 with the form again and nothing is written (decision 11).

Fields are read by hand rather than as FastAPI ``Form``/``Query`` parameters: a
parameter's own check would answer FastAPI's JSON 422, and a person at a form needs
the page back with the field named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from fastapi import Request

from tokenbank.config import MAX_AMOUNT_TOKENS
from tokenbank.db.models import WALLET_STATUSES
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository.admin_stats import WalletFilter
from tokenbank.validation import validate_text

Fields = Mapping[str, str]

MAX_PAGE = 100_000
MAX_SEARCH_LENGTH = 254
WHOLE_NUMBER = re.compile(r"^-?\d{1,15}$")
# A price as people type it: 15, 15.5 or 15.00 (never more than cents).
PRICE = re.compile(r"^\d{1,9}(\.\d{1,2})?$")


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields (a file field, never expected, is left out)."""
    form = await request.form()
    return {name: value for name, value in form.multi_items() if isinstance(value, str)}


def text(fields: Fields, name: str, *, max_length: int, required: bool = False) -> str | None:
    """A text field, stripped; an empty optional field is None."""
    value = fields.get(name, "").strip()
    if not value and not required:
        return None
    validate_text(value, field_name=name, max_length=max_length, required=required)
    return value


def required_text(fields: Fields, name: str, *, max_length: int) -> str:
    value = text(fields, name, max_length=max_length, required=True)
    assert value is not None  # a required field is never None
    return value


def whole_number(
    fields: Fields, name: str, *, low: int = 0, high: int = MAX_AMOUNT_TOKENS
) -> int | None:
    """A whole number within [low, high]; an empty field is None. Commas and spaces that
    people type in large numbers are allowed ("1,000")."""
    raw = fields.get(name, "").strip().replace(",", "").replace("_", "").replace(" ", "")
    if not raw:
        return None
    if not WHOLE_NUMBER.match(raw) or not low <= int(raw) <= high:
        raise InvalidInput(name, f"a whole number from {low:,} to {high:,}")
    return int(raw)


def required_number(
    fields: Fields, name: str, *, low: int = 0, high: int = MAX_AMOUNT_TOKENS
) -> int:
    value = whole_number(fields, name, low=low, high=high)
    if value is None:
        raise InvalidInput(name, f"a whole number from {low:,} to {high:,} is required")
    return value


def price_cents(fields: Fields, name: str) -> int:
    """A price in the currency's main unit ("15", "15.50") as whole cents, exactly."""
    raw = fields.get(name, "").strip()
    if not PRICE.match(raw):
        raise InvalidInput(name, "a price such as 15 or 15.50")
    try:
        cents = Decimal(raw) * 100
    except InvalidOperation:  # the pattern lets none through; a guard, not a path
        raise InvalidInput(name, "a price such as 15 or 15.50") from None
    return int(cents)


def checkbox(fields: Fields, name: str) -> bool:
    """An HTML checkbox: present when ticked, absent otherwise."""
    return name in fields


def page_number(value: str | None) -> int:
    """A list's page, 1 when not given."""
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidInput("page", f"a page number from 1 to {MAX_PAGE:,}")
    return int(value)


def wallet_filter(query: Fields) -> WalletFilter:
    """The wallets list's filters from its query string (empty fields: no filter)."""
    status = query.get("status") or None
    if status is not None and status not in WALLET_STATUSES:
        raise InvalidInput("status", f"one of {', '.join(WALLET_STATUSES)}")
    plan = text(query, "plan", max_length=64)
    low = whole_number(query, "min_balance", low=-MAX_AMOUNT_TOKENS)
    high = whole_number(query, "max_balance", low=-MAX_AMOUNT_TOKENS)
    if low is not None and high is not None and low > high:
        raise InvalidInput("min_balance", "must not be above the maximum balance")
    search = text(query, "q", max_length=MAX_SEARCH_LENGTH)
    return WalletFilter(status=status, plan=plan, min_balance=low, max_balance=high, search=search)


def filter_query(chosen: WalletFilter) -> dict[str, str]:
    """The filters as query-string fields, for the pager's links."""
    pairs = {
        "status": chosen.status,
        "plan": chosen.plan,
        "min_balance": chosen.min_balance,
        "max_balance": chosen.max_balance,
        "q": chosen.search,
    }
    return {name: str(value) for name, value in pairs.items() if value is not None}

"""Decimal numbers for prices: parsed strictly, computed in one exact context.

Rates, ratios, multipliers and profit percentages are ``decimal.Decimal`` from the
wire to the ledger. A JSON float is refused rather than converted: ``0.1`` as a
binary float is not one tenth, and no such error may enter a price. Give decimals as
strings (``"0.1"``) or whole numbers.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

from tokenbank.errors import InvalidInput

# Enough digits that no product of bounded inputs is ever rounded: units are at most
# 10**12, rates at most 10**6 with 12 places, multipliers and percentages likewise.
PRICING_PRECISION_DIGITS = 80
# Intermediate results that cannot be exact (a ratio of 3) are rounded *up*, so the
# final ceiling can never under-charge.
PRICING_CONTEXT = Context(
    prec=PRICING_PRECISION_DIGITS,
    rounding=ROUND_CEILING,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
MAX_DECIMAL_TEXT_LENGTH = 32  # the width of the String(32) columns that store them
MAX_DECIMAL_PLACES = 12


def parse_decimal(
    value: object,
    *,
    field_name: str,
    minimum: Decimal,
    maximum: Decimal,
    allow_minimum: bool = True,
) -> Decimal:
    """A whole number or a decimal string, within bounds; anything else is InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise InvalidInput(
            field_name, 'must be a whole number or a decimal string such as "1.5" (not a float)'
        )
    text = str(value).strip()
    if not text or len(text) > MAX_DECIMAL_TEXT_LENGTH:
        raise InvalidInput(field_name, f"must be 1 to {MAX_DECIMAL_TEXT_LENGTH} characters")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(field_name, f"{text!r} is not a decimal number") from None
    if not number.is_finite():
        raise InvalidInput(field_name, "must be a finite number")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise InvalidInput(field_name, f"must have at most {MAX_DECIMAL_PLACES} decimal places")
    too_low = number < minimum or (number == minimum and not allow_minimum)
    if too_low or number > maximum:
        low = "at least" if allow_minimum else "more than"
        raise InvalidInput(field_name, f"must be {low} {minimum} and at most {maximum}")
    return number


def decimal_text(value: Decimal) -> str:
    """A decimal as plain text without exponent or trailing zeros: ``12.5``, ``3``."""
    if value == value.to_integral_value(context=PRICING_CONTEXT):
        return str(value.quantize(Decimal(1), context=PRICING_CONTEXT))
    return format(value.normalize(context=PRICING_CONTEXT), "f")

"""Operation types, and which system account is the other side of each.

System accounts have no balance row (that row would serialise all traffic); their
balances are derived by summing their entries.
"""

from __future__ import annotations

from typing import Final

TOKENS_SOLD: Final = "tokens_sold"
TOKENS_GRANTED: Final = "tokens_granted"
TOKENS_CONSUMED: Final = "tokens_consumed"
TOKENS_EXPIRED: Final = "tokens_expired"
TOKENS_CLAWED_BACK: Final = "tokens_clawed_back"

# Credits add tokens to a wallet; the source decides the system account.
CREDIT_SOURCES: Final[dict[str, str]] = {
    "purchase": TOKENS_SOLD,
    "auto_recharge": TOKENS_SOLD,
    "bonus": TOKENS_GRANTED,
    "admin_grant": TOKENS_GRANTED,
    "renewal": TOKENS_GRANTED,
}
CREDIT_OPERATION_TYPES: Final = frozenset(CREDIT_SOURCES)

# The operation type of a debit that is not priced from the cost table.
USAGE: Final = "usage"
REFUND: Final = "refund"
# Expired grants leave the wallet as transactions of this kind and operation type.
EXPIRY: Final = "expiry"
# What is left of a refunded or disputed purchase leaves as a transaction of this kind
# and operation type, towards TOKENS_CLAWED_BACK (decision 13).
CLAWBACK: Final = "clawback"
RESERVED_OPERATION_TYPES: Final = frozenset({*CREDIT_OPERATION_TYPES, REFUND, EXPIRY, CLAWBACK})


def credit_source_account(operation_type: str) -> str:
    return CREDIT_SOURCES[operation_type]

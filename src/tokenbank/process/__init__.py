"""The token process: start and end of a metered feature (the Token Process dialect).

A flow above the domains it uses: it asks plans whether the user may use the feature,
pricing what the usage costs, and the ledger to hold, capture and refund the tokens.
"""

from tokenbank.process.errors import HoldAlreadySettled, HoldNotFound
from tokenbank.process.service import EndOutcome, StartOutcome, TokenProcess

__all__ = ["EndOutcome", "HoldAlreadySettled", "HoldNotFound", "StartOutcome", "TokenProcess"]

"""The ledger: the only code that writes balances, entries and holds."""

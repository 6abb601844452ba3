"""People: accounts, passwords, sessions and sign-in limits (decision 17)."""

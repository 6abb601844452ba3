"""Money in: token packs, purchases through Stripe, its webhook, auto-recharge (decision 14)."""

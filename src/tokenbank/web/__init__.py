"""The pages people open: sign-in, their tokens, billing, the admin dashboard (decision 17)."""

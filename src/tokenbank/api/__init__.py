"""The HTTP API: dialect A (seed 000), dialect B (seed 001), users, admin."""

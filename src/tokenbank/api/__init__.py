"""The HTTP API: the Token Service dialect, the Token Process dialect, users, admin."""

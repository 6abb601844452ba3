"""Helpers for tests and benchmarks: a throwaway PostgreSQL server.

`tokenbank.testing.postgres.PostgresServer` is what the test suite (tests/), the
crash test (tests/reliability/crash.py) and the benchmark harness (bench/) start.
"""

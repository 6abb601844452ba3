"""The short crash test over a larger deployment (issue 6): two `tokenbank serve` and
two `tokenbank jobs run` over one database, any of them SIGKILLed under load.

Its own file, apart from tests/reliability/test_crash.py, so that `make test`'s two
processes (pytest-xdist, one file each at a time) run the two long crash tests side
by side. `make crash-many` runs the long variant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.test_crash import CLIENTS, KILLS, SECONDS, run_harness


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_two_servers_and_two_job_workers_over_one_database(engine: str, tmp_path: Path) -> None:
    """The same, with the processes of a larger deployment sharing one database:
    kills of either server or either jobs worker, renewals, expiries, auto-recharges
    and webhook deliveries raced by both workers (docs/operations.md, "Several
    processes"). On SQLite the processes also take turns for its one write lock."""
    options = [
        "--servers", "2", "--job-workers", "2", "--recharges", "4", "--webhooks",
        "--clients", str(CLIENTS), "--kills", str(KILLS // 2), "--seconds", str(SECONDS * 2),
    ]  # fmt: skip
    report, _output = run_harness(engine, options, tmp_path, timeout_seconds=900)
    assert report["tokens_created_or_lost"] == 0
    assert report["unresolved"] == 0
    assert report["renewals"] == 20  # crash.py's USERS, each once however many workers raced
    assert report["grants_expired"] > 0  # the workers did expire grants
    assert report["recharge_purchases_paid"] > 0  # and charge auto-recharges
    assert report["kills"] >= KILLS // 2
    # Every event reached the receiver (crash_webhooks.py checks each id), some only
    # after a refused first try.
    hooks = report["webhooks"]
    assert hooks["events"] > 0
    assert hooks["delivered"] == hooks["events"]
    assert hooks["refused_first_tries"] > 0
    assert hooks["duplicates"]["unexplained"] == 0

"""The crash test's webhook receiver and checks (crash_webhooks.py), on their own: the
receiver verifies signatures and refuses the first try of every fifth id, and the
checks catch a lost, unknown, oversent or unexplained duplicate delivery."""

from __future__ import annotations

import base64
import os
from collections import Counter
from datetime import UTC, datetime

import httpx

from tests.reliability.crash_webhooks import (
    Delivery,
    Receiver,
    RunningReceiver,
    check_causes,
    check_deliveries,
    fails_first_try,
)
from tokenbank.events.delivery import envelope, signed_headers


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def send(url: str, secret: str, event_id: str) -> int:
    body = envelope(event_id, "balance.low", datetime.now(UTC), {"userId": "kim"})
    headers = signed_headers(secret, event_id, body, datetime.now(UTC))
    with httpx.Client(trust_env=False) as client:
        return client.post(url, content=body.encode(), headers=headers).status_code


def ids(count: int, failing: bool) -> list[str]:
    """``count`` event ids whose first try the receiver refuses (or not)."""
    found: list[str] = []
    number = 0
    while len(found) < count:
        event_id = f"evt_{number:032x}"
        if fails_first_try(event_id) == failing:
            found.append(event_id)
        number += 1
    return found


def test_the_receiver_verifies_each_signature_and_refuses_some_first_tries() -> None:
    running = RunningReceiver().start()
    try:
        running.receiver.secret = new_secret()
        [plain], [refused] = ids(1, failing=False), ids(1, failing=True)
        assert send(running.url, running.receiver.secret, plain) == 204
        assert send(running.url, running.receiver.secret, refused) == 500
        assert send(running.url, running.receiver.secret, refused) == 204
        assert send(running.url, new_secret(), plain) == 400  # another endpoint's secret
    finally:
        running.stop()
    receiver = running.receiver
    assert receiver.accepted == Counter({plain: 1, refused: 1})
    assert receiver.tries == Counter({plain: 1, refused: 2})
    assert receiver.refused == 1
    assert len(receiver.bad_signatures) == 1


def delivered(claims: int = 1, recorded: int = 1, unanswered: int = 0) -> Delivery:
    return Delivery("delivered", claims, recorded, unanswered, lag_seconds=0.5)


def seen(*accepted: str) -> Receiver:
    receiver = Receiver()
    receiver.accepted.update(accepted)
    receiver.tries.update(accepted)
    return receiver


def test_a_clean_run_passes_and_is_counted() -> None:
    violations: list[str] = []
    events = {"evt_a": "balance.low", "evt_b": "hold.expired"}
    figures = check_deliveries(
        events, {"evt_a": delivered(), "evt_b": delivered()}, seen("evt_a", "evt_b"), 0, violations
    )
    assert violations == []
    assert figures["events"] == figures["delivered"] == 2
    assert figures["duplicates"] == {"ids": 0, "unexplained": 0}


def test_a_duplicate_is_explained_only_by_a_killed_worker_or_a_timeout() -> None:
    events = {"evt_a": "balance.low"}
    lost_claim = {"evt_a": delivered(claims=2, recorded=1)}
    twice = seen("evt_a", "evt_a")
    violations: list[str] = []
    figures = check_deliveries(events, lost_claim, twice, 1, violations)
    assert violations == []
    assert figures["duplicates"]["after_a_killed_worker"] == 1
    assert figures["lost_claims"] == 1
    check_deliveries(events, lost_claim, twice, 0, violations)  # no worker was killed
    assert len(violations) == 1
    assert "more than once" in violations[0]
    timed_out = {"evt_a": delivered(claims=2, recorded=2, unanswered=1)}
    violations.clear()
    check_deliveries(events, timed_out, twice, 0, violations)
    assert violations == []
    check_deliveries(events, {"evt_a": delivered(claims=2, recorded=2)}, twice, 1, violations)
    assert len(violations) == 1


def test_lost_unknown_oversent_and_forged_deliveries_are_violations() -> None:
    events = {"evt_a": "balance.low", "evt_b": "hold.expired"}
    cases = [
        ({"evt_a": delivered()}, seen("evt_a", "evt_b")),  # evt_b has no delivery row
        ({"evt_a": delivered(), "evt_b": delivered()}, seen("evt_a")),  # evt_b never came
        ({"evt_a": delivered(), "evt_b": delivered()}, seen("evt_a", "evt_b", "evt_x")),
        (
            {"evt_a": delivered(), "evt_b": Delivery("delivered", 1, 1, 0, 0.5, rows=2)},
            seen("evt_a", "evt_b"),
        ),  # evt_b has two delivery rows
    ]
    for deliveries, receiver in cases:
        violations: list[str] = []
        check_deliveries(events, deliveries, receiver, 1, violations)
        assert len(violations) == 1, violations
    oversent = seen("evt_a", "evt_b")
    oversent.tries["evt_a"] += 1  # sent twice under one claim
    violations = []
    check_deliveries(events, {"evt_a": delivered(), "evt_b": delivered()}, oversent, 1, violations)
    assert any("more often than claimed" in v for v in violations)
    forged = seen("evt_a", "evt_b")
    forged.bad_signatures.append("evt_a: no matching signature")
    violations = []
    check_deliveries(events, {"evt_a": delivered(), "evt_b": delivered()}, forged, 1, violations)
    assert violations == ["1 bad signatures: ['evt_a: no matching signature']"]


def test_each_once_only_job_makes_one_event() -> None:
    events = {"evt_a": "renewal.completed", "evt_b": "grant.expired", "evt_c": "grant.expired"}
    violations: list[str] = []
    check_causes(events, {"renewal.completed": 1, "grant.expired": 2}, violations)
    assert violations == []
    check_causes(events, {"renewal.completed": 2, "grant.expired": 1}, violations)
    assert violations == [
        "1 renewal.completed events for 2 rows that cause one",
        "2 grant.expired events for 1 rows that cause one",
    ]

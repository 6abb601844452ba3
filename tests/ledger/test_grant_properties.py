"""Which grant a token comes from, against a plain model (decision 13).

Hypothesis draws sequences of credits (any category, priority and expiry), debits,
clock moves and sweeps; after every step each grant's remainder must be what the model
says: expired tokens leave before a spend, a spend takes from the live grants in the
consumption order, and a refused spend takes nothing. Both engines, both write paths.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings

# Per engine and write path; TOKENBANK_GRANT_EXAMPLES for a long run.
EXAMPLES = int(os.environ.get("TOKENBANK_GRANT_EXAMPLES", "40"))


@dataclass
class ModelGrant:
    id: int
    category: str
    priority: int
    expires_at: datetime | None
    remaining: int

    def order(self) -> tuple[int, bool, datetime | None, bool, int]:
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at,
            self.category == "paid",
            self.id,
        )


class Model:
    def __init__(self) -> None:
        self.grants: dict[int, ModelGrant] = {}

    def balance(self) -> int:
        return sum(grant.remaining for grant in self.grants.values())

    def expire(self, now: datetime) -> None:
        for grant in self.grants.values():
            if grant.expires_at is not None and grant.expires_at <= now:
                grant.remaining = 0

    def debit(self, amount: int, now: datetime) -> bool:
        self.expire(now)
        if amount > self.balance():
            return False
        for grant in sorted(self.grants.values(), key=ModelGrant.order):
            take = min(grant.remaining, amount)
            grant.remaining -= take
            amount -= take
        return True


# Few distinct terms, so that grants tie on some and the later rules of the order decide.
credits = st.tuples(
    st.integers(1, 20),  # amount
    st.sampled_from(["paid", "promotional"]),
    st.sampled_from([10, 50]),  # priority
    st.sampled_from([None, None, 1, 5]),  # expiry, in days from now
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), credits),
        st.tuples(st.just("debit"), st.integers(1, 30)),
        st.tuples(st.just("advance"), st.sampled_from([3_600, 86_400, 2 * 86_400])),
        st.tuples(st.just("sweep"), st.none()),
    ),
    min_size=1,
    max_size=25,
)


async def _replay(service: TokenService, clock: ManualClock, plan: list[Any]) -> None:
    user = f"p-{uuid.uuid4().hex[:10]}"
    await service.open_wallet(user)
    model = Model()
    for action, argument in plan:
        if action == "credit":
            amount, category, priority, days = argument
            expires_at = clock() + timedelta(days=days) if days is not None else None
            result = await service.credit(
                user, amount=amount, category=category, priority=priority, expires_at=expires_at
            )
            assert result.success
            newest = await service.get_grants(user, limit=1)
            assert newest
            grant_id = newest[0].grant_id
            model.grants[grant_id] = ModelGrant(grant_id, category, priority, expires_at, amount)
        elif action == "debit":
            succeeded = (await service.debit(user, amount=argument)).success
            assert succeeded == model.debit(argument, clock()), (action, argument)
        elif action == "advance":
            clock.advance(argument)
        else:
            await service.expire_grants()
            model.expire(clock())
        grants = await service.get_grants(user, limit=500)
        assert grants is not None
        actual = {grant.grant_id: grant.remaining_tokens for grant in grants}
        assert actual == {grant.id: grant.remaining for grant in model.grants.values()}, plan
        balance = await service.get_balance(user)
        assert balance is not None
        # A sweep or a spend expires; a read alone does not: expired tokens still count.
        assert balance.tokens_balance == sum(actual.values())


@pytest.mark.parametrize("group_commit", [True, False], ids=["group_commit", "commit_each"])
def test_grants_follow_the_model(database_url: str, group_commit: bool) -> None:
    clock = ManualClock()

    async def check(plan: list[Any]) -> None:
        async with TokenService(
            database_url,
            settings=Settings(group_commit=group_commit),
            clock=clock,
            welcome_bonus_tokens=0,
            auto_migrate=False,
        ) as service:
            await _replay(service, clock, plan)
            report = await service.audit()
            assert report.ok, report.problems

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(plan=steps)
    def run(plan: list[Any]) -> None:
        asyncio.run(check(plan))

    run()

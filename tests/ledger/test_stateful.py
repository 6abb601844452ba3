"""A stateful property test: random operation sequences against a plain-Python model.

Hypothesis drives one ``SyncTokenService`` per engine through random sequences of
wallet openings, credits (any category, priority and expiry, some of them due in
seconds), debits, priced charges, holds (placed, captured for less, as much or more,
voided, expired by the clock), refunds (free or naming a debit), admin status
changes, clock moves of minutes to days, sweeps of expired grants, plan joins and
monthly renewals (each example's plan has a random allocation, policy and cap;
decision 16), and *replays* of
earlier idempotency keys: the same request must return the first result and change
nothing, a different request under a used key must raise ``IdempotencyConflict`` and
change nothing.

The model (``Model*`` classes below) holds what the books must say: each wallet's
balance, held, spent and status, every grant of it and its remainder (decision 13,
docs/architecture.md), every consumption of a grant (so that a refund gives back to
the right grants), every hold, every debit and what has been refunded of it, and how
much each system account moved (``tokens_expired`` included). Its decision rules
mirror ``tokenbank.ledger.handlers``, ``grant_effects`` and ``repository`` (which
condition lets a debit through, when a capture suspends, when a top-up reactivates,
the catch-up of a spend refused while a hold or a grant is due: expired holds
released, expired grants expired except what pending holds need, the consumption
order, a capture taking expired remainders first, ...). After every step the
invariants prove the books (``audit``), compare every wallet with ``get_balance`` and
every grant with ``get_grants``, and check that wallet balances and system balances
cancel out.

Every Hypothesis example works on its own users (a fresh prefix), in one database
per pytest test: the database only ever accumulates valid history, so the global
invariants hold across examples. ``teardown`` sweeps the example's holds and lets all
its dated grants expire, so that the next example starts with no pending hold and no
grant due anywhere (a sweep then counts the example's own wallets only).

``test_ledger_matches_model`` runs a short machine on every ``make test``; set
``TOKENBANK_STATEFUL_EXAMPLES`` (e.g. 500) for a long run. The tests at the end pin,
minimally, the idempotency bugs the machine found (fixed by migration 0003) and the
grant bugs it found (fixed in the handlers and the service).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tokenbank import (
    ErrorCode,
    HoldResult,
    IdempotencyConflict,
    InvalidInput,
    ManualClock,
    OperationResult,
    SyncTokenService,
    TokenService,
)
from tokenbank.config import MAX_PAGE_SIZE
from tokenbank.ledger.accounts import (
    CREDIT_SOURCES,
    TOKENS_CONSUMED,
    TOKENS_EXPIRED,
    TOKENS_SOLD,
)
from tokenbank.plans import PlanService, WalletNotFound
from tokenbank.renewals import MonthlyRenewalService
from tokenbank.renewals.periods import period_at
from tokenbank.renewals.policy import allocation_expiry

WELCOME_BONUS = 40
# The seed cost table (migration 0001).
COSTS = {"image_generation": 10, "chatgpt_message": 5}
DEBIT_TYPES = ["usage", *COSTS]
CREDIT_TYPES = sorted(CREDIT_SOURCES)
SYSTEM_ACCOUNTS = sorted({*CREDIT_SOURCES.values(), TOKENS_CONSUMED, TOKENS_EXPIRED})
USERS_PER_EXAMPLE = 3
MAX_TTL = 120
# A grant's terms when the credit names none (grants.DEFAULT_GRANT_PRIORITY):
# category by source, priority 50, never expires.
DEFAULT_PRIORITY = 50
DEFAULT_TERMS = (None, DEFAULT_PRIORITY, None)
MINUTE, HOUR, DAY = 60, 3600, 86_400

DEFAULT_EXAMPLES = 30
DEFAULT_STEPS = 30
LONG_RUN_ENV = "TOKENBANK_STATEFUL_EXAMPLES"

amounts = st.integers(min_value=1, max_value=50)
picks = st.integers(min_value=0, max_value=63)
# The last user's wallet is not opened at the start: picked less often.
users = st.sampled_from([*range(USERS_PER_EXAMPLE - 1)] * 2 + [USERS_PER_EXAMPLE - 1])
# Shrinks towards "pending"; "unknown" names a hold that does not exist.
hold_targets = st.sampled_from(["pending"] * 4 + ["any", "unknown"])
# Grant terms: few distinct priorities (so that the later rules of the order decide
# ties) and any; expiries in seconds (on the scale of the holds' TTLs and of
# time_passes), or minutes to a month away; None never expires.
categories = st.sampled_from([None, None, "paid", "promotional"])
priorities = st.one_of(
    st.sampled_from([DEFAULT_PRIORITY, 10, 90]), st.integers(min_value=0, max_value=100)
)
expiries = st.one_of(
    st.none(),
    st.integers(min_value=1, max_value=MAX_TTL),
    st.sampled_from([15 * MINUTE, HOUR, DAY, 7 * DAY, 30 * DAY]),
)
clock_moves = st.one_of(
    st.sampled_from([MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY, 3 * DAY]),
    st.integers(min_value=MINUTE, max_value=7 * DAY),
)


# --- the model --------------------------------------------------------------------------


def default_category(operation_type: str) -> str:
    """Tokens bought with money are paid; everything else is promotional."""
    return "paid" if CREDIT_SOURCES[operation_type] == TOKENS_SOLD else "promotional"


@dataclass(eq=False)
class ModelGrant:
    number: int  # its place among its wallet's grants (their ids grow in this order)
    source: str
    category: str
    priority: int
    expires_at: datetime | None
    amount: int
    remaining: int
    plan: str | None = None  # the plan whose renewal granted it

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def order(self) -> tuple[int, bool, datetime | None, bool, int]:
        """The consumption order: priority, the earliest expiry (never last),
        promotional before paid, the oldest."""
        never = self.expires_at is None
        return (self.priority, never, self.expires_at, self.category == "paid", self.number)

    def view(self, now: datetime) -> tuple[object, ...]:
        """What ``get_grants`` must say of it (its id aside)."""
        status = "expired" if self.expired(now) else "active" if self.remaining else "spent"
        terms = (self.source, self.category, self.priority, self.expires_at)
        return (*terms, self.amount, self.remaining, status)


@dataclass(eq=False)
class ModelConsumption:
    """A consume, capture or settle movement: what a refund can give back to."""

    grant: ModelGrant
    transaction_id: str | None
    tokens: int
    returned: int = 0

    @property
    def unreturned(self) -> int:
        return self.tokens - self.returned


@dataclass
class ModelWallet:
    balance: int
    held: int = 0
    spent: int = 0
    status: str = "active"
    reason: str | None = None  # why a suspended wallet is suspended: overdraft | admin
    # The wallet's ledger entries: how many, and what went in and out in total.
    entries: int = 0
    earned: int = 0
    paid: int = 0
    grants: list[ModelGrant] = field(default_factory=list)
    consumptions: list[ModelConsumption] = field(default_factory=list)  # oldest first
    # The plan (None: none), when the wallet joined it, when its next allocation is due.
    plan: str | None = None
    plan_since: datetime | None = None
    renewal_due_at: datetime | None = None

    @property
    def available(self) -> int:
        return self.balance - self.held

    def top_up(self, amount: int) -> None:
        """repository._topped_up: a top-up covering an overdraft lifts that suspension."""
        if (
            self.status == "suspended"
            and self.reason == "overdraft"
            and self.balance + amount >= self.held
        ):
            self.status, self.reason = "active", None
        self.balance += amount
        self.entries += 1
        self.earned += amount

    def take(self, amount: int) -> None:
        self.balance -= amount
        self.spent += amount
        self.entries += 1
        self.paid += amount

    def suspend_if_overdrawn(self) -> None:
        """repository._overdrawn: usage that overdraws an *active* wallet suspends it."""
        if self.status == "active" and self.balance < self.held:
            self.status, self.reason = "suspended", "overdraft"

    # --- grants (grant_effects, grants.py) ------------------------------------------

    def add_grant(
        self,
        source: str,
        amount: int,
        *,
        category: str,
        priority: int = DEFAULT_PRIORITY,
        expires_at: datetime | None = None,
        transaction_id: str | None = None,
    ) -> None:
        """grant_effects.grant_credit, after the top-up: the credit's grant pays what
        the wallet was overdrawn by first (a settle movement)."""
        before = self.balance - amount
        settled = min(amount, -before) if before < 0 else 0
        grant = ModelGrant(
            len(self.grants), source, category, priority, expires_at, amount, amount - settled
        )
        self.grants.append(grant)
        if settled:
            self.consumptions.append(ModelConsumption(grant, transaction_id, settled))

    def due(self, now: datetime) -> bool:
        """wallets.next_grant_event_at <= now: a grant holding tokens has expired."""
        return any(grant.remaining and grant.expired(now) for grant in self.grants)

    def expired_tokens(self, now: datetime) -> int:
        return sum(grant.remaining for grant in self.grants if grant.expired(now))

    def consume(
        self, before: int, now: datetime, *, capture: bool, transaction_id: str | None
    ) -> None:
        """grant_effects.consume: what the non-negative balance lost, from the live
        grants in the consumption order; a capture takes expired remainders first."""
        tokens = max(before, 0) - max(self.balance, 0)
        live = [grant for grant in self.grants if grant.remaining]
        expired = sorted((g for g in live if g.expired(now)), key=ModelGrant.order)
        current = sorted((g for g in live if not g.expired(now)), key=ModelGrant.order)
        for grant in [*expired, *current] if capture else current:
            if tokens == 0:
                break
            take = min(grant.remaining, tokens)
            grant.remaining -= take
            tokens -= take
            self.consumptions.append(ModelConsumption(grant, transaction_id, take))
        assert tokens == 0, "the model's live grants do not cover what the wallet lost"

    def give_back(self, tokens: int, refund_of: str | None) -> None:
        """grant_effects.give_back: to the named debit's consumptions, then the wallet's,
        newest first; what no consumption takes back becomes a paid grant."""
        newest = [c for c in reversed(self.consumptions) if c.unreturned]
        named = [c for c in newest if refund_of is not None and c.transaction_id == refund_of]
        for consumption in [*named, *(c for c in newest if c not in named)]:
            if tokens == 0:
                break
            share = min(consumption.unreturned, tokens)
            consumption.returned += share
            consumption.grant.remaining += share
            tokens -= share
            kind = "named" if consumption in named else "other"
            event(f"refund: gives back to {kind} consumptions")
        if tokens:
            # (No settle: the balance is at least what comes back, so never overdrawn.)
            self.add_grant("refund", tokens, category="paid")
            event("refund: a new paid grant")

    def expire(self, now: datetime) -> int:
        """handlers.expire_grants: expired remainders leave, in the consumption order,
        but never what pending holds need (the balance stays at least what is held)."""
        left = max(self.balance - self.held, 0)
        expired = 0
        due = (g for g in self.grants if g.remaining and g.expired(now))
        for grant in sorted(due, key=ModelGrant.order):
            take = min(grant.remaining, left)
            grant.remaining -= take
            left -= take
            expired += take
        if expired:
            self.balance -= expired
            self.entries += 1
            self.paid += expired
        return expired

    def breakdown(self) -> tuple[int, int, datetime | None, int]:
        """BalanceInfo's paid, promotional, next_expiry_at and next_expiry_tokens."""
        live = [grant for grant in self.grants if grant.remaining]
        paid = sum(g.remaining for g in live if g.category == "paid")
        dated = [g for g in live if g.expires_at is not None]
        next_at = min((g.expires_at for g in dated if g.expires_at is not None), default=None)
        soonest = sum(g.remaining for g in dated if g.expires_at == next_at)
        return paid, sum(g.remaining for g in live) - paid, next_at, soonest


@dataclass
class ModelHold:
    hold_id: str
    user: str
    amount: int
    expires_at: datetime
    status: str = "pending"  # pending | captured | voided | expired
    captured: int | None = None
    # The capture's own result, for checking a replayed capture.
    capture_transaction_id: str | None = None
    capture_entry_id: int | None = None
    capture_balance: int | None = None


@dataclass
class ModelTransaction:
    transaction_id: str
    user: str
    kind: str  # credit | debit | refund
    amount: int
    refunded: int = 0


@dataclass(frozen=True)
class Request:
    """One keyed-or-not money-moving request, so it can be sent again later."""

    kind: str  # credit | debit | charge | refund | hold | capture
    user: str = ""
    amount: int = 0
    operation_type: str = "usage"
    overdraft: bool = False
    refund_of: str | None = None
    ttl: int | None = None
    resolved_ttl: int = 0
    hold_id: str = ""
    key: str | None = None
    # A credit's grant terms.
    category: str | None = None
    priority: int = DEFAULT_PRIORITY
    expires_at: datetime | None = None

    def fingerprint(self) -> tuple[object, ...]:
        """What the service compares for "the same request" (operations.request_hash)."""
        match self.kind:
            case "credit":
                parts = ("credit", self.user, self.amount, self.operation_type)
                # Terms count only when they are not all the defaults.
                if (self.category, self.priority, self.expires_at) == DEFAULT_TERMS:
                    return parts
                category = self.category or default_category(self.operation_type)
                return (*parts, category, self.priority, self.expires_at)
            case "debit" | "charge":
                return ("debit", self.user, self.amount, self.operation_type, self.overdraft)
            case "refund":
                return ("refund", self.user, self.amount, self.refund_of)
            case "hold":
                return ("hold", self.user, self.amount, self.resolved_ttl, self.operation_type)
            case "capture":
                return ("capture", self.hold_id, self.amount)
        raise AssertionError(self.kind)


@dataclass
class KeyRecord:
    request: Request
    first: OperationResult | HoldResult


@dataclass
class World:
    """What outlives one Hypothesis example: the wallets of earlier examples."""

    examples: int = 0
    settled_balances: dict[str, int] = field(default_factory=dict)


Result = OperationResult | HoldResult


def _capture_size(amount: int, held: int) -> str:
    if amount in (0, held):
        return "zero" if amount == 0 else "equal"
    return "less" if amount < held else "more"


def _check(result: object, **expected: Any) -> None:
    wrong = {
        name: (getattr(result, name), want)
        for name, want in expected.items()
        if getattr(result, name) != want
    }
    assert not wrong, f"(actual, expected) differ: {wrong}\nin {result!r}"


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, service: SyncTokenService, clock: ManualClock, world: World) -> None:
        super().__init__()
        self.service = service
        self.clock = clock
        self.world = world
        world.examples += 1
        self.prefix = f"x{world.examples}"
        self.default_ttl = int(service.service.settings.hold_default_ttl_seconds)
        self.wallets: dict[str, ModelWallet] = {}
        self.holds: list[ModelHold] = []
        self.transactions: dict[str, ModelTransaction] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.key_numbers = 0
        self.steps = 0
        # This example's plan (made by open_first_wallets): its allocation, policy, cap.
        self.plan = f"{self.prefix}-plan"
        self.plan_terms: tuple[int, str, int | None] = (0, "expire", None)
        self.plans = service.blocking(PlanService(service.engine(), clock=clock))
        self.renewals = service.blocking(MonthlyRenewalService(service.service))
        self.reads = 0
        # The wallets the current step sent something to: grants_match_the_model reads
        # their grants (get_balance's breakdown watches every wallet's after each step).
        self.touched: set[str] = set()
        # The books at the start of this example: the system accounts (and what this
        # example moved since), and anything the audit already found wrong. On valid
        # history there is nothing wrong and wallets and system accounts cancel out;
        # should an earlier example have broken the books, later examples are judged
        # on what they change, so that Hypothesis can still shrink the first failure.
        report = service.audit()
        self.system_start = dict(report.system_balances)
        self.system_moved = dict.fromkeys(SYSTEM_ACCOUNTS, 0)
        self.problems_start = {name: set(rows) for name, rows in report.problems.items()}
        self.gap_start = sum(world.settled_balances.values()) + sum(self.system_start.values())

    # --- helpers ------------------------------------------------------------------------

    def user(self, index: int) -> str:
        return f"{self.prefix}-u{index}"

    def new_key(self, keyed: bool) -> str | None:
        if not keyed:
            return None
        self.key_numbers += 1
        return f"{self.prefix}-k{self.key_numbers}"

    def metadata(self) -> dict[str, Any]:
        # Differs on every call: metadata must not count when a request is retried.
        self.steps += 1
        return {"step": self.steps}

    def now(self) -> datetime:
        return self.clock()

    def pending_holds(self, user: str | None = None) -> Iterator[ModelHold]:
        return (h for h in self.holds if h.status == "pending" and (user is None or h.user == user))

    def send(self, request: Request) -> Result:
        s, meta, key = self.service, self.metadata(), request.key
        match request.kind:
            case "credit":
                return s.credit(  # type: ignore[no-any-return]
                    request.user,
                    amount=request.amount,
                    operation_type=request.operation_type,
                    metadata=meta,
                    idempotency_key=key,
                    category=request.category,
                    priority=request.priority,
                    expires_at=request.expires_at,
                )
            case "debit":
                return s.debit(  # type: ignore[no-any-return]
                    request.user,
                    amount=request.amount,
                    operation_type=request.operation_type,
                    allow_overdraft=request.overdraft,
                    metadata=meta,
                    idempotency_key=key,
                )
            case "charge":
                return s.charge_for_operation(  # type: ignore[no-any-return]
                    request.user, request.operation_type, metadata=meta, idempotency_key=key
                )
            case "refund":
                return s.refund(  # type: ignore[no-any-return]
                    request.user,
                    request.amount,
                    meta,
                    refund_of=request.refund_of,
                    idempotency_key=key,
                )
            case "hold":
                return s.hold(  # type: ignore[no-any-return]
                    request.user,
                    request.amount,
                    ttl_seconds=request.ttl,
                    operation_type=request.operation_type,
                    metadata=meta,
                    idempotency_key=key,
                )
            case "capture":
                return s.capture(  # type: ignore[no-any-return]
                    request.hold_id, request.amount, metadata=meta, idempotency_key=key
                )
        raise AssertionError(request.kind)

    def run(self, request: Request) -> None:
        """Send a request and hold the service to the model, replays and conflicts included."""
        key = request.key
        past = request.expires_at is not None and request.expires_at <= self.now()
        if request.kind == "credit" and past and key not in self.keys:
            # A new credit must expire later than now; a retry of one that was made
            # answers as it did (test_a_retried_credit_is_answered_after_its_expiry_passed).
            with pytest.raises(InvalidInput) as refused:
                self.send(request)
            assert refused.value.field == "expires_at"
            event("credit: expiry passed (new)")
            return
        if request.kind == "credit" and past:
            event("credit: expiry passed (a replay or a conflict)")
        record = self.keys.get(key) if key is not None else None
        if record is not None:
            if record.request.fingerprint() == request.fingerprint():
                self.check_replay(record, self.send(request))
                event("replay: same request")
            else:
                with pytest.raises(IdempotencyConflict):
                    self.send(request)
                event(f"replay: conflict ({record.request.kind} -> {request.kind})")
            return
        hold = self.hold_by_id(request.hold_id)
        self.touched.add(hold.user if hold is not None else request.user)
        result = self.send(request)
        apply = getattr(self, f"apply_{request.kind}")
        apply(request, result)
        event(f"{request.kind}: {result.error_code or ('replayed' if result.replayed else 'ok')}")
        # A capture of a hold captured before is answered from the hold (replayed=True)
        # even under a new key; that key is then bound to this request too.
        if key is not None and result.success:
            self.keys[key] = KeyRecord(request, result)

    def check_replay(self, record: KeyRecord, result: Result) -> None:
        first = record.first
        if isinstance(first, OperationResult):
            _check(
                result,
                success=True,
                replayed=True,
                transaction_id=first.transaction_id,
                ledger_entry_id=first.ledger_entry_id,
                new_balance=first.new_balance,
                user_id=first.user_id,
            )
            return
        hold = self.hold_by_id(first.hold_id)
        assert hold is not None
        _check(
            result,
            success=True,
            replayed=True,
            hold_id=first.hold_id,
            amount_tokens=first.amount_tokens,
            expires_at=first.expires_at,
            user_id=first.user_id,
            status=hold.status,
            captured_tokens=hold.captured,
        )
        if record.request.kind == "capture" and first.transaction_id is not None:
            _check(
                result,
                transaction_id=first.transaction_id,
                ledger_entry_id=first.ledger_entry_id,
                new_balance=first.new_balance,
            )

    def hold_by_id(self, hold_id: str | None) -> ModelHold | None:
        return next((h for h in self.holds if h.hold_id == hold_id), None)

    def move_system(self, account: str, amount: int) -> None:
        self.system_moved[account] += amount

    def refusal(self, user: str, amount: int) -> dict[str, Any]:
        """handlers._explain_refusal, after the release of any expired holds."""
        wallet = self.wallets.get(user)
        if wallet is None:
            return {
                "error_code": ErrorCode.WALLET_NOT_FOUND,
                "available_tokens": None,
                "required_tokens": None,
            }
        code = {
            "closed": ErrorCode.WALLET_CLOSED,
            "suspended": ErrorCode.WALLET_SUSPENDED,
        }.get(wallet.status, ErrorCode.INSUFFICIENT_TOKENS)
        return {
            "error_code": code,
            "available_tokens": wallet.available,
            "required_tokens": amount,
        }

    def may_spend(self, user: str, amount: int) -> bool:
        """May a debit or hold take ``amount`` now (the model caught up as needed)?

        repository.debit_wallet / reserve_tokens need an active wallet with enough
        available and no grant due; when that fails, the writer catches the wallet up
        (handlers.catch_up, in a savepoint of its own) and tries once more. What the
        catch-up did stays whether the retry succeeds or not.
        """
        wallet = self.wallets[user]

        def ready() -> bool:
            due = wallet.due(self.now())
            return wallet.status == "active" and wallet.available >= amount and not due

        if ready():
            return True
        self.catch_up(user)
        return ready()

    def catch_up(self, user: str) -> None:
        """handlers.catch_up: release the wallet's expired holds, then, if a grant is
        due, expire what its expired grants hold beyond what the holds need."""
        self.release_in_model(self.expired_holds(user))
        if self.wallets[user].due(self.now()):
            self.expire(user)

    def expire(self, user: str, *, by: str = "a spend") -> None:
        """One wallet's expiry (a spend's catch-up or the sweep): an ``expiry``
        transaction towards ``tokens_expired``, if anything leaves."""
        wallet = self.wallets[user]
        tokens = wallet.expire(self.now())
        if tokens:
            self.move_system(TOKENS_EXPIRED, tokens)
        kept = wallet.expired_tokens(self.now())
        gone = "some" if tokens else "none"
        event(f"expiry by {by}: {gone} left, {'some' if kept else 'none'} kept for holds")

    def expired_holds(self, user: str) -> list[ModelHold]:
        """Pending holds whose time is up but that no sweep has released yet."""
        return [h for h in self.pending_holds(user) if h.expires_at <= self.now()]

    def expired_holds_all(self) -> list[ModelHold]:
        return [h for h in self.pending_holds() if h.expires_at <= self.now()]

    def release_in_model(self, holds: list[ModelHold]) -> None:
        for hold in holds:
            hold.status = "expired"
            self.wallets[hold.user].held -= hold.amount

    # --- how each request changes the model -----------------------------------------------

    def apply_credit(self, request: Request, result: Result) -> None:
        wallet = self.wallets.get(request.user)
        if wallet is None or wallet.status == "closed":
            _check(result, success=False, **self.refusal(request.user, request.amount))
            return
        wallet.top_up(request.amount)
        wallet.add_grant(
            request.operation_type,
            request.amount,
            category=request.category or default_category(request.operation_type),
            priority=request.priority,
            expires_at=request.expires_at,
            transaction_id=result.transaction_id,
        )
        self.move_system(CREDIT_SOURCES[request.operation_type], -request.amount)
        self.record_transaction(result, request.user, "credit", request.amount)

    def apply_debit(self, request: Request, result: Result) -> None:
        wallet = self.wallets.get(request.user)
        if wallet is None:
            _check(result, success=False, **self.refusal(request.user, request.amount))
            return
        if request.overdraft:
            # handlers.debit catches the wallet up first (so that expired holds cannot
            # make recorded usage look like an overdraft), then
            # repository.overdraw_wallet takes from anything but a closed wallet. A grant
            # still due then keeps tokens for holds, and the usage takes them first, as
            # a capture would (test_overdraft_usage_is_recorded_while_an_expired_grant_
            # backs_a_hold).
            self.catch_up(request.user)
            if wallet.status == "closed":
                _check(result, success=False, **self.refusal(request.user, request.amount))
                return
            if wallet.due(self.now()):
                event("debit: overdraft while an expired grant backs a hold")
            before = wallet.balance
            wallet.take(request.amount)
            wallet.suspend_if_overdrawn()
        else:
            if not self.may_spend(request.user, request.amount):
                _check(result, success=False, **self.refusal(request.user, request.amount))
                return
            before = wallet.balance
            wallet.take(request.amount)
        wallet.consume(
            before, self.now(), capture=request.overdraft, transaction_id=result.transaction_id
        )
        self.move_system(TOKENS_CONSUMED, request.amount)
        self.record_transaction(result, request.user, "debit", request.amount)

    apply_charge = apply_debit

    def apply_refund(self, request: Request, result: Result) -> None:
        user, amount = request.user, request.amount
        debit = None
        if request.refund_of is not None:
            debit = self.transactions.get(request.refund_of)
            if debit is None or debit.kind != "debit" or debit.user != user:
                _check(
                    result,
                    success=False,
                    error_code=ErrorCode.DEBIT_NOT_FOUND,
                    available_tokens=None,
                )
                return
        wallet = self.wallets.get(user)
        if wallet is None or wallet.status == "closed":
            code = ErrorCode.WALLET_NOT_FOUND if wallet is None else ErrorCode.WALLET_CLOSED
            _check(result, success=False, error_code=code, available_tokens=None)
            return
        remaining = None if debit is None else debit.amount - debit.refunded
        if wallet.spent < amount and (remaining is None or amount <= remaining):
            _check(
                result,
                success=False,
                error_code=ErrorCode.REFUND_EXCEEDS_SPENT,
                available_tokens=wallet.spent,
                required_tokens=amount,
            )
            return
        if remaining is not None and amount > remaining:
            # Both bounds exceeded: the refusal names the debit (_explain_refund_refusal).
            _check(
                result,
                success=False,
                error_code=ErrorCode.REFUND_EXCEEDS_DEBIT,
                available_tokens=remaining,
                required_tokens=amount,
            )
            return
        before = wallet.balance
        wallet.top_up(amount)
        wallet.spent -= amount
        wallet.give_back(max(wallet.balance, 0) - max(before, 0), request.refund_of)
        if debit is not None:
            debit.refunded += amount
        self.move_system(TOKENS_CONSUMED, -amount)
        self.record_transaction(result, user, "refund", amount)

    def record_transaction(self, result: Result, user: str, kind: str, amount: int) -> None:
        wallet = self.wallets[user]
        _check(
            result,
            success=True,
            error_code=None,
            replayed=False,
            new_balance=wallet.balance,
            available_tokens=wallet.available,
            user_id=user,
        )
        assert result.transaction_id is not None
        assert result.transaction_id not in self.transactions
        self.transactions[result.transaction_id] = ModelTransaction(
            result.transaction_id, user, kind, amount
        )

    def apply_hold(self, request: Request, result: Result) -> None:
        assert isinstance(result, HoldResult)
        user, amount = request.user, request.amount
        if user not in self.wallets:
            _check(result, success=False, **self.refusal(user, amount))
            return
        if not self.may_spend(user, amount):
            _check(result, success=False, **self.refusal(user, amount))
            return
        wallet = self.wallets[user]
        wallet.held += amount
        expires_at = self.now() + timedelta(seconds=request.resolved_ttl)
        _check(
            result,
            success=True,
            replayed=False,
            status="pending",
            amount_tokens=amount,
            expires_at=expires_at,
            new_balance=wallet.balance,
            available_tokens=wallet.available,
            user_id=user,
        )
        assert result.hold_id is not None and self.hold_by_id(result.hold_id) is None
        self.holds.append(ModelHold(result.hold_id, user, amount, expires_at))

    def apply_capture(self, request: Request, result: Result) -> None:
        assert isinstance(result, HoldResult)
        hold, amount = self.hold_by_id(request.hold_id), request.amount
        if hold is None:
            _check(result, success=False, error_code=ErrorCode.HOLD_NOT_FOUND)
            return
        if hold.status == "captured":
            self.check_capture_replay(hold, amount, result)
            return
        if hold.status == "expired" or (hold.status == "pending" and hold.expires_at <= self.now()):
            _check(result, success=False, error_code=ErrorCode.HOLD_EXPIRED, status=hold.status)
            return
        if hold.status != "pending":
            _check(result, success=False, error_code=ErrorCode.HOLD_NOT_PENDING, status=hold.status)
            return
        # handlers.capture_hold expires what is due beyond what the holds need first
        # (test_a_capture_spends_no_token_a_sweep_would_have_expired); then
        # repository.settle_hold (no status condition: usage that happened is recorded)
        # and grant_effects.consume(capture=True), expired remainders first.
        wallet = self.wallets[hold.user]
        if wallet.due(self.now()):
            self.expire(hold.user, by="a capture")
        wallet.held -= hold.amount
        before, expired = wallet.balance, wallet.expired_tokens(self.now())
        if amount > 0:
            wallet.take(amount)
        wallet.consume(before, self.now(), capture=True, transaction_id=result.transaction_id)
        if wallet.expired_tokens(self.now()) < expired:
            event("capture: took expired tokens")
        wallet.suspend_if_overdrawn()
        hold.status, hold.captured = "captured", amount
        event(f"capture of a pending hold: {_capture_size(amount, hold.amount)}")
        _check(
            result,
            success=True,
            replayed=False,
            hold_id=hold.hold_id,
            status="captured",
            amount_tokens=hold.amount,
            captured_tokens=amount,
            new_balance=wallet.balance,
            available_tokens=wallet.available,
            user_id=hold.user,
        )
        if amount == 0:
            assert result.transaction_id is None
            return
        assert result.transaction_id is not None
        hold.capture_transaction_id = result.transaction_id
        hold.capture_entry_id = result.ledger_entry_id
        hold.capture_balance = wallet.balance
        self.move_system(TOKENS_CONSUMED, amount)
        self.transactions[result.transaction_id] = ModelTransaction(
            result.transaction_id, hold.user, "debit", amount
        )

    @staticmethod
    def check_capture_replay(hold: ModelHold, amount: int, result: Result) -> None:
        """handlers._replay_capture: capture is idempotent per hold and amount."""
        if hold.captured != amount:
            _check(result, success=False, error_code=ErrorCode.HOLD_NOT_PENDING)
            return
        _check(
            result,
            success=True,
            replayed=True,
            status="captured",
            captured_tokens=amount,
            transaction_id=hold.capture_transaction_id,
            ledger_entry_id=hold.capture_entry_id,
            new_balance=hold.capture_balance,
        )

    # --- rules ----------------------------------------------------------------------------

    def make_plan(self, allocation: int, policy: str, cap: int | None) -> None:
        """This example's plan: a monthly allocation and what renewals do with it."""
        self.plan_terms = (allocation, policy, cap)
        self.plans.create_plan(
            self.plan,
            monthly_allocation_tokens=allocation,
            allocation_policy=policy,
            rollover_cap_tokens=cap,
        )

    @initialize(
        spare=st.integers(min_value=0, max_value=WELCOME_BONUS - 1),
        soon=st.integers(min_value=0, max_value=WELCOME_BONUS),
        expires_in=st.integers(min_value=1, max_value=MAX_TTL),
        priority=priorities,
        plan=st.tuples(
            st.integers(min_value=1, max_value=60),
            st.sampled_from(["expire", "rollover", "keep"]),
            st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
        ),
    )
    def open_first_wallets(
        self,
        spare: int,
        soon: int,
        expires_in: int,
        priority: int,
        plan: tuple[int, str, int | None],
    ) -> None:
        """Most steps need a wallet and many a hold: open all but the last user's wallet
        (that one may open later), credit the first ``soon`` tokens that expire within
        the holds' TTLs, and place one long hold on all its tokens but ``spare`` (at
        most the ``soon`` ones, if any: when that grant expires, what the hold needs
        of it stays). And make this example's ``plan`` (allocation, policy, cap)."""
        self.make_plan(*plan)
        for index in range(USERS_PER_EXAMPLE - 1):
            self.open_wallet(index)
        if soon:
            expires_at = self.now() + timedelta(seconds=expires_in)
            credit = Request(
                "credit",
                user=self.user(0),
                amount=soon,
                operation_type="bonus",
                priority=priority,
                expires_at=expires_at,
            )
            self.run(credit)
        amount = WELCOME_BONUS + soon - (spare % (soon + 1) if soon else spare)
        hold = Request("hold", user=self.user(0), amount=amount, resolved_ttl=self.default_ttl)
        self.run(hold)
        self.join_plan(1)  # a wallet on the plan from the start: renewals every example

    @rule(user=users)
    def open_wallet(self, user: int) -> None:
        name = self.user(user)
        self.touched.add(name)
        result = self.service.open_wallet(name)
        existing = self.wallets.get(name)
        if existing is not None:
            _check(result, success=True, created=False, new_balance=existing.balance)
            _check(result, welcome_bonus_tokens=0)
            return
        wallet = ModelWallet(balance=WELCOME_BONUS, entries=1, earned=WELCOME_BONUS)
        # The welcome bonus: a promotional grant that never expires (by default).
        wallet.add_grant("bonus", WELCOME_BONUS, category="promotional")
        self.wallets[name] = wallet
        self.move_system(CREDIT_SOURCES["bonus"], -WELCOME_BONUS)
        _check(result, success=True, created=True, new_balance=WELCOME_BONUS)
        _check(result, welcome_bonus_tokens=WELCOME_BONUS)

    @rule(
        user=users,
        amount=st.integers(min_value=1, max_value=80),
        operation_type=st.sampled_from(CREDIT_TYPES),
        category=categories,
        priority=priorities,
        expires_in=expiries,
        keyed=st.booleans(),
    )
    def credit(
        self,
        user: int,
        amount: int,
        operation_type: str,
        category: str | None,
        priority: int,
        expires_in: int | None,
        keyed: bool,
    ) -> None:
        """A credit: one grant, of ``category`` (None: by source), ``priority`` and an
        expiry ``expires_in`` seconds from now (None: never)."""
        expires_at = None if expires_in is None else self.now() + timedelta(seconds=expires_in)
        self.run(
            Request(
                "credit",
                user=self.user(user),
                amount=amount,
                operation_type=operation_type,
                key=self.new_key(keyed),
                category=category,
                priority=priority,
                expires_at=expires_at,
            )
        )

    @rule(seconds=clock_moves)
    def clock_moves_on(self, seconds: int) -> None:
        """Minutes to days pass: grants expire (and holds); nothing happens until a
        spend touches the wallet or a sweep runs."""
        self.clock.advance(seconds)

    @rule(to_expiry=st.booleans(), pick=picks, late=st.integers(min_value=0, max_value=2))
    def sweep_grants(self, to_expiry: bool, pick: int, late: int) -> None:
        """``expire_grants`` now, or (``to_expiry``) once the clock has run to one of
        the next two expiries of live grants, or just past it: every wallet with a
        grant due, each in its own transaction (earlier examples' wallets have none:
        see ``teardown``)."""
        dated = [
            grant.expires_at
            for wallet in self.wallets.values()
            for grant in wallet.grants
            if grant.remaining and grant.expires_at is not None
        ]
        if to_expiry and dated:
            # The next expiry mostly (holds placed since may still be pending then).
            when = sorted(dated)[pick % min(2, len(dated))]
            self.clock.advance(max(0.0, (when - self.now()).total_seconds()) + late)
        due = [user for user, wallet in self.wallets.items() if wallet.due(self.now())]
        assert self.service.expire_grants() == len(due)
        self.touched.update(due)
        for user in due:
            self.expire(user, by="the sweep")
        event(f"sweep of grants: {len(due)} due")

    # --- renew: monthly plan renewals -----------------------------------------------------

    @rule(user=users)
    def join_plan(self, user: int) -> None:
        """``set_user_plan``: joining starts the periods and makes an allocation due now;
        joining the plan the wallet is on changes nothing."""
        name = self.user(user)
        wallet = self.wallets.get(name)
        if wallet is None:
            with pytest.raises(WalletNotFound):
                self.plans.set_user_plan(name, self.plan)
            return
        self.plans.set_user_plan(name, self.plan)
        if wallet.plan != self.plan:
            wallet.plan, wallet.plan_since, wallet.renewal_due_at = (
                self.plan,
                self.now(),
                self.now(),
            )
        event("join the plan")

    @rule(user=users, to_due=st.booleans())
    def renew(self, user: int, to_due: bool) -> None:
        """``renew_user``, now or (``to_due``) once the clock has run to the wallet's due
        date; the model applies the plan's policy to its earlier allocations."""
        name = self.user(user)
        wallet = self.wallets.get(name)
        due_at = None if wallet is None else wallet.renewal_due_at
        if to_due and due_at is not None and due_at > self.now():
            self.clock.set(due_at)
        self.touched.add(name)
        result = self.renewals.renew_user(name)
        reason = self.renewal_refusal(wallet)
        if reason is not None:
            assert (result.success, result.error) == (False, reason), result
            event(f"renewal refused: {reason.split(' ')[0]}")
            return
        assert wallet is not None and wallet.plan_since is not None
        assert result.success, result
        if wallet.due(self.now()):
            self.expire(name, by="a renewal")
        allocation, policy, cap = self.plan_terms
        carried, forfeited = self.forfeit(wallet, policy, allocation, cap)
        period = period_at(wallet.plan_since, self.now())
        expires_at = allocation_expiry(policy, wallet.plan_since, period)
        wallet.top_up(allocation)
        wallet.add_grant("renewal", allocation, category="promotional", expires_at=expires_at)
        wallet.grants[-1].plan = self.plan
        self.move_system(CREDIT_SOURCES["renewal"], -allocation)
        wallet.renewal_due_at = period.end
        assert (result.period_start, result.period_end, result.expires_at) == (
            period.start,
            period.end,
            expires_at,
        )
        assert (result.tokens_granted, result.tokens_carried, result.tokens_forfeited) == (
            allocation,
            carried,
            forfeited,
        )
        assert result.new_balance == wallet.balance
        event(f"renewal ({policy}): {'some' if carried else 'none'} carried")

    def renewal_refusal(self, wallet: ModelWallet | None) -> str | None:
        """renewals.service.eligibility, in the model's words."""
        if wallet is None:
            return "no wallet for this user"
        if wallet.plan is None:
            return "not on a plan"
        if wallet.status != "active":
            return f"wallet is {wallet.status}"
        if wallet.renewal_due_at is not None and wallet.renewal_due_at > self.now():
            return "already renewed for this period"
        return None

    def forfeit(
        self, wallet: ModelWallet, policy: str, allocation: int, cap: int | None
    ) -> tuple[int, int]:
        """renewals.policy.plan_forfeit on the plan's live earlier allocations: keep at
        most the policy's limit (the first to be spent), never take what holds need;
        what is taken leaves as an ``expiry``. (carried, forfeited)."""
        now = self.now()
        earlier = sorted(
            (
                g
                for g in wallet.grants
                if g.plan == self.plan and g.remaining and not g.expired(now)
            ),
            key=ModelGrant.order,
        )
        keep_left = {"expire": 0, "rollover": allocation if cap is None else cap}.get(policy)
        take_left, forfeited = max(wallet.balance - wallet.held, 0), 0
        for grant in earlier:
            if keep_left is None:
                break
            kept = min(grant.remaining, keep_left)
            keep_left -= kept
            take = min(grant.remaining - kept, take_left)
            grant.remaining -= take
            take_left -= take
            forfeited += take
        if forfeited:
            wallet.balance -= forfeited
            wallet.entries += 1
            wallet.paid += forfeited
            self.move_system(TOKENS_EXPIRED, forfeited)
        return sum(g.remaining for g in earlier), forfeited

    @rule(
        user=users,
        priced=st.booleans(),
        amount=amounts,
        operation_type=st.sampled_from(DEBIT_TYPES),
        overdraft=st.sampled_from([False, False, True]),
        keyed=st.booleans(),
    )
    def debit(
        self,
        user: int,
        priced: bool,
        amount: int,
        operation_type: str,
        overdraft: bool,
        keyed: bool,
    ) -> None:
        """``debit``, or (``priced``) ``charge_for_operation`` at the cost-table price."""
        if priced:
            priced_type = operation_type if operation_type in COSTS else sorted(COSTS)[0]
            request = Request(
                "charge",
                user=self.user(user),
                amount=COSTS[priced_type],
                operation_type=priced_type,
                key=self.new_key(keyed),
            )
        else:
            request = Request(
                "debit",
                user=self.user(user),
                amount=amount,
                operation_type=operation_type,
                overdraft=overdraft,
                key=self.new_key(keyed),
            )
        self.run(request)

    @rule(
        user=users,
        amount=st.integers(min_value=1, max_value=35),
        ttl=st.none() | st.integers(min_value=1, max_value=MAX_TTL),
        operation_type=st.sampled_from(DEBIT_TYPES),
        keyed=st.booleans(),
    )
    def hold(
        self, user: int, amount: int, ttl: int | None, operation_type: str, keyed: bool
    ) -> None:
        self.run(
            Request(
                "hold",
                user=self.user(user),
                amount=amount,
                ttl=ttl,
                resolved_ttl=self.default_ttl if ttl is None else ttl,
                operation_type=operation_type,
                key=self.new_key(keyed),
            )
        )

    def pick_hold(self, pick: int, which: str) -> ModelHold | None:
        """A pending hold (or any hold, if none is pending), any hold, or an unknown one."""
        pending = list(self.pending_holds())
        choices = pending if which == "pending" and pending else self.holds
        if which == "unknown":
            return None
        return choices[pick % len(choices)]

    @precondition(lambda self: self.holds)
    @rule(
        pick=picks,
        which=hold_targets,
        how=st.sampled_from(["less", "equal", "more", "zero"]),
        delta=st.integers(min_value=1, max_value=40),
        keyed=st.booleans(),
    )
    def capture(self, pick: int, which: str, how: str, delta: int, keyed: bool) -> None:
        hold = self.pick_hold(pick, which)
        if hold is None:
            unknown = f"hold_{uuid.uuid4().hex}"
            self.run(Request("capture", hold_id=unknown, amount=delta, key=self.new_key(keyed)))
            return
        amount = {
            "less": max(0, hold.amount - delta),
            "equal": hold.amount,
            "more": hold.amount + delta,
            "zero": 0,
        }[how]
        self.run(Request("capture", hold_id=hold.hold_id, amount=amount, key=self.new_key(keyed)))

    @precondition(lambda self: self.holds)
    @rule(pick=picks, which=hold_targets)
    def void(self, pick: int, which: str) -> None:
        hold = self.pick_hold(pick, which)
        if hold is None:
            result = self.service.void(f"hold_{uuid.uuid4().hex}")
            _check(result, success=False, error_code=ErrorCode.HOLD_NOT_FOUND)
            event("void: hold_not_found")
            return
        self.touched.add(hold.user)
        result = self.service.void(hold.hold_id)
        event(f"void: {hold.status}")
        if hold.status in ("voided", "expired"):
            _check(result, success=True, replayed=True, status=hold.status)
            return
        if hold.status == "captured":
            _check(result, success=False, error_code=ErrorCode.HOLD_NOT_PENDING, status="captured")
            return
        # A pending hold is voided even when its time is up but no sweep released it.
        wallet = self.wallets[hold.user]
        wallet.held -= hold.amount
        hold.status = "voided"
        _check(
            result,
            success=True,
            replayed=False,
            status="voided",
            new_balance=wallet.balance,
            available_tokens=wallet.available,
        )

    @rule(
        how=st.sampled_from(["advance", "sweep", "spend", "spend", "spend"]),
        seconds=st.integers(min_value=1, max_value=60),
        pick=picks,
        spend=st.sampled_from(["debit", "hold", "overdraft"]),
        short=st.integers(min_value=-1, max_value=2),
    )
    def time_passes(self, how: str, seconds: int, pick: int, spend: str, short: int) -> None:
        """Time passes: ``advance`` the clock only (expired holds wait for a lazy
        release); run to a pending hold's expiry and ``sweep``; or run to it and
        ``spend`` what only releasing it can free (``short`` = -1: one token too many,
        refused, the release kept all the same)."""
        pending = list(self.pending_holds())
        if how == "advance" or not pending:
            self.clock.advance(seconds)
            return
        hold = pending[pick % len(pending)]
        wait = max(0.0, (hold.expires_at - self.now()).total_seconds())
        if how == "sweep":
            self.clock.advance(wait + seconds % 3)  # to its expiry, or just past it
            due = list(self.expired_holds_all())
            assert hold in due
            assert self.service.release_expired_holds() == len(due)
            self.release_in_model(due)
            event(f"sweep: released {min(len(due), 3)}{'+' if len(due) > 3 else ''}")
            return
        self.clock.advance(wait)
        wallet = self.wallets[hold.user]
        freed = sum(h.amount for h in self.expired_holds(hold.user))
        amount = max(1, wallet.available + freed - short)
        if spend == "hold":
            request = Request("hold", user=hold.user, amount=amount, ttl=60, resolved_ttl=60)
        else:
            request = Request(
                "debit", user=hold.user, amount=amount, overdraft=spend == "overdraft"
            )
        self.run(request)

    @rule(
        user=users,
        named=st.sampled_from(["debit", "debit", "none", "none", "any", "unknown"]),
        pick=picks,
        how=st.sampled_from(["remaining", "more", "less", "any"]),
        amount=amounts,
        other_user=st.sampled_from([False, False, True]),
        keyed=st.booleans(),
    )
    def refund(
        self,
        user: int,
        named: str,
        pick: int,
        how: str,
        amount: int,
        other_user: bool,
        keyed: bool,
    ) -> None:
        """A refund of ``amount`` to ``user`` (``named`` = none), or one naming an earlier
        debit (or a credit, a refund, an unknown id), for the debit's user (or another)."""
        transactions = list(self.transactions.values())
        if named == "none" or not transactions:
            self.run(
                Request("refund", user=self.user(user), amount=amount, key=self.new_key(keyed))
            )
            return
        debits = [t for t in transactions if t.kind == "debit"]
        if named == "debit" and debits:
            transactions = debits
        target = transactions[pick % len(transactions)]
        refund_of = str(uuid.uuid4()) if named == "unknown" else target.transaction_id
        remaining = target.amount - target.refunded
        amount = {
            "remaining": max(1, remaining),
            "more": remaining + 1,
            "less": max(1, remaining - amount),
            "any": amount,
        }[how]
        name = self.user(user) if other_user else target.user
        self.run(
            Request(
                "refund", user=name, amount=amount, refund_of=refund_of, key=self.new_key(keyed)
            )
        )

    @precondition(lambda self: self.keys)
    @rule(
        same=st.booleans(),
        pick=picks,
        variant=st.integers(min_value=0, max_value=15),
        amount=amounts,
    )
    def reuse_key(self, same: bool, pick: int, variant: int, amount: int) -> None:
        """Send an earlier keyed request again (``same``, with new metadata): the first
        result and no change; or a different request under its key: IdempotencyConflict
        and no change."""
        records = list(self.keys.values())
        first = records[pick % len(records)].request
        if same:
            self.run(first)
            return
        candidates = [
            c
            for c in self.different_requests(first, amount)
            if c.fingerprint() != first.fingerprint()
        ]
        self.run(candidates[variant % len(candidates)])

    def different_requests(self, first: Request, amount: int) -> list[Request]:
        """Requests that differ from ``first`` in a field that moves money."""
        key = first.key
        user = first.user or self.hold_by_id(first.hold_id).user  # type: ignore[union-attr]
        index = int(user.rsplit("u", 1)[1])
        other_user = self.user((index + 1) % USERS_PER_EXAMPLE)
        if first.kind == "charge":
            other = next(t for t in COSTS if t != first.operation_type)
            same_kind = Request(
                "charge", user=user, amount=COSTS[other], operation_type=other, key=key
            )
        else:
            fields = {**first.__dict__, "amount": first.amount + amount}
            same_kind = Request(**fields)
        candidates = [
            same_kind,
            Request("credit", user=user, amount=amount, operation_type="purchase", key=key),
            Request("debit", user=other_user, amount=amount, key=key),
            Request("refund", user=user, amount=amount, key=key),
            Request("hold", user=user, amount=amount, ttl=60, resolved_ttl=60, key=key),
        ]
        for hold in self.holds[-2:]:
            candidates.append(Request("capture", hold_id=hold.hold_id, amount=amount, key=key))
            candidates.append(Request("capture", hold_id=hold.hold_id, amount=0, key=key))
        return candidates

    @rule(user=users, status=st.sampled_from(["active", "suspended", "active", "closed"]))
    def set_status(self, user: int, status: str) -> None:
        """The admin action; 'active' over an overdraft is refused as bad input."""
        name = self.user(user)
        wallet = self.wallets.get(name)
        if wallet is None:
            assert self.service.set_wallet_status(name, status) is None
            return
        if status == "active" and wallet.balance < wallet.held:
            with pytest.raises(InvalidInput) as refused:
                self.service.set_wallet_status(name, status)
            assert refused.value.field == "status"
            event("set_status: refused by CHECK")
            return
        info = self.service.set_wallet_status(name, status)
        wallet.status, wallet.reason = status, "admin" if status == "suspended" else None
        assert info is not None and info.status == status

    @rule()
    def check_history(self) -> None:
        """The read side agrees with the model: one wallet's statistics and newest entry,
        one affordability check and one hold (taken in turn, to keep the step cheap)."""
        self.reads += 1
        if self.wallets:
            name, wallet = list(self.wallets.items())[self.reads % len(self.wallets)]
            ledger = self.service.get_ledger()
            stats = ledger.get_user_statistics(name)
            actual = (stats.total_spent, stats.total_earned, stats.net_change)
            assert actual == (wallet.paid, wallet.earned, wallet.balance), (name, stats)
            assert stats.operation_count == wallet.entries, (name, stats)
            newest = ledger.get_user_entries(name, limit=1)
            assert [e.balance_after for e in newest] == [wallet.balance] * min(1, wallet.entries)
        self.check_can_afford(self.user(self.reads % USERS_PER_EXAMPLE))
        if self.holds:
            hold = self.holds[self.reads % len(self.holds)]
            view = self.service.get_hold(hold.hold_id)
            assert view is not None
            actual_hold = (view.status, view.captured_tokens, view.amount_tokens, view.user_id)
            assert actual_hold == (hold.status, hold.captured, hold.amount, hold.user)
            assert view.expires_at == hold.expires_at

    def check_can_afford(self, name: str) -> None:
        operation_type = sorted(COSTS)[self.reads % len(COSTS)]
        cost = COSTS[operation_type]
        answer = self.service.can_afford(name, operation_type)
        wallet = self.wallets.get(name)
        if wallet is None:
            _check(answer, can_afford=False, cost=cost, balance=0, available=0, deficit=cost)
            _check(answer, error_code=ErrorCode.WALLET_NOT_FOUND)
            return
        codes = {"suspended": ErrorCode.WALLET_SUSPENDED, "closed": ErrorCode.WALLET_CLOSED}
        _check(
            answer,
            can_afford=wallet.status == "active" and wallet.available >= cost,
            cost=cost,
            balance=wallet.balance,
            available=wallet.available,
            deficit=max(0, cost - wallet.available),
            error_code=codes.get(wallet.status),
        )

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def books_are_proven(self) -> None:
        report = self.service.audit()
        new_problems = {
            name: [row for row in rows if row not in self.problems_start.get(name, set())]
            for name, rows in report.problems.items()
        }
        assert not any(new_problems.values()), new_problems
        assert report.ok or self.problems_start, report.problems
        system = report.system_balances
        for account in SYSTEM_ACCOUNTS:
            expected = self.system_start.get(account, 0) + self.system_moved[account]
            assert system.get(account, 0) == expected, (account, system, expected)
        # Every wallet's balance, this example's and earlier ones', against the system
        # accounts: they sum to zero (gap_start is 0 unless the books came in broken).
        wallets_total = sum(self.world.settled_balances.values()) + sum(
            w.balance for w in self.wallets.values()
        )
        gap = wallets_total + sum(system.values())
        assert gap == self.gap_start, (wallets_total, system, self.gap_start)

    @invariant()
    def wallets_match_the_model(self) -> None:
        for index in range(USERS_PER_EXAMPLE):
            name = self.user(index)
            info = self.service.get_balance(name)
            wallet = self.wallets.get(name)
            if wallet is None:
                assert info is None, info
                continue
            assert info is not None
            actual = (info.tokens_balance, info.held, info.available, info.tokens_spent)
            expected = (wallet.balance, wallet.held, wallet.available, wallet.spent)
            assert actual == expected, (name, actual, expected)
            assert info.status == wallet.status, (name, info.status, wallet.status)
            if info.status == "active":
                assert info.available >= 0, info
            assert wallet.held == sum(h.amount for h in self.pending_holds(name))
            made_of = (
                info.paid_tokens,
                info.promotional_tokens,
                info.next_expiry_at,
                info.next_expiry_tokens,
            )
            assert made_of == wallet.breakdown(), (name, made_of, wallet.breakdown())

    @invariant()
    def grants_match_the_model(self) -> None:
        """Every grant (spent and expired ones too) of every wallet the step touched,
        oldest first, with its remainder; the grants add up to the balance while it is
        not negative. (A step changes only the grants of the wallets it touches; the
        others' sums, by category and next expiry, wallets_match_the_model compares.)"""
        now = self.now()
        touched, self.touched = self.touched, set()
        for name in sorted(touched & self.wallets.keys()):
            wallet = self.wallets[name]
            grants = self.service.get_grants(name, limit=MAX_PAGE_SIZE)
            assert grants is not None
            grants.reverse()
            ids = [grant.grant_id for grant in grants]
            assert ids == sorted(set(ids)), ids
            assert all(0 <= g.remaining_tokens <= g.amount_tokens for g in grants), grants
            assert sum(g.remaining_tokens for g in grants) == max(wallet.balance, 0)
            actual = [
                (
                    g.source,
                    g.category,
                    g.priority,
                    g.expires_at,
                    g.amount_tokens,
                    g.remaining_tokens,
                    g.status,
                )
                for g in grants
            ]
            expected = [grant.view(now) for grant in wallet.grants]
            assert actual == expected, (name, actual, expected)

    def teardown(self) -> None:
        # Release every hold, then let every dated grant expire and sweep them, so
        # that the next example starts with no pending hold and no grant due (its
        # sweeps count its own wallets only). The latest expiry is read back, as are
        # the balances remembered, in case a step failed half-way.
        self.clock.advance(max(self.default_ttl, MAX_TTL) + 1)
        self.service.release_expired_holds()
        names = [self.user(index) for index in range(USERS_PER_EXAMPLE)]
        grants = [self.service.get_grants(name, limit=MAX_PAGE_SIZE) or [] for name in names]
        dated = [g.expires_at for listed in grants for g in listed if g.expires_at is not None]
        latest = max(dated, default=None)
        if latest is not None and latest >= self.now():
            self.clock.advance((latest - self.now()).total_seconds() + 1)
        self.service.expire_grants()
        for name in names:
            info = self.service.get_balance(name)
            if info is not None:
                self.world.settled_balances[name] = info.tokens_balance


def _run_machine(database_url: str, examples: int, steps: int) -> None:
    clock = ManualClock()
    world = World()
    with SyncTokenService(
        database_url, clock=clock, welcome_bonus_tokens=WELCOME_BONUS, auto_migrate=False
    ) as service:
        costs = service.get_operation_costs()
        assert {name: costs.get(name) for name in COSTS} == COSTS
        run_state_machine_as_test(
            # A factory is fine here (Hypothesis calls it once per example).
            lambda: LedgerMachine(service, clock, world),  # type: ignore[arg-type]
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
        assert world.examples > 0


def test_ledger_matches_model(database_url: str) -> None:
    _run_machine(database_url, DEFAULT_EXAMPLES, DEFAULT_STEPS)


@pytest.mark.slow
@pytest.mark.skipif(LONG_RUN_ENV not in os.environ, reason=f"set {LONG_RUN_ENV} for a long run")
def test_ledger_matches_model_long(database_url: str) -> None:
    _run_machine(database_url, int(os.environ.get(LONG_RUN_ENV, "0")), DEFAULT_STEPS * 2)


# --- what the machine found, minimally -------------------------------------------------
# Keys used to live in two tables (transactions, holds), a capture of 0 left none, and
# a capture of a hold captured before answered as a replay whatever its key: each of
# these different requests under a used key went through instead of conflicting.


async def _wallet_with(service: TokenService, tokens: int) -> None:
    await service.open_wallet("u")
    await service.credit("u", amount=tokens)


async def _held(service: TokenService) -> tuple[int, int]:
    balance = await service.get_balance("u")
    assert balance is not None
    return balance.tokens_balance, balance.held


async def test_hold_under_the_key_of_a_credit_is_a_conflict(service: TokenService) -> None:
    await _wallet_with(service, 100)
    await service.credit("u", amount=5, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        await service.hold("u", 30, ttl_seconds=60, idempotency_key="k")
    assert await _held(service) == (105, 0)


async def test_credit_under_the_key_of_a_hold_is_a_conflict(service: TokenService) -> None:
    await _wallet_with(service, 100)
    await service.hold("u", 10, ttl_seconds=60, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        await service.credit("u", amount=5, idempotency_key="k")
    assert await _held(service) == (100, 10)


async def test_key_of_a_capture_of_zero_is_remembered(service: TokenService) -> None:
    await _wallet_with(service, 100)
    hold = await service.hold("u", 10, ttl_seconds=60)
    assert hold.hold_id is not None
    captured = await service.capture(hold.hold_id, 0, idempotency_key="k")
    assert captured.success and captured.transaction_id is None
    with pytest.raises(IdempotencyConflict):
        await service.credit("u", amount=5, idempotency_key="k")
    assert await _held(service) == (100, 0)


async def test_capture_of_zero_under_the_key_of_a_credit_is_a_conflict(
    service: TokenService,
) -> None:
    await _wallet_with(service, 100)
    await service.credit("u", amount=5, idempotency_key="k")
    hold = await service.hold("u", 10, ttl_seconds=60)
    assert hold.hold_id is not None
    with pytest.raises(IdempotencyConflict):
        await service.capture(hold.hold_id, 0, idempotency_key="k")
    assert await _held(service) == (105, 10)


async def test_repeated_capture_under_the_key_of_a_debit_is_a_conflict(
    service: TokenService,
) -> None:
    await _wallet_with(service, 100)
    hold = await service.hold("u", 10, ttl_seconds=60)
    assert hold.hold_id is not None
    await service.capture(hold.hold_id, 6)
    await service.debit("u", amount=3, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        await service.capture(hold.hold_id, 6, idempotency_key="k")
    assert await _held(service) == (91, 0)


# --- grant bugs the machine found, minimally (fixed) -------------------------------------
# An overdraft refused while an expired grant backed a hold (repository.overdraw_wallet
# wanted no grant due), a capture spending tokens a sweep would have expired
# (handlers.capture_hold did not catch the wallet up), and a keyed credit's retry
# refused once its expiry had passed (TokenService.credit checked the date first).

HOLD_A_WEEK = 7 * DAY
ONE_DAY = timedelta(days=1)


async def test_overdraft_usage_is_recorded_while_an_expired_grant_backs_a_hold(
    service: TokenService, clock: ManualClock
) -> None:
    # The wallet's only tokens, 10 promotional, expire while a hold of 10 is pending:
    # the catch-up keeps all 10 for the hold, so the grant stays due.
    await service.open_wallet("u")
    await service.credit("u", amount=10, operation_type="bonus", expires_at=clock() + ONE_DAY)
    assert (await service.hold("u", 10, ttl_seconds=HOLD_A_WEEK)).success
    clock.advance(2 * DAY)
    recorded = await service.debit("u", amount=5, allow_overdraft=True)
    assert recorded.success, recorded.error_code
    assert await _held(service) == (5, 10)


async def test_a_capture_spends_no_token_a_sweep_would_have_expired(
    service: TokenService, clock: ManualClock
) -> None:
    kept = {}
    for user, sweep in (("swept", True), ("lazy", False)):
        await service.open_wallet(user)
        await service.credit(user, amount=50, operation_type="bonus", expires_at=clock() + ONE_DAY)
        await service.credit(user, amount=20, operation_type="purchase")
        held = await service.hold(user, 10, ttl_seconds=HOLD_A_WEEK)
        assert held.hold_id is not None
        clock.advance(2 * DAY)
        if sweep:
            await service.expire_grants()  # the 50 leave; the 20 paid back the hold
        assert (await service.capture(held.hold_id, 10)).success
        await service.expire_grants()
        grants = await service.get_grants(user)
        assert grants is not None
        kept[user] = {grant.source: grant.remaining_tokens for grant in grants}
    assert kept["swept"] == {"purchase": 10, "bonus": 0}
    assert kept["lazy"] == kept["swept"]  # it is {"purchase": 20, "bonus": 0}


async def test_a_retried_credit_is_answered_after_its_expiry_passed(
    service: TokenService, clock: ManualClock
) -> None:
    await service.open_wallet("u")
    terms: dict[str, Any] = {"operation_type": "bonus", "expires_at": clock() + ONE_DAY}
    first = await service.credit("u", amount=10, idempotency_key="k", **terms)
    assert first.success
    clock.advance(2 * DAY)
    retried = await service.credit("u", amount=10, idempotency_key="k", **terms)
    assert (retried.replayed, retried.transaction_id) == (True, first.transaction_id)

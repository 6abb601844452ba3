"""payments: token packs, purchases, Stripe events, subscriptions, auto-recharge

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Packs are what tokenbank sells; a purchase is one attempt to buy and what became of
it; ``stripe_events`` holds every Stripe event taken in, by id, written with its
effect (decision 14, docs/architecture.md). Auto-recharge: a user's settings, and
``recharges``, the outbox a trigger on ``wallets`` fills in the very transaction
whose change took the available tokens below the threshold (at most one recharge in
flight per wallet, by a partial unique index). A second trigger keeps the wallet's
``recharge_below_tokens`` equal to the settings' threshold while they are on, so the
wallet trigger's WHEN clause decides without calling a function on every debit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MAX_PRICE_CENTS = 100_000_000
MAX_TOKENS = 1_000_000_000_000
IN_FLIGHT = "status IN ('queued', 'processing')"
CURRENCY = "length(currency) = 3 AND currency = lower(currency)"
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _check(condition: str, table: str, name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}"))


def _foreign_key(
    table: str, column: str, target: str, target_column: str
) -> sa.ForeignKeyConstraint:
    target_table = target
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target_table}.{target_column}"],
        name=op.f(f"fk_{table}_{column}_{target_table}"),
    )


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _create_packs_and_customers() -> None:
    op.create_table(
        "token_packs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stripe_price_id", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("popular", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        *_stamps(),
        _check(f"tokens > 0 AND tokens <= {MAX_TOKENS}", "token_packs", "tokens_in_range"),
        _check(
            f"price_cents > 0 AND price_cents <= {MAX_PRICE_CENTS}", "token_packs", "price_in_range"
        ),
        _check(CURRENCY, "token_packs", "currency_lowercase_iso"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_packs")),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _foreign_key("stripe_customers", "user_id", "wallets", "user_id"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_stripe_customers")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_stripe_customers_customer_id")),
    )


def _purchase_checks() -> list[sa.CheckConstraint]:
    rules = {
        "kind_known": "kind IN ('pack', 'amount', 'subscription', 'auto_recharge')",
        "status_known": "status IN ('pending', 'paid', 'failed', 'canceled')",
        "amount_in_range": f"amount_cents > 0 AND amount_cents <= {MAX_PRICE_CENTS}",
        "currency_lowercase_iso": CURRENCY,
        "tokens_in_range": f"tokens >= 0 AND tokens <= {MAX_TOKENS}"
        " AND (tokens > 0 OR kind = 'subscription')",
        "plan_iff_subscription": "(kind = 'subscription') = (plan IS NOT NULL)",
        "paid_has_time": "(status = 'paid') = (paid_at IS NOT NULL)",
        "credit_only_when_paid": "credit_transaction_id IS NULL OR status = 'paid'",
        "paid_has_credit": "status <> 'paid' OR kind = 'subscription'"
        " OR credit_transaction_id IS NOT NULL",
        "refund_within_amount": "refunded_cents >= 0 AND refunded_cents <= amount_cents",
        "taken_back_within_tokens": "clawed_back_tokens >= 0 AND lost_tokens >= 0"
        " AND frozen_tokens >= 0 AND clawed_back_tokens + lost_tokens + frozen_tokens <= tokens",
        "dispute_status_known": "dispute_status IS NULL OR dispute_status IN"
        " ('open', 'won', 'lost')",
        # IS NOT NULL: a CHECK passes when its condition is NULL (no dispute at all).
        "frozen_only_in_dispute": "frozen_tokens = 0"
        " OR (dispute_status IS NOT NULL AND dispute_status = 'open')",
    }
    return [_check(condition, "purchases", name) for name, condition in rules.items()]


def _create_purchases() -> None:
    op.create_table(
        "purchases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=True),
        sa.Column("plan", sa.String(length=64), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stripe_checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("credit_transaction_id", sa.String(length=36), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back_tokens", sa.BigInteger(), nullable=False),
        sa.Column("lost_tokens", sa.BigInteger(), nullable=False),
        sa.Column("dispute_status", sa.String(length=16), nullable=True),
        sa.Column("frozen_tokens", sa.BigInteger(), nullable=False),
        *_stamps(),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        *_purchase_checks(),
        _foreign_key("purchases", "user_id", "wallets", "user_id"),
        _foreign_key("purchases", "pack_id", "token_packs", "id"),
        _foreign_key("purchases", "plan", "plans", "name"),
        _foreign_key("purchases", "credit_transaction_id", "ledger_transactions", "id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchases")),
        sa.UniqueConstraint(
            "stripe_checkout_session_id", name=op.f("uq_purchases_stripe_checkout_session_id")
        ),
        sa.UniqueConstraint(
            "stripe_payment_intent_id", name=op.f("uq_purchases_stripe_payment_intent_id")
        ),
        sa.UniqueConstraint(
            "credit_transaction_id", name=op.f("uq_purchases_credit_transaction_id")
        ),
    )
    op.create_index("ix_purchases_user_id_created_at", "purchases", ["user_id", "created_at"])
    op.create_index("ix_purchases_stripe_subscription_id", "purchases", ["stripe_subscription_id"])


def _create_events_and_subscriptions() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("purchase_id", sa.String(length=40), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        _check("outcome IN ('applied', 'ignored')", "stripe_events", "outcome_known"),
        _foreign_key("stripe_events", "purchase_id", "purchases", "id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_table(
        "stripe_subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("current_period_end", UTCDateTime(), nullable=True),
        *_stamps(),
        _foreign_key("stripe_subscriptions", "user_id", "wallets", "user_id"),
        _foreign_key("stripe_subscriptions", "plan", "plans", "name"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_subscriptions")),
    )
    op.create_index("ix_stripe_subscriptions_user_id", "stripe_subscriptions", ["user_id"])


def _create_auto_recharge() -> None:
    table = "auto_recharge_settings"
    op.create_table(
        table,
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("threshold_tokens", sa.BigInteger(), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("payment_method_id", sa.String(length=255), nullable=True),
        sa.Column("disabled_reason", sa.String(length=500), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _check(
            f"threshold_tokens > 0 AND threshold_tokens <= {MAX_TOKENS}",
            table,
            "threshold_in_range",
        ),
        _check("(pack_id IS NULL) <> (amount_cents IS NULL)", table, "pack_or_amount"),
        _check(
            f"amount_cents IS NULL OR (amount_cents > 0 AND amount_cents <= {MAX_PRICE_CENTS})",
            table,
            "amount_in_range",
        ),
        _check("NOT enabled OR payment_method_id IS NOT NULL", table, "enabled_has_payment_method"),
        _foreign_key(table, "user_id", "wallets", "user_id"),
        _foreign_key(table, "pack_id", "token_packs", "id"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_auto_recharge_settings")),
    )
    op.create_table(
        "recharges",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("wallet_id", BIG_ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("available_tokens", sa.BigInteger(), nullable=False),
        sa.Column("purchase_id", sa.String(length=40), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        *_stamps(),
        _check(
            "status IN ('queued', 'processing', 'succeeded', 'failed')", "recharges", "status_known"
        ),
        _foreign_key("recharges", "wallet_id", "wallets", "id"),
        _foreign_key("recharges", "purchase_id", "purchases", "id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recharges")),
    )
    op.create_index(
        "ix_recharges_one_in_flight",
        "recharges",
        ["wallet_id"],
        unique=True,
        postgresql_where=sa.text(IN_FLIGHT),
        sqlite_where=sa.text(IN_FLIGHT),
    )
    op.create_index("ix_recharges_status", "recharges", ["status"])


# --- triggers -------------------------------------------------------------------------------

# A change that takes the available tokens (balance minus held) across the armed
# threshold, downward, on an active wallet. Evaluated by the database per updated
# row without calling anything: a debit that does not cross costs next to nothing.
CROSSING = (
    "NEW.recharge_below_tokens IS NOT NULL AND NEW.status = 'active'"
    " AND NEW.balance_tokens - NEW.held_tokens < NEW.recharge_below_tokens"
    " AND OLD.balance_tokens - OLD.held_tokens >= NEW.recharge_below_tokens"
)
ARMED = "CASE WHEN NEW.enabled THEN NEW.threshold_tokens END"

POSTGRES_UP = [
    """CREATE FUNCTION tokenbank_queue_recharge() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO recharges (wallet_id, status, available_tokens, created_at, updated_at)
      VALUES (NEW.id, 'queued', NEW.balance_tokens - NEW.held_tokens, now(), now())
      ON CONFLICT (wallet_id) WHERE status IN ('queued', 'processing') DO NOTHING;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER wallets_queue_recharge AFTER UPDATE OF balance_tokens, held_tokens"
    f" ON wallets FOR EACH ROW WHEN ({CROSSING}) EXECUTE FUNCTION tokenbank_queue_recharge()",
    f"""CREATE FUNCTION tokenbank_arm_recharge() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE wallets SET recharge_below_tokens = {ARMED} WHERE user_id = NEW.user_id;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER auto_recharge_settings_arm AFTER INSERT OR UPDATE"
    " ON auto_recharge_settings FOR EACH ROW EXECUTE FUNCTION tokenbank_arm_recharge()",
]
POSTGRES_DOWN = [
    "DROP TRIGGER auto_recharge_settings_arm ON auto_recharge_settings",
    "DROP FUNCTION tokenbank_arm_recharge()",
    "DROP TRIGGER wallets_queue_recharge ON wallets",
    "DROP FUNCTION tokenbank_queue_recharge()",
]

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_UP = [
    "CREATE TRIGGER wallets_queue_recharge AFTER UPDATE OF balance_tokens, held_tokens"
    f" ON wallets FOR EACH ROW WHEN {CROSSING} BEGIN"
    " INSERT OR IGNORE INTO recharges"
    " (wallet_id, status, available_tokens, created_at, updated_at)"
    f" VALUES (NEW.id, 'queued', NEW.balance_tokens - NEW.held_tokens, {SQLITE_NOW},"
    f" {SQLITE_NOW}); END",
    *(
        f"CREATE TRIGGER auto_recharge_settings_arm_{event.lower()} AFTER {event}"
        " ON auto_recharge_settings FOR EACH ROW BEGIN"
        f" UPDATE wallets SET recharge_below_tokens = {ARMED} WHERE user_id = NEW.user_id; END"
        for event in ("INSERT", "UPDATE")
    ),
]
SQLITE_DOWN = [
    "DROP TRIGGER auto_recharge_settings_arm_update",
    "DROP TRIGGER auto_recharge_settings_arm_insert",
    "DROP TRIGGER wallets_queue_recharge",
]


def _add_columns() -> None:
    op.add_column("wallets", sa.Column("last_purchase_at", UTCDateTime(), nullable=True))
    op.add_column("wallets", sa.Column("recharge_below_tokens", sa.BigInteger(), nullable=True))
    # A unique index rather than a constraint: SQLite adds one without rebuilding the table.
    op.add_column("plans", sa.Column("stripe_price_id", sa.String(length=255), nullable=True))
    op.create_index("uq_plans_stripe_price_id", "plans", ["stripe_price_id"], unique=True)


def upgrade() -> None:
    _add_columns()
    _create_packs_and_customers()
    _create_purchases()
    _create_events_and_subscriptions()
    _create_auto_recharge()
    for statement in SQLITE_UP if _is_sqlite() else POSTGRES_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQLITE_DOWN if _is_sqlite() else POSTGRES_DOWN:
        op.execute(statement)
    for table in (
        "recharges",
        "auto_recharge_settings",
        "stripe_subscriptions",
        "stripe_events",
        "purchases",
        "stripe_customers",
        "token_packs",
    ):
        op.drop_table(table)
    op.drop_index("uq_plans_stripe_price_id", table_name="plans")
    op.drop_column("plans", "stripe_price_id")
    op.drop_column("wallets", "recharge_below_tokens")
    op.drop_column("wallets", "last_purchase_at")

"""Settings read from ``TOKENBANK_*`` environment variables.

Every limit tokenbank enforces is named here so that it can be read, tuned and
documented in one place.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./tokenbank.db"

# Hard limits: these protect the database and the arithmetic, not business rules.
MAX_AMOUNT_TOKENS = 1_000_000_000_000  # one trillion tokens in a single operation
MAX_USER_ID_LENGTH = 128
MAX_OPERATION_TYPE_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 500
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_METADATA_BYTES = 8_192
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_HOLD_TTL_SECONDS = 7 * 24 * 3600
# A grant may expire at most this far ahead (about 100 years): a date beyond is a typo.
MAX_GRANT_DAYS = 36_525
MAX_WRITE_RETRIES = 3
MAX_REQUEST_BODY_BYTES = 64 * 1024
HOLD_SWEEP_INTERVAL_SECONDS = 30.0
# Per-key limits (issue 14): the highest request rate a key may be given, and into how
# many lots a process claims a key's minute (a process may leave at most one lot unused).
MAX_RATE_LIMIT_PER_MINUTE = 1_000_000
RATE_LIMIT_LOTS_PER_MINUTE = 20

SqliteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class Settings(BaseSettings):
    """Deployment settings; each field reads ``TOKENBANK_<FIELD>``."""

    # populate_by_name: fields with environment aliases (Stripe's) still take their
    # own name as a keyword, as every other field does.
    model_config = SettingsConfigDict(
        env_prefix="TOKENBANK_", extra="ignore", populate_by_name=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    # A read replica (a PostgreSQL hot standby) for history, statistics, dashboards and
    # exports; everything that decides money stays on database_url. None: all on one.
    read_database_url: str | None = None
    # A replica whose last replayed commit is at most this old is shown as current
    # (a busy replica is always milliseconds behind); beyond, pages say "as of".
    read_lag_tolerance_seconds: float = Field(default=5.0, ge=0, le=86_400)
    # FULL makes every commit durable across power loss; NORMAL in WAL mode may
    # lose the last commits on power loss (never on a process crash).
    sqlite_synchronous: SqliteSynchronous = "FULL"
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0, le=600_000)
    welcome_bonus_tokens: int = Field(default=10_000, ge=0, le=MAX_AMOUNT_TOKENS)
    # The welcome bonus is a promotional grant; it expires this many days after the
    # wallet opens (None: never).
    welcome_bonus_expiry_days: int | None = Field(default=None, ge=1, le=MAX_GRANT_DAYS)
    hold_default_ttl_seconds: int = Field(default=900, ge=1, le=MAX_HOLD_TTL_SECONDS)
    # Per process, plus as many overflow connections. Sized for a few dozen
    # concurrent requests per worker: a pool smaller than the concurrency opens and
    # closes overflow connections all the time (a PostgreSQL backend fork each),
    # measured at -35% on balance reads with 16 concurrent requests per worker.
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100, le=600_000)
    # A single-app deployment can name its key here instead of running
    # `tokenbank apps create` (the billing defaults' BILLING_SECRET); it has every scope.
    api_key: SecretStr | None = None
    api_key_app: str = "default"
    # Where users buy tokens: 402 answers carry {public_url}/tokens.
    public_url: str = "http://127.0.0.1:8000"
    tokens_per_usd: int = Field(default=10_000, ge=1, le=MAX_AMOUNT_TOKENS)
    max_request_body_bytes: int = Field(default=MAX_REQUEST_BODY_BYTES, ge=1024, le=10_485_760)
    hold_sweep_interval_seconds: float = Field(default=HOLD_SWEEP_INTERVAL_SECONDS, ge=0)

    # --- user identity for apps (issue 4: the client SDK) ---------------------------------
    # Signs the HS256 JWTs that `tokenbank users token` mints (option B in
    # docs/compatibility.md): an app given the same secret verifies them with
    # tokenbank.client.verify_jwt.
    jwt_secret: SecretStr | None = None

    # Group commit: concurrent operations of one process share a transaction and a
    # commit (decision 8, docs/architecture.md). Off, each operation commits on its own.
    group_commit: bool = True
    group_commit_max_batch_operations: int = Field(default=256, ge=1, le=10_000)
    # Batches one process writes at once on PostgreSQL (SQLite: always 1). More than
    # one splits the same traffic into smaller batches that queue on each other's
    # row locks: measured on one hot wallet, 1 gave 1,206 deducts/s, 4 gave 613;
    # on uniform traffic they were level.
    group_commit_inflight_batches: int = Field(default=1, ge=1, le=64)

    # --- jobs (issue 11: renewals) -----------------------------------------------------------
    # When `tokenbank jobs run` renews plan allocations: a five-field cron expression
    # in UTC (the embedded API's get_cron_expression: daily at 02:00).
    renewal_cron: str = "0 2 * * *"
    # Users renewed per transaction-by-transaction batch of the job.
    renewal_batch_limit: int = Field(default=1_000, ge=1, le=100_000)
    # How often the jobs worker sweeps expired grants and holds.
    sweep_interval_seconds: float = Field(default=60.0, ge=1, le=86_400)

    # --- payments (issue 12: Stripe, decision 14) -------------------------------------------
    # The billing defaults' names (STRIPE_SECRET_KEY, VITE_STRIPE_PUBLISHABLE_KEY,
    # STRIPE_WEBHOOK_SECRET) are read too. The secret key and the webhook secret are
    # never logged and never answered; the publishable key is served to pages.
    stripe_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TOKENBANK_STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY"),
    )
    stripe_publishable_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TOKENBANK_STRIPE_PUBLISHABLE_KEY", "VITE_STRIPE_PUBLISHABLE_KEY"
        ),
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TOKENBANK_STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"),
    )
    # Another Stripe API server (tests: localstripe on loopback); None: Stripe's own.
    stripe_api_base: str | None = None
    # Where the billing page loads Stripe.js from for its card form (with a publishable
    # key); empty: not loaded, the page says the card form is unavailable (the tests,
    # which must not reach js.stripe.com).
    stripe_js_url: str = Field(default="https://js.stripe.com/v3/", max_length=2_048)
    # How old a webhook's signed timestamp may be (Stripe's SDK default: 300 s).
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    # The smallest custom-amount purchase (billing defaults: $5.00).
    minimum_purchase_cents: int = Field(default=500, ge=1, le=100_000_000)
    # What the currency of a custom amount is.
    purchase_currency: str = Field(default="usd", pattern="^[a-z]{3}$")
    # How many queued auto-recharges one pass of the jobs worker charges.
    recharge_batch_limit: int = Field(default=100, ge=1, le=10_000)
    # How often `tokenbank jobs run` charges queued auto-recharges (with a Stripe key):
    # a wallet that crossed its threshold waits at most about this long.
    recharge_interval_seconds: float = Field(default=10.0, ge=1, le=86_400)

    # --- people (issue 13: accounts, sign-in, pages; decision 17) ------------------------
    # Self sign-up at /signup (a new wallet and its welcome bonus, once).
    signup_enabled: bool = True
    session_ttl_hours: int = Field(default=24 * 7, ge=1, le=24 * 90)
    # Secure: the session cookie only over HTTPS (turn on behind TLS).
    cookie_secure: bool = False
    # Option A (shared sign-in across subdomains): e.g. ".example.com"; None: this host.
    cookie_domain: str | None = None
    # Sign-ins: slowed from this many failures in a row, locked after that many.
    sign_in_slow_after_failures: int = Field(default=3, ge=1, le=100)
    sign_in_slowdown_seconds: float = Field(default=1.0, ge=0, le=5)
    sign_in_lock_after_failures: int = Field(default=10, ge=2, le=1_000)
    sign_in_lock_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Option B: the lifetime of the JWT POST /auth/token gives a signed-in user.
    user_jwt_ttl_seconds: int = Field(default=3_600, ge=60, le=86_400)
    # Alerts on the user's pages (the billing defaults: 1,000 and 100 tokens).
    low_balance_tokens: int = Field(default=1_000, ge=0, le=MAX_AMOUNT_TOKENS)
    critical_balance_tokens: int = Field(default=100, ge=0, le=MAX_AMOUNT_TOKENS)
    # Origins allowed to embed the balance widget (CORS), comma-separated.
    widget_origins: str = ""

    # --- operations (issue 14: metrics and logs) -----------------------------------------
    # /metrics answers without a key: for a port only Prometheus reaches (a private
    # network, or a proxy that does not pass /metrics on). Off, it takes a key with
    # the admin scope (Prometheus: `authorization: {credentials_file: ...}`).
    metrics_public: bool = False
    # Logs: one JSON object a line (json), or lines for a person to read (text).
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One tokenbank.access line per request (method, path without its query, route,
    # status, duration, request id).
    access_log: bool = True

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    # --- events to apps (issue 14; decision 15) ------------------------------------------
    # How often `tokenbank jobs run` delivers due webhooks: the lag of a first delivery.
    webhook_interval_seconds: float = Field(default=2.0, ge=0.05, le=3_600)
    # How long a receiver may take to answer one delivery.
    webhook_timeout_seconds: float = Field(default=10.0, ge=0.1, le=120)
    # How many deliveries one pass claims (and sends concurrently).
    webhook_batch_limit: int = Field(default=50, ge=1, le=1_000)
    # The waits before each retry (the Standard Webhooks schedule, about three days in
    # all), each with +-20 % jitter; after the last one fails, the delivery is dead.
    webhook_retry_seconds: list[float] = Field(
        default=[5, 300, 1_800, 7_200, 18_000, 36_000, 36_000, 36_000, 36_000, 36_000, 36_000],
        min_length=1,
        max_length=50,
    )

    @field_validator("renewal_cron")
    @classmethod
    def _known_cron(cls, value: str) -> str:
        # The scheduler's own parser decides, so the setting and the job never disagree.
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as error:
            raise ValueError(f"not a cron expression ({error})") from None
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

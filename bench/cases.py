"""What is measured: the cases, the targets they run on, and the ratios between them."""

from __future__ import annotations

from dataclasses import dataclass

HOT_USER = "bench-hot"  # bench/populate.py's names
FEATURE_ID = "bench-feature"
FEATURE_FIXED_TOKENS = 3
HOLD_CAPTURE_TOKENS = 7  # bench/lua/hold_capture.lua


@dataclass(frozen=True)
class Case:
    """One benchmark case: how it is loaded and on which targets."""

    name: str
    number: int
    title: str
    kind: str  # "wrk", "embedded", "pgbench" or "pages"
    targets: tuple[str, ...]
    script: str = "static.lua"
    path: str = "/"
    mutating: bool = False
    tokens_per_op: int = 0  # what one acknowledged operation adds to tokens_consumed
    unit: str = "req/s"


CASES: tuple[Case, ...] = (
    Case("bare", 1, "bare ASGI app answering {}", "wrk", ("bare",)),
    Case("ping", 2, "no-op GET /api/ping (auth, no DB)", "wrk", ("sqlite", "postgres", "peer"),
         path="/api/ping"),
    Case("balance", 3, "balance read", "wrk", ("sqlite", "postgres", "peer"),
         script="balance.lua"),
    Case("deduct", 4, "deduct, 1 of N users uniformly", "wrk",
         ("sqlite", "postgres", "sqlite-normal", "peer"), script="deduct.lua", mutating=True,
         tokens_per_op=1),
    Case("hot", 5, "deduct, one hot user", "wrk", ("sqlite", "postgres", "peer"),
         script="deduct.lua", mutating=True, tokens_per_op=1),
    Case("hold", 6, "hold then capture (pairs)", "wrk", ("sqlite", "postgres"),
         script="hold_capture.lua", mutating=True, tokens_per_op=HOLD_CAPTURE_TOKENS,
         unit="pairs/s"),
    Case("process", 7, "token-process start then end (pairs)", "wrk", ("sqlite", "postgres"),
         script="token_process.lua", mutating=True, tokens_per_op=FEATURE_FIXED_TOKENS,
         unit="pairs/s"),
    Case("embedded", 8, "embedded debit, 8 tasks, no HTTP", "embedded", ("sqlite", "postgres"),
         mutating=True, tokens_per_op=1, unit="ops/s"),
    Case("pgbench", 9, "pgbench tpcb-like (raw DB baseline)", "pgbench", ("postgres",),
         unit="TPS"),
    # Last: it adds debits until the database holds PAGE_ENTRIES ledger entries.
    Case("pages", 10, "pages, 100,000 entries (slowest page's p50/p99)", "pages",
         ("sqlite", "postgres"), unit="pages/s"),
)  # fmt: skip
PAGE_ENTRIES = 100_000
PAGE_TARGET_MS = 100.0
CASE_BY_NAME = {case.name: case for case in CASES}
BACKENDS = ("sqlite", "postgres")
# --scale: the uniform deduct (case 4) on a database of a million users and ten million
# ledger entries (bench/scale.py), beside the same case on the usual database.
SCALE_TARGET = "postgres-scale"
SCALE_CASE = "deduct"
SCALE_USERS = 1_000_000
SCALE_ENTRIES = 10_000_000
SCALE_RATIO_TARGET = 0.9
PEAK_RSS_TARGET_MIB = 150.0
# Which backend a target belongs to (sqlite-normal is the SQLite case at NORMAL).
TARGET_BACKEND = {
    "bare": None,
    "sqlite": "sqlite",
    "sqlite-normal": "sqlite",
    "postgres": "postgres",
    "peer": "postgres",  # bench/peer_app.py, on a database of its own
    SCALE_TARGET: "postgres",  # bench/scale.py's database, on the same PostgreSQL
}
TARGET_LABEL = {
    "bare": "-",
    "sqlite": "sqlite FULL",
    "sqlite-normal": "sqlite NORMAL",
    "postgres": "postgres",
    "peer": "peer (Starlette + asyncpg)",
    SCALE_TARGET: "postgres at --scale size",
}


@dataclass(frozen=True)
class Ratio:
    """A ratio of two medians of the run, and the target it should meet."""

    label: str
    numerator: tuple[str, str]  # (run key, metric)
    denominator: tuple[str, str] | None  # None: the numerator is compared as it is
    target: float
    at_least: bool  # True: value >= target; False: value <= target


# The targets of the performance issue against the peer (issue 15): PostgreSQL
# durable, medians of one run.
RATIOS: tuple[Ratio, ...] = (
    # Against the peer (bench/peer_app.py), on one PostgreSQL, same uvicorn and workers.
    Ratio("deduct(4): tokenbank / peer", ("deduct/postgres", "rate"),
          ("deduct/peer", "rate"), 1.5, True),
    Ratio("hot user(5): tokenbank / peer", ("hot/postgres", "rate"),
          ("hot/peer", "rate"), 1.5, True),
    Ratio("balance read(3): tokenbank / peer", ("balance/postgres", "rate"),
          ("balance/peer", "rate"), 1.0, True),
    Ratio("no-op(2): tokenbank / peer", ("ping/postgres", "rate"),
          ("ping/peer", "rate"), 0.9, True),
    Ratio("deduct p99(4): tokenbank / peer", ("deduct/postgres", "p99_ms"),
          ("deduct/peer", "p99_ms"), 1.0, False),
    Ratio("hold+capture pairs(6) / deduct(4), postgres", ("hold/postgres", "rate"),
          ("deduct/postgres", "rate"), 0.5, True),
    Ratio("token-process pairs(7) / deduct(4), postgres", ("process/postgres", "rate"),
          ("deduct/postgres", "rate"), 0.5, True),
    Ratio("embedded debits/s(8) / pgbench TPS(9)", ("embedded/postgres", "rate"),
          ("pgbench/postgres", "rate"), 2.0, True),
    Ratio("deduct(4): sqlite FULL / postgres", ("deduct/sqlite", "rate"),
          ("deduct/postgres", "rate"), 1.0, True),
    Ratio("peak RSS per server worker MiB, deduct(4), postgres",
          ("deduct/postgres", "peak_rss_max_mib"), None, PEAK_RSS_TARGET_MIB, False),
    # Not a ratio: the pages' target is a time on the server (ms).
    Ratio("slowest page p99 ms(10), postgres", ("pages/postgres", "p99_ms"), None,
          PAGE_TARGET_MS, False),
    Ratio("slowest page p99 ms(10), sqlite", ("pages/sqlite", "p99_ms"), None,
          PAGE_TARGET_MS, False),
)  # fmt: skip
# The first performance issue's targets, printed for reference, on both engines.
REFERENCE_RATIOS: tuple[Ratio, ...] = (
    Ratio("deduct(4) / no-op(2), postgres", ("deduct/postgres", "rate"),
          ("ping/postgres", "rate"), 0.6, True),
    Ratio("deduct(4) / bare floor(1), postgres", ("deduct/postgres", "rate"),
          ("bare/bare", "rate"), 0.3, True),
    Ratio("hot user(5) / uniform deduct(4), postgres", ("hot/postgres", "rate"),
          ("deduct/postgres", "rate"), 0.9, True),
    Ratio("deduct p99 / no-op p99, postgres", ("deduct/postgres", "p99_ms"),
          ("ping/postgres", "p99_ms"), 3.0, False),
    Ratio("sqlite FULL / NORMAL deduct", ("deduct/sqlite", "rate"),
          ("deduct/sqlite-normal", "rate"), 0.5, True),
    Ratio("deduct(4) / no-op(2), sqlite", ("deduct/sqlite", "rate"),
          ("ping/sqlite", "rate"), 0.6, True),
    Ratio("deduct(4) / bare floor(1), sqlite", ("deduct/sqlite", "rate"),
          ("bare/bare", "rate"), 0.3, True),
    Ratio("hot user(5) / uniform deduct(4), sqlite", ("hot/sqlite", "rate"),
          ("deduct/sqlite", "rate"), 0.9, True),
    Ratio("embedded debits/s(8), sqlite / pgbench TPS(9)", ("embedded/sqlite", "rate"),
          ("pgbench/postgres", "rate"), 3.0, True),
    Ratio("deduct p99 / no-op p99, sqlite", ("deduct/sqlite", "p99_ms"),
          ("ping/sqlite", "p99_ms"), 3.0, False),
)  # fmt: skip


def scale_ratios(users: int, entries: int) -> tuple[Ratio, ...]:
    """--scale's ratio and peak RSS, labelled with the sizes the run built."""
    size = f"{users:,} users/{entries:,} entries"
    scale_key, usual_key = f"{SCALE_CASE}/{SCALE_TARGET}", f"{SCALE_CASE}/postgres"
    return (
        Ratio(f"deduct(4) at {size} / deduct(4), postgres", (scale_key, "rate"),
              (usual_key, "rate"), SCALE_RATIO_TARGET, True),
        Ratio(f"peak RSS per server worker MiB, deduct(4) at {size}",
              (scale_key, "peak_rss_max_mib"), None, PEAK_RSS_TARGET_MIB, False),
        Ratio("peak RSS per server worker MiB, deduct(4), postgres",
              (usual_key, "peak_rss_max_mib"), None, PEAK_RSS_TARGET_MIB, False),
    )  # fmt: skip

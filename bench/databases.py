"""The databases: filling them (bench/populate.py), auditing them, checking their ledger."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.cases import Case
from bench.common import BENCH, PYTHON, BenchFailure, log, tail
from bench.processes import CHILDREN, clean_env, tokenbank_cli
from bench.runs import Run, unanswered
from tokenbank.testing.postgres import find_bin_dir

PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench",)
SETUP_PROCESSES = 2  # bench/populate.py processes filling a PostgreSQL database
AUDIT_COUNTS = re.compile(r"^(\d+) transactions, (\d+) entries, (\d+) wallets", re.MULTILINE)
AUDIT_CONSUMED = re.compile(r"system account tokens_consumed: (-?\d+)")


@dataclass
class Database:
    """A database the harness filled, with its API key and the last audit snapshot."""

    backend: str
    url: str
    key: str = ""
    transactions: int = 0
    consumed: int = 0
    entries: int = 0  # ledger entries and wallets at the last audit
    wallets: int = 0
    audits: int = 0
    audit_seconds: float = 0.0
    audit_timeout_seconds: float = 600.0  # bench/scale.py's ledger takes longer


def audit(database: Database) -> tuple[int, int]:
    """Run `tokenbank audit` (it must pass); the ledger's transaction count and usage."""
    started = time.monotonic()
    if database.backend == "peer":
        output = _peer_audit(database.url)
    else:
        output = tokenbank_cli(
            "audit", database_url=database.url, timeout=database.audit_timeout_seconds
        )
    database.audits += 1
    database.audit_seconds += time.monotonic() - started
    counts = AUDIT_COUNTS.search(output)
    if "audit passed" not in output or counts is None:
        raise BenchFailure(f"tokenbank audit did not pass on {database.backend}:\n{output}")
    database.entries, database.wallets = int(counts.group(2)), int(counts.group(3))
    consumed = AUDIT_CONSUMED.search(output)
    return int(counts.group(1)), int(consumed.group(1)) if consumed else 0


def _peer_audit(url: str) -> str:
    """bench/peer_app.py's books, in `tokenbank audit`'s words."""
    command = [PYTHON, str(BENCH / "peer_app.py"), "audit", url]
    result = subprocess.run(
        command, env=clean_env(), capture_output=True, text=True, timeout=600, check=False
    )
    return result.stdout + result.stderr


# Requests in flight when the load stopped may still commit after the server went idle
# (a worker waiting on a durable commit uses no CPU): audit until two audits agree, so
# that late commits land in this run's check and not in the next run's.
SETTLE_SECONDS = 0.5
SETTLE_TIMEOUT_SECONDS = 20.0


def settled_audit(database: Database) -> tuple[int, int]:
    """:func:`audit`, repeated until the ledger stops changing.

    At least twice, however long one audit takes (at --scale sizes, longer than the
    timeout, which bounds how long the ledger may keep changing, not the audits)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    counts = audit(database)
    while True:
        time.sleep(SETTLE_SECONDS)
        again = audit(database)
        if again == counts:
            return counts
        counts = again
        if time.monotonic() >= deadline:
            break
    raise BenchFailure(
        f"the {database.backend} ledger kept changing {SETTLE_TIMEOUT_SECONDS:.0f}s after the"
        " load stopped"
    )


# --- filling ----------------------------------------------------------------------------


def populate(
    database: Database,
    users: int,
    workdir: Path,
    *,
    processes: int = 1,
    on_base: Callable[[], None] | None = None,
) -> float:
    """bench/populate.py: the base (schema, key, feature, plan, hot user) and `users`
    users, shared between `processes` processes; the seconds it took.

    The first process lays the base, then fills its share; the others start once the
    base is there (so does `on_base`, e.g. a server). Then `tokenbank audit` must
    pass, and its counts are the ledger checks' starting point.
    """
    started = time.monotonic()
    bounds = [users * share // processes for share in range(processes + 1)]
    first = _launch_share(database, bounds, 0, workdir)
    others: list[tuple[int, subprocess.Popen[str]]] = []
    assert first.stdout is not None
    printed = []
    for line in first.stdout:
        printed.append(line)
        if line.startswith('{"schema"'):
            database.key = str(json.loads(line)["key"])
            if on_base is not None:
                on_base()
            others = [
                (share, _launch_share(database, bounds, share, workdir))
                for share in range(1, processes)
            ]
    first.wait()
    outputs = [(0, first, "".join(printed))]
    if first.returncode == 0:
        for share, process in others:
            stdout, _ = process.communicate()
            outputs.append((share, process, stdout))
    _check_shares(database, outputs, workdir)
    database.transactions, database.consumed = audit(database)
    return time.monotonic() - started


def _launch_share(
    database: Database, bounds: list[int], share: int, workdir: Path
) -> subprocess.Popen[str]:
    """Start bench/populate.py for users bounds[share] to bounds[share + 1] (share 0: --base)."""
    command = [PYTHON, str(BENCH / "populate.py"), "--database-url", database.url]
    command += ["--first", str(bounds[share]), "--last", str(bounds[share + 1])]
    errors = (workdir / f"populate-{database.backend}-{share}.log").open("w")
    process = subprocess.Popen(
        [*command, "--base"] if share == 0 else command,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=workdir,
    )
    errors.close()  # the child has its own descriptor
    CHILDREN.append(process)
    return process


def _check_shares(
    database: Database, outputs: list[tuple[int, subprocess.Popen[str], str]], workdir: Path
) -> None:
    """Every populate process succeeded and printed its result; the base gave a key."""
    for share, process, stdout in outputs:
        if process.returncode != 0 or not stdout.strip():
            log_path = workdir / f"populate-{database.backend}-{share}.log"
            raise BenchFailure(
                f"populating {database.backend} (share {share}) failed:\n{stdout}{tail(log_path)}"
            )
    if not database.key.startswith("tb_"):
        raise BenchFailure(f"bench/populate.py gave no API key for {database.backend}")


def find_pgbench() -> str:
    """pgbench of the Debian package, or beside the PostgreSQL server binaries."""
    for candidate in PGBENCH_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    found = find_bin_dir() / "pgbench"
    if found.is_file():
        return str(found)
    raise BenchFailure("pgbench not found (Debian package postgresql-15 ships it)")


# --- the ledger check -------------------------------------------------------------------


def check_ledger(database: Database, case: Case, run: Run, warmup: tuple[int, int]) -> None:
    """The audit passes, and the ledger holds exactly the acknowledged operations.

    wrk stops at its deadline with up to one request per connection in flight: the
    server may still commit those, unacknowledged. So the rule is: every
    acknowledged operation is on the ledger, and at most the unanswered requests
    besides (`unanswered` = requests sent - responses received). Each ledger
    transaction must also have moved exactly one operation's tokens. `warmup`:
    (acknowledged, unanswered) of a warm-up run since the last check, if any.
    """
    transactions, consumed = settled_audit(database)
    added = transactions - database.transactions
    consumed_added = consumed - database.consumed
    database.transactions, database.consumed = transactions, consumed
    warmup_acknowledged, warmup_unanswered = warmup
    acknowledged = int(run.detail.get("ops", 0)) + warmup_acknowledged
    in_flight = unanswered(run) + warmup_unanswered
    run.ledger = {
        "audit": "passed",
        "includes_warmup": bool(warmup_acknowledged or warmup_unanswered),
        "acknowledged": acknowledged,
        "ledger_transactions_added": added,
        "unanswered_at_deadline": in_flight,
        "committed_unacknowledged": added - acknowledged,
        "tokens_consumed_added": consumed_added,
        "tokens_per_operation": case.tokens_per_op,
    }
    problems = _ledger_problems(case, added, acknowledged, in_flight, consumed_added)
    if problems:
        run.ledger["problems"] = problems
        raise BenchFailure(f"LEDGER CHECK FAILED on {run.key}: " + "; ".join(problems))
    log(
        f"    {run.key}: audit passed; ledger +{added} = {acknowledged} acknowledged"
        f" + {added - acknowledged} committed in flight (<= {in_flight} unanswered)"
    )


def _ledger_problems(
    case: Case, added: int, acknowledged: int, in_flight: int, consumed_added: int
) -> list[str]:
    problems = []
    if added < acknowledged:
        problems.append(f"{acknowledged - added} acknowledged operations are not on the ledger")
    if added > acknowledged + in_flight:
        problems.append(
            f"the ledger has {added - acknowledged} operations more than were"
            f" acknowledged, with only {in_flight} requests unanswered"
        )
    if consumed_added != added * case.tokens_per_op:
        problems.append(
            f"tokens consumed grew by {consumed_added}, expected {added} x {case.tokens_per_op}"
        )
    return problems

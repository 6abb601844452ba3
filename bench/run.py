#!/usr/bin/env python3
"""`make bench`: tokenbank's benchmark harness, every case in one run, side by side.

It starts what it measures itself: a bare ASGI app (the floor of Python HTTP here),
`tokenbank serve` on a fresh SQLite file (synchronous FULL, and a copy served with
NORMAL) and on a fresh database of a PostgreSQL it starts (tests/support/postgres.py).
It loads each server from a separate process over loopback with `wrk` and a Lua
script per case, bounded in time; runs the embedded `debit` (no HTTP) and `pgbench`
on the same PostgreSQL; repeats every case in alternating order; and prints one
table of medians and the ratios issue 5 asks for, with a JSON file of everything.

A fast wrong answer is worth nothing: after every run of a mutating case it runs
`tokenbank audit` (it must pass) and checks the ledger against what the load
generator saw acknowledged. It stops at the first failure, loudly.

    .venv/bin/python bench/run.py            # full run (~10-15 min), updates bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # smoke run, under a minute
    .venv/bin/python bench/run.py --cases deduct,ping --backends postgres --repeats 5
    .venv/bin/python bench/run.py --profile deduct/postgres   # py-spy flame graph of the server
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LUA = BENCH / "lua"
RESULTS_DIR = BENCH / "results"
RESULTS_MD = BENCH / "RESULTS.md"
sys.path.insert(0, str(REPO))  # tests.support.postgres: the suite's throwaway PostgreSQL

from tests.support.postgres import PostgresServer  # noqa: E402

PYTHON = sys.executable
HOST = "127.0.0.1"
HOT_USER = "bench-hot"  # bench/populate.py's names
FEATURE_ID = "bench-feature"
FEATURE_FIXED_TOKENS = 3
HOLD_CAPTURE_TOKENS = 7  # bench/lua/hold_capture.lua
PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench",)
SERVER_START_TIMEOUT_S = 60.0
SETUP_PROCESSES = 2  # bench/populate.py processes filling a PostgreSQL database

# --- what is measured ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    number: int
    title: str
    kind: str  # "wrk", "embedded" or "pgbench"
    targets: tuple[str, ...]
    script: str = "static.lua"
    path: str = "/"
    mutating: bool = False
    tokens_per_op: int = 0  # what one acknowledged operation adds to tokens_consumed
    unit: str = "req/s"


CASES: tuple[Case, ...] = (
    Case("bare", 1, "bare ASGI app answering {}", "wrk", ("bare",)),
    Case("ping", 2, "no-op GET /api/ping (auth, no DB)", "wrk", ("sqlite", "postgres"),
         path="/api/ping"),
    Case("balance", 3, "balance read", "wrk", ("sqlite", "postgres"), script="balance.lua"),
    Case("deduct", 4, "deduct, 1 of N users uniformly", "wrk",
         ("sqlite", "postgres", "sqlite-normal"), script="deduct.lua", mutating=True,
         tokens_per_op=1),
    Case("hot", 5, "deduct, one hot user", "wrk", ("sqlite", "postgres"), script="deduct.lua",
         mutating=True, tokens_per_op=1),
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
)  # fmt: skip
CASE_BY_NAME = {case.name: case for case in CASES}
BACKENDS = ("sqlite", "postgres")
# Which backend a target belongs to (sqlite-normal is the SQLite case at NORMAL).
TARGET_BACKEND = {
    "bare": None,
    "sqlite": "sqlite",
    "sqlite-normal": "sqlite",
    "postgres": "postgres",
}
TARGET_LABEL = {
    "bare": "-",
    "sqlite": "sqlite FULL",
    "sqlite-normal": "sqlite NORMAL",
    "postgres": "postgres",
}


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: tuple[str, str]  # (run key, metric)
    denominator: tuple[str, str]
    target: float
    at_least: bool  # True: value >= target; False: value <= target


RATIOS: tuple[Ratio, ...] = (
    Ratio("deduct(4) / no-op(2), postgres", ("deduct/postgres", "rate"),
          ("ping/postgres", "rate"), 0.6, True),
    Ratio("deduct(4) / bare floor(1), postgres", ("deduct/postgres", "rate"),
          ("bare/bare", "rate"), 0.3, True),
    Ratio("hot user(5) / uniform deduct(4), postgres", ("hot/postgres", "rate"),
          ("deduct/postgres", "rate"), 0.9, True),
    Ratio("embedded debits/s(8) / pgbench TPS(9)", ("embedded/postgres", "rate"),
          ("pgbench/postgres", "rate"), 3.0, True),
    Ratio("deduct p99 / no-op p99, postgres", ("deduct/postgres", "p99_ms"),
          ("ping/postgres", "p99_ms"), 3.0, False),
    Ratio("sqlite FULL / NORMAL deduct", ("deduct/sqlite", "rate"),
          ("deduct/sqlite-normal", "rate"), 0.5, True),
)  # fmt: skip
# The same ratios on SQLite, printed for reference (no target of their own).
SQLITE_RATIOS: tuple[Ratio, ...] = (
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


# Child processes that may run for long (populate, pgbench -i, warm-ups, embedded):
# stopped by their ids when the harness is interrupted.
CHILDREN: list[subprocess.Popen[Any]] = []


def terminate_children() -> None:
    for child in CHILDREN:
        if child.poll() is None:
            with contextlib.suppress(OSError):
                child.terminate()
    for child in CHILDREN:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)


class BenchFailure(RuntimeError):
    """Something the numbers cannot be trusted after: stop and say so."""


# --- options ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Run every benchmark case against the same build and print one table.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repeat of 1 s, 200 users, no warm-up (< 1 min)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn workers of every server (default 2)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="wrk connections and pgbench clients (default 32)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="wrk threads and pgbench jobs (default: CPUs, at most --connections)",
    )
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per measured run (default 10; quick 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds of unmeasured load per case before its first run (default 2; quick 0)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of every case; medians are reported (default 3; quick 1)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help="users with large balances per database (default 10000; quick 200)",
    )
    parser.add_argument("--tasks", type=int, default=8, help="embedded debit tasks (default 8)")
    parser.add_argument(
        "--pgbench-scale",
        type=int,
        default=None,
        help="pgbench -i scale factor (default: --connections; quick 1)",
    )
    parser.add_argument(
        "--cases",
        default="all",
        help="comma-separated: " + ",".join(CASE_BY_NAME) + " (default all)",
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="comma-separated: sqlite,postgres (default both)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to write the JSON (default bench/results/bench-<time>.json)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="CASE[/TARGET]",
        help="run only this case once under py-spy (e.g. deduct/postgres);"
        " writes the profile into bench/results/",
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "speedscope", "raw"),
        default="flamegraph",
        help="py-spy output: SVG, speedscope JSON, or raw collapsed stacks (bench/profile_top.py"
        " summarises those)",
    )
    parser.add_argument(
        "--pg-nondurable",
        action="store_true",
        help="run PostgreSQL as the test suite does (fsync and synchronous_commit off);"
        " default: durable, as in production",
    )
    parser.add_argument(
        "--no-results-md",
        action="store_true",
        help="do not update bench/RESULTS.md after a full run",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: print the tables of an earlier run's JSON (and, for a full"
        " run, rewrite bench/RESULTS.md from it)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TOKENBANK_* setting for every tokenbank process of the run, e.g."
        " --setting GROUP_COMMIT_INFLIGHT_BATCHES=2 (repeatable; for experiments)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary databases and logs (their path is printed)",
    )
    args = parser.parse_args(argv)

    for setting in args.setting:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            parser.error(f"--setting {setting!r}: expected NAME=VALUE")
        name = name.upper()
        EXTRA_SETTINGS[name if name.startswith("TOKENBANK_") else f"TOKENBANK_{name}"] = value
    args.duration = args.duration or (1 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.users = args.users or (200 if args.quick else 10_000)
    args.pgbench_scale = args.pgbench_scale or (1 if args.quick else args.connections)
    args.threads = args.threads or max(1, min(os.cpu_count() or 1, args.connections))
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    if min(args.duration, args.repeats, args.users, args.workers, args.connections) < 1:
        parser.error("--duration, --repeats, --users, --workers and --connections must be >= 1")

    args.backends = _split(args.backends, BACKENDS, parser, "--backends")
    args.profile_target = None
    if args.profile:
        name, _, target = args.profile.partition("/")
        case = CASE_BY_NAME.get(name)
        if case is None or case.kind == "pgbench":
            parser.error(f"--profile: a case of {', '.join(c.name for c in CASES[:8])}")
        target = target or (case.targets[1] if len(case.targets) > 1 else case.targets[0])
        if target not in case.targets:
            parser.error(f"--profile: {name} runs on {', '.join(case.targets)}")
        args.cases, args.profile_target, args.repeats = [name], target, 1
        backend = TARGET_BACKEND[target]
        args.backends = [backend] if backend else []
    else:
        args.cases = _split(args.cases, tuple(CASE_BY_NAME), parser, "--cases")
    args.full = (
        not args.quick
        and args.profile is None
        and set(args.cases) == set(CASE_BY_NAME)
        and set(args.backends) == set(BACKENDS)
    )
    return args


def _split(
    text: str, known: tuple[str, ...], parser: argparse.ArgumentParser, option: str
) -> list[str]:
    if text == "all":
        return list(known)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(
            f"{option}: unknown {', '.join(unknown) or '(none)'}; known: {', '.join(known)}"
        )
    return names


def planned_runs(args: argparse.Namespace) -> list[tuple[Case, str]]:
    """Every (case, target) this run measures, in the order of the first round."""
    runs = []
    for case in CASES:
        if case.name not in args.cases:
            continue
        for target in case.targets:
            backend = TARGET_BACKEND[target]
            if backend is not None and backend not in args.backends:
                continue
            if args.profile_target and target != args.profile_target:
                continue
            runs.append((case, target))
    return runs


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# The build every process of a run imports: a copy of src/ taken when the run starts,
# so that edits made meanwhile (others work in this tree) change no case's code.
BUILD: dict[str, Path] = {}


def snapshot_build(workdir: Path) -> str:
    """Copy src/tokenbank into the work dir; its SHA-256 over every file, in order."""
    target = workdir / "build"
    shutil.copytree(
        REPO / "src" / "tokenbank",
        target / "tokenbank",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    BUILD["path"] = target
    digest = hashlib.sha256()
    for path in sorted(p for p in (target / "tokenbank").rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --setting NAME=VALUE of the command line, for every tokenbank process.
EXTRA_SETTINGS: dict[str, str] = {}


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without TOKENBANK_* or PG* settings that would redirect a server
    (but with the run's --setting values), importing tokenbank from the run's snapshot
    of src/."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("TOKENBANK_", "PG"))
    }
    source = BUILD.get("path", REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    env.update(EXTRA_SETTINGS)
    env.update(extra)
    return env


def tokenbank_cli(*args: str, database_url: str, timeout: float = 600) -> str:
    command = [PYTHON, "-m", "tokenbank.cli", *args]
    result = subprocess.run(
        command,
        env=clean_env(TOKENBANK_DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise BenchFailure(
            f"`tokenbank {' '.join(args)}` failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    tree = proc_children()
    found, stack = [], [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def status_kib(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def wait_quiet(pids: list[int], settle: float = 0.3, timeout: float = 20.0) -> None:
    """Wait until the processes use no CPU for `settle` seconds: in-flight work done."""
    deadline = time.monotonic() + timeout
    last, quiet_since = cpu_ticks(pids), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ticks(pids)
        if now - last > 1:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
    raise BenchFailure(f"server processes {pids} still busy {timeout:.0f}s after the load stopped")


class Server:
    """One HTTP server we start (uvicorn with --workers), on a free loopback port."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        workers: int,
        log: Path,
        health_path: str,
        database_url: str | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.command = [*command, "--host", HOST, "--port", str(self.port)]
        self.env = env
        self.workers = workers
        self.log = log
        self.health_path = health_path
        self.database_url = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: we can stop all of it
                cwd=self.log.parent,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        healthy = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"{self.name} server exited early:\n{_tail(self.log)}")
            self.worker_pids = self._find_workers()
            if len(self.worker_pids) == self.workers and self._healthy():
                healthy += 1
                if healthy >= 3:
                    return
            time.sleep(0.2)
        raise BenchFailure(f"{self.name} server not ready in time:\n{_tail(self.log)}")

    def _find_workers(self) -> list[int]:
        assert self.process is not None
        if self.workers == 1:
            return [self.process.pid]
        return [pid for pid in descendants(self.process.pid) if "spawn_main" in cmdline(pid)]

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + self.health_path, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created for it
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"<no log: {error}>"


# --- the databases ------------------------------------------------------------------------


@dataclass
class Database:
    """A database the harness filled, with its API key and the last audit snapshot."""

    backend: str
    url: str
    key: str = ""
    transactions: int = 0
    consumed: int = 0
    audits: int = 0
    audit_seconds: float = 0.0


AUDIT_COUNTS = re.compile(r"^(\d+) transactions, (\d+) entries, (\d+) wallets", re.MULTILINE)
AUDIT_CONSUMED = re.compile(r"system account tokens_consumed: (-?\d+)")


def audit(database: Database) -> tuple[int, int]:
    """Run `tokenbank audit` (it must pass); the ledger's transaction count and usage."""
    started = time.monotonic()
    output = tokenbank_cli("audit", database_url=database.url)
    database.audits += 1
    database.audit_seconds += time.monotonic() - started
    counts = AUDIT_COUNTS.search(output)
    if "audit passed" not in output or counts is None:
        raise BenchFailure(f"tokenbank audit did not pass on {database.backend}:\n{output}")
    consumed = AUDIT_CONSUMED.search(output)
    return int(counts.group(1)), int(consumed.group(1)) if consumed else 0


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

    def launch(share: int) -> subprocess.Popen[str]:
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

    first = launch(0)
    others: list[tuple[int, subprocess.Popen[str]]] = []
    outputs: list[tuple[int, subprocess.Popen[str], str]] = []
    assert first.stdout is not None
    printed = []
    for line in first.stdout:
        printed.append(line)
        if line.startswith('{"schema"'):
            database.key = str(json.loads(line)["key"])
            if on_base is not None:
                on_base()
            others = [(share, launch(share)) for share in range(1, processes)]
    first.wait()
    outputs.append((0, first, "".join(printed)))
    if first.returncode == 0:
        for share, process in others:
            stdout, _ = process.communicate()
            outputs.append((share, process, stdout))
    for share, process, stdout in outputs:
        if process.returncode != 0 or not stdout.strip():
            log_path = workdir / f"populate-{database.backend}-{share}.log"
            raise BenchFailure(
                f"populating {database.backend} (share {share}) failed:\n{stdout}{_tail(log_path)}"
            )
    if not database.key.startswith("tb_"):
        raise BenchFailure(f"bench/populate.py gave no API key for {database.backend}")
    database.transactions, database.consumed = audit(database)
    return time.monotonic() - started


def find_pgbench() -> str:
    for candidate in PGBENCH_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    from tests.support.postgres import find_bin_dir

    found = find_bin_dir() / "pgbench"
    if found.is_file():
        return str(found)
    raise BenchFailure("pgbench not found (Debian package postgresql-15 ships it)")


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        subprocess.run([str(REPO / "scripts" / "ensure-wrk.sh")], check=False)
        wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchFailure("wrk is not installed and could not be installed (apt-get install wrk)")
    return wrk


# --- one measured run ---------------------------------------------------------------------


@dataclass
class Run:
    key: str  # "deduct/postgres"
    case: str
    target: str
    repeat: int  # -1 for a warm-up
    rate: float = 0.0  # operations per second (the table's number)
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    peak_rss_mib: list[float] = field(default_factory=list)
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, Any] | None = None


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokenbank-bench-"))
        self.postgres: PostgresServer | None = None
        self.servers: dict[str, Server] = {}
        self.databases: dict[str, Database] = {}
        self.runs: list[Run] = []
        # Per target: (acknowledged, unanswered) of a warm-up not yet checked.
        self.unchecked: dict[str, tuple[int, int]] = {}
        self.checks: dict[str, Future[None]] = {}
        self.checker: ThreadPoolExecutor | None = None
        self.wrk = ""
        self.pgbench = ""
        self.started = time.monotonic()
        self.build_sha256 = snapshot_build(self.workdir)
        self.setup_seconds = 0.0
        self.profiles: list[str] = []

    # --- setup -------------------------------------------------------------------------

    def setup(self, plan: list[tuple[Case, str]]) -> None:
        """Tools, databases (each backend in its own thread) and servers, in parallel."""
        started = time.monotonic()
        kinds = {case.kind for case, _ in plan}
        if "wrk" in kinds:
            self.wrk = ensure_wrk()
        if "pgbench" in kinds:
            self.pgbench = find_pgbench()
        server_targets = {target for case, target in plan if case.kind == "wrk"}
        if "bare" in server_targets:
            self._start_server("bare")
        targets = {target for _, target in plan}
        backends = sorted({b for t in targets if (b := TARGET_BACKEND[t]) is not None})
        pool = ThreadPoolExecutor(max_workers=max(1, len(backends)))
        try:
            futures = [
                pool.submit(self._prepare_backend, backend, targets, server_targets, kinds)
                for backend in backends
            ]
            for future in futures:
                future.result()  # re-raises the first failure
        except BaseException:
            terminate_children()  # so that the other thread ends too
            raise
        finally:
            pool.shutdown(wait=True)
            self.setup_seconds = time.monotonic() - started
        for server in self.servers.values():
            server.wait_ready()
            log(f"  server {server.name}: {server.base_url}, workers {server.worker_pids}")
        self._warm_servers()
        self.setup_seconds = time.monotonic() - started
        log(f"setup done in {self.setup_seconds:.0f}s (work dir {self.workdir})")

    def _prepare_backend(
        self, backend: str, targets: set[str], server_targets: set[str], kinds: set[str]
    ) -> None:
        pgbench_init = None
        if backend == "postgres":
            durability = "fsync off" if self.args.pg_nondurable else "durable"
            log(f"starting PostgreSQL ({durability}; tests/support/postgres.py) ...")
            self.postgres = PostgresServer(durable=not self.args.pg_nondurable).start()
            self.postgres.create_database("tokenbank_bench")
            database = Database("postgres", self.postgres.sync_dsn("tokenbank_bench"))
            if "pgbench" in kinds:
                self.postgres.create_database("pgbench")
                command = [self.pgbench, "-i", "-q", "-s", str(self.args.pgbench_scale)]
                pgbench_init = subprocess.Popen(
                    [*command, *self._pg_connection(), "pgbench"],
                    env=clean_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    cwd=self.workdir,
                )
                CHILDREN.append(pgbench_init)
        else:
            database = Database("sqlite", f"sqlite:///{self.workdir / 'sqlite-full.db'}")
        log(f"preparing {backend}: schema, app key, {self.args.users:,} users ...")
        self.databases[backend] = database
        early = None
        if backend == "postgres" and "postgres" in server_targets:
            # Its server can start while the users are created (SQLite's starts after
            # the copy for sqlite-normal, which wants the file closed).
            early = functools.partial(self._start_server, "postgres")
        # SQLite has one writer at a time; PostgreSQL fills faster from several processes
        # (when there are enough users to pay for starting them).
        many = backend == "postgres" and self.args.users >= 2_000
        processes = SETUP_PROCESSES if many else 1
        seconds = populate(
            database, self.args.users, self.workdir, processes=processes, on_base=early
        )
        log(f"  {backend}: {self.args.users:,} users in {seconds:.0f}s, audit passed")
        if pgbench_init is not None:
            _, stderr = pgbench_init.communicate()
            if pgbench_init.returncode != 0:
                raise BenchFailure(f"pgbench -i failed:\n{stderr.decode(errors='replace')}")
        if backend == "sqlite" and "sqlite-normal" in targets:
            # The same filled database, served at synchronous=NORMAL: a file copy (the
            # populate process has closed every connection; nothing else has it open).
            source = self.workdir / "sqlite-full.db"
            copy = self.workdir / "sqlite-normal.db"
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
            self.databases["sqlite-normal"] = replace(
                database, backend="sqlite-normal", url=f"sqlite:///{copy}"
            )
        for target in sorted(server_targets):
            if TARGET_BACKEND[target] == backend and target not in self.servers:
                self._start_server(target)

    def _pg_connection(self) -> list[str]:
        assert self.postgres is not None
        return ["-h", self.postgres.host, "-p", str(self.postgres.port), "-U", self.postgres.user]

    def _start_server(self, target: str) -> None:
        workers = str(self.args.workers)
        log = self.workdir / f"server-{target}.log"
        if target == "bare":
            command = [PYTHON, "-m", "uvicorn", "bare_app:app", "--app-dir", str(BENCH)]
            command += ["--workers", workers, "--log-level", "warning"]
            command += ["--no-access-log", "--no-server-header"]
            server = Server(target, command, clean_env(), self.args.workers, log, "/")
        else:
            database = self.databases[target]
            env = clean_env(TOKENBANK_DATABASE_URL=database.url)
            if target.startswith("sqlite"):
                synchronous = "NORMAL" if target == "sqlite-normal" else "FULL"
                env["TOKENBANK_SQLITE_SYNCHRONOUS"] = synchronous
            command = [PYTHON, "-m", "tokenbank.cli", "serve", "--no-migrate"]
            command += ["--workers", workers, "--log-level", "warning"]
            server = Server(target, command, env, self.args.workers, log, "/healthz")
        server.start()
        self.servers[target] = server

    def _warm_servers(self) -> None:
        """One second of reads on every server at once: pools filled, code paths warm.

        Reads only (the ledger is untouched); the first requests a cold worker answers
        can take a second on a busy machine, which would swallow a --quick run.
        """
        warming = []
        for target, server in self.servers.items():
            script = "static.lua" if target == "bare" else "balance.lua"
            key = self.databases[target].key if target in self.databases else "none"
            command = [self.wrk, "-t", "1", "-c", str(min(8, self.args.connections)), "-d", "1s"]
            command += ["-H", f"Authorization: Bearer {key}", "-s", str(LUA / script)]
            command += [server.base_url + "/", "--", f"users={self.args.users}"]
            warming.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            CHILDREN.append(warming[-1])
        for process in warming:
            process.wait(timeout=60)

    # --- running -----------------------------------------------------------------------

    def measure(self, plan: list[tuple[Case, str]]) -> None:
        total = len(plan) * self.args.repeats
        done = 0
        warmed: set[str] = set()
        with ThreadPoolExecutor(max_workers=2) as checker:
            self.checker = checker
            for repeat in range(self.args.repeats):
                order = plan if repeat % 2 == 0 else list(reversed(plan))
                for case, target in order:
                    key = f"{case.name}/{target}"
                    if self.args.warmup and case.kind == "wrk" and key not in warmed:
                        self._run(case, target, repeat=-1, seconds=self.args.warmup)
                        warmed.add(key)
                    done += 1
                    run = self._run(case, target, repeat=repeat, seconds=self.args.duration)
                    log(f"[{done}/{total}] {describe_run(run)}")
            for target in list(self.checks):
                self._join_check(target)

    def _run(self, case: Case, target: str, *, repeat: int, seconds: int) -> Run:
        self._join_check(target)  # this database's books are checked before it is loaded again
        run = Run(key=f"{case.name}/{target}", case=case.name, target=target, repeat=repeat)
        started = time.monotonic()
        profile = self.args.profile_target == target and repeat >= 0 and bool(self.args.profile)
        if case.kind == "wrk":
            self._run_wrk(case, target, run, seconds, profile)
        elif case.kind == "embedded":
            self._run_embedded(target, run, seconds, profile)
        else:
            self._run_pgbench(run, seconds)
        run.seconds = round(time.monotonic() - started, 2)
        self.runs.append(run)
        if case.mutating and repeat < 0:
            # A warm-up is checked with the measured run that follows it at once.
            self.unchecked[target] = (int(run.detail["ops"]), _unanswered(run))
        elif case.mutating:
            # --quick overlaps the audit with the next run on another database; a full
            # run waits for it, so that no audit runs while something is measured.
            assert self.checker is not None
            self.checks[target] = self.checker.submit(self._check_ledger, case, target, run)
            if not self.args.quick:
                self._join_check(target)
        return run

    def _join_check(self, target: str) -> None:
        check = self.checks.pop(target, None)
        if check is not None:
            check.result()  # raises the check's BenchFailure

    def _run_wrk(self, case: Case, target: str, run: Run, seconds: int, profile: bool) -> None:
        server = self.servers[target]
        database = self.databases.get(target)
        headers = ["-H", "Content-Type: application/json"]
        headers += ["-H", f"Authorization: Bearer {database.key if database else 'none'}"]
        script_args = [f"users={self.args.users}", f"feature={FEATURE_ID}"]
        if case.name == "hot":
            script_args.append(f"user={HOT_USER}")
        command = [
            self.wrk,
            "-t",
            str(self.args.threads),
            "-c",
            str(self.args.connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA / case.script),
            *headers,
            server.base_url + case.path,
            "--",
            *script_args,
        ]
        for pid in server.worker_pids:
            reset_peak_rss(pid)
        spy = (
            self._start_profiler(run, server.process.pid if server.process else 0, seconds)
            if profile
            else None
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if spy is not None:
            self._finish_profiler(spy)
        line = next(
            (ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None
        )
        if result.returncode != 0 or line is None:
            raise BenchFailure(
                f"wrk failed on {run.key} ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        counts = json.loads(line.removeprefix("BENCH_RESULT "))
        elapsed = counts["duration_us"] / 1e6
        run.rate = round(counts["ops"] / elapsed, 1)
        run.requests_per_s = round(counts["answered"] / elapsed, 1)
        run.p50_ms = round(counts["p50_us"] / 1000, 3)
        run.p99_ms = round(counts["p99_us"] / 1000, 3)
        run.errors = counts["non2xx"] + sum(
            counts[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
        )
        run.peak_rss_mib = [
            round((status_kib(pid, "VmHWM") or 0) / 1024, 1) for pid in server.worker_pids
        ]
        run.detail = counts

    def _run_embedded(self, target: str, run: Run, seconds: int, profile: bool) -> None:
        database = self.databases[target]
        command = [
            PYTHON,
            str(BENCH / "embedded_debits.py"),
            "--database-url",
            database.url,
            "--no-prepare",
            "--users",
            str(self.args.users),
            "--tasks",
            str(self.args.tasks),
            "--seconds",
            str(seconds),
            "--json",
        ]
        if profile:
            output = self._profile_path(run)
            self.profiles.append(str(output))
            log(f"profiling {run.key} with py-spy into {output}")
            command = [*self._py_spy_record(output, None), "--", *command]
        env = clean_env(TOKENBANK_DATABASE_URL=database.url)
        if target.startswith("sqlite"):
            env["TOKENBANK_SQLITE_SYNCHRONOUS"] = "FULL"
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 300, check=False
        )
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
        if result.returncode != 0 or not lines:
            raise BenchFailure(
                f"embedded debits failed on {target}:\n{result.stdout}{result.stderr}"
            )
        counts = json.loads(lines[-1])
        run.rate = counts["ops_per_s"]
        run.p50_ms, run.p99_ms = counts["p50_ms"], counts["p99_ms"]
        run.peak_rss_mib = [round(counts["peak_rss_kib"] / 1024, 1)]
        run.detail = counts | {
            "ok": counts["ops"],
            "ops": counts["ops"],
            "sent": counts["ops"],
            "answered": counts["ops"],
        }

    def _run_pgbench(self, run: Run, seconds: int) -> None:
        logs = Path(tempfile.mkdtemp(prefix="pgbench-log-", dir=self.workdir))
        command = [
            self.pgbench,
            "-n",
            "-b",
            "tpcb-like",
            "-M",
            "prepared",
            "-c",
            str(self.args.connections),
            "-j",
            str(self.args.threads),
            "-T",
            str(seconds),
            "-l",
            "--log-prefix",
            str(logs / "tx"),
            *self._pg_connection(),
            "pgbench",
        ]
        result = subprocess.run(
            command,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            cwd=logs,
            check=False,
        )
        tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.MULTILINE)
        if result.returncode != 0 or tps is None:
            raise BenchFailure(
                f"pgbench failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        latencies = sorted(
            int(fields[2])
            for log in logs.glob("tx*")
            for fields in (line.split() for line in log.read_text().splitlines())
            if len(fields) >= 3 and fields[2].isdigit()
        )
        shutil.rmtree(logs, ignore_errors=True)
        run.rate = round(float(tps.group(1)), 1)
        if latencies:
            run.p50_ms = round(latencies[len(latencies) // 2] / 1000, 3)
            run.p99_ms = round(latencies[int(len(latencies) * 0.99)] / 1000, 3)
        run.errors = int(failed.group(1)) if failed else 0
        run.detail = {
            "transactions": len(latencies),
            "mode": "prepared",
            "scale": self.args.pgbench_scale,
            "clients": self.args.connections,
        }

    # --- correctness -------------------------------------------------------------------

    def _check_ledger(self, case: Case, target: str, run: Run) -> None:
        """The audit passes, and the ledger holds exactly the acknowledged operations.

        wrk stops at its deadline with up to one request per connection in flight: the
        server may still commit those, unacknowledged. So the rule is: every
        acknowledged operation is on the ledger, and at most the unanswered requests
        besides (`unanswered` = requests sent - responses received). Each ledger
        transaction must also have moved exactly one operation's tokens.
        """
        database = self.databases[target]
        server = self.servers.get(target)
        if server is not None:
            wait_quiet(server.worker_pids)
        transactions, consumed = audit(database)
        added = transactions - database.transactions
        consumed_added = consumed - database.consumed
        database.transactions, database.consumed = transactions, consumed
        warmup_acknowledged, warmup_unanswered = self.unchecked.pop(target, (0, 0))
        acknowledged = int(run.detail.get("ops", 0)) + warmup_acknowledged
        unanswered = _unanswered(run) + warmup_unanswered
        run.ledger = {
            "audit": "passed",
            "includes_warmup": bool(warmup_acknowledged or warmup_unanswered),
            "acknowledged": acknowledged,
            "ledger_transactions_added": added,
            "unanswered_at_deadline": unanswered,
            "committed_unacknowledged": added - acknowledged,
            "tokens_consumed_added": consumed_added,
            "tokens_per_operation": case.tokens_per_op,
        }
        problems = []
        if added < acknowledged:
            problems.append(f"{acknowledged - added} acknowledged operations are not on the ledger")
        if added > acknowledged + unanswered:
            problems.append(
                f"the ledger has {added - acknowledged} operations more than were"
                f" acknowledged, with only {unanswered} requests unanswered"
            )
        if consumed_added != added * case.tokens_per_op:
            problems.append(
                f"tokens consumed grew by {consumed_added}, expected {added} x {case.tokens_per_op}"
            )
        if problems:
            run.ledger["problems"] = problems
            raise BenchFailure(f"LEDGER CHECK FAILED on {run.key}: " + "; ".join(problems))
        log(
            f"    {run.key}: audit passed; ledger +{added} = {acknowledged} acknowledged"
            f" + {added - acknowledged} committed in flight (<= {unanswered} unanswered)"
        )

    # --- profiling ---------------------------------------------------------------------

    def _profile_path(self, run: Run) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        suffix = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}[
            self.args.profile_format
        ]
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return RESULTS_DIR / f"profile-{run.case}-{run.target}-{stamp}.{suffix}"

    def _py_spy_record(self, output: Path, seconds: int | None) -> list[str]:
        py_spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchFailure("py-spy is not installed: pip install -e '.[dev]'")
        command = [
            py_spy,
            "record",
            "--rate",
            "100",
            "--format",
            self.args.profile_format,
            "--output",
            str(output),
            "--nonblocking",
        ]
        if seconds is not None:
            command += ["--duration", str(seconds)]
        return command

    def _start_profiler(self, run: Run, pid: int, seconds: int) -> subprocess.Popen[bytes]:
        output = self._profile_path(run)
        # It attaches first (the sleep below): record until the load has surely ended.
        command = [*self._py_spy_record(output, seconds + 2), "--subprocesses", "--pid", str(pid)]
        self.profiles.append(str(output))
        log(f"profiling {run.key} with py-spy into {output}")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach before the load starts
        return spy

    def _finish_profiler(self, spy: subprocess.Popen[bytes]) -> None:
        try:
            _, stderr = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.terminate()
            _, stderr = spy.communicate(timeout=10)
        if spy.returncode not in (0, None):
            log(f"py-spy failed ({spy.returncode}): {stderr.decode(errors='replace').strip()}")

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        terminate_children()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _unanswered(run: Run) -> int:
    """Requests wrk sent that had no answer when it stopped (at most one per connection)."""
    return max(0, int(run.detail.get("sent", 0)) - int(run.detail.get("answered", 0)))


# --- summarising --------------------------------------------------------------------------


STARTED = time.monotonic()


def _settings_text(settings: dict[str, str]) -> str:
    if not settings:
        return "defaults (no --setting)"
    return ", ".join(f"{name}={value}" for name, value in sorted(settings.items()))


def say(message: str) -> None:
    print(message, flush=True)


def log(message: str) -> None:
    """Progress, stamped with the seconds since the harness started."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def describe_run(run: Run) -> str:
    rate = f"{run.rate:,.0f} {CASE_BY_NAME[run.case].unit}"
    latency = f"p50 {run.p50_ms} ms, p99 {run.p99_ms} ms" if run.p50_ms is not None else ""
    return f"{run.key:<22} {rate:>16}  {latency}, errors {run.errors}"


def summarise(runs: list[Run], plan: list[tuple[Case, str]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for case, target in plan:
        key = f"{case.name}/{target}"
        measured = [r for r in runs if r.key == key and r.repeat >= 0]
        if not measured:
            continue
        rates = [r.rate for r in measured]
        median_rate = statistics.median(rates)

        def median_of(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return round(statistics.median(present), 3) if present else None

        summary[key] = {
            "case": case.name,
            "number": case.number,
            "title": case.title,
            "target": target,
            "unit": case.unit,
            "repeats": len(measured),
            "rate": round(median_rate, 1),
            "rates": rates,
            "spread_pct": round((max(rates) - min(rates)) / median_rate * 100, 1)
            if median_rate
            else None,
            "requests_per_s": median_of([r.requests_per_s for r in measured]),
            "p50_ms": median_of([r.p50_ms for r in measured]),
            "p99_ms": median_of([r.p99_ms for r in measured]),
            "errors": sum(r.errors for r in measured),
            "peak_rss_mib": [
                max(r.peak_rss_mib[i] for r in measured if len(r.peak_rss_mib) > i)
                for i in range(max((len(r.peak_rss_mib) for r in measured), default=0))
            ],
        }
    return summary


def compute_ratios(
    summary: dict[str, dict[str, Any]], ratios: tuple[Ratio, ...]
) -> list[dict[str, Any]]:
    out = []
    for ratio in ratios:
        top = summary.get(ratio.numerator[0], {}).get(ratio.numerator[1])
        bottom = summary.get(ratio.denominator[0], {}).get(ratio.denominator[1])
        value = round(top / bottom, 3) if top is not None and bottom else None
        met = (
            None
            if value is None
            else (value >= ratio.target if ratio.at_least else value <= ratio.target)
        )
        out.append(
            {
                "ratio": ratio.label,
                "numerator": "/".join(ratio.numerator),
                "denominator": "/".join(ratio.denominator),
                "value": value,
                "target": f"{'>=' if ratio.at_least else '<='} {ratio.target:g}",
                "met": met,
            }
        )
    return out


def render_table(summary: dict[str, dict[str, Any]]) -> str:
    header = (
        "#",
        "case",
        "backend",
        "rate (median)",
        "unit",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "spread",
        "peak RSS MiB/proc",
    )
    rows: list[tuple[str, ...]] = [header]
    for row in summary.values():
        rows.append(
            (
                str(row["number"]),
                row["title"],
                TARGET_LABEL[row["target"]],
                f"{row['rate']:,.0f}",
                row["unit"],
                "-" if row["requests_per_s"] is None else f"{row['requests_per_s']:,.0f}",
                _fmt(row["p50_ms"]),
                _fmt(row["p99_ms"]),
                str(row["errors"]),
                "-" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%",
                " / ".join(f"{m:.0f}" for m in row["peak_rss_mib"]) or "-",
            )
        )
    return _markdown(rows, right=(0, 3, 5, 6, 7, 8, 9))


def render_ratios(ratios: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("ratio (medians)", "value", "target", "")]
    for ratio in ratios:
        verdict = "n/a" if ratio["met"] is None else ("MET" if ratio["met"] else "NOT MET")
        rows.append((ratio["ratio"], _fmt(ratio["value"]), ratio["target"], verdict))
    return _markdown(rows, right=(1,))


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _markdown(rows: list[tuple[str, ...]], right: tuple[int, ...]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def git_info() -> dict[str, Any]:
    """The commit, and a fingerprint of the uncommitted changes under src/."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return result.stdout

    status = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    digest = hashlib.sha256(git("diff", "HEAD", "--", "src").encode())
    for line in status:
        if line.startswith("??"):
            untracked = REPO / line[3:]
            files = sorted(untracked.rglob("*")) if untracked.is_dir() else [untracked]
            for path in files:
                with contextlib.suppress(OSError):
                    if path.is_file():
                        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "dirty_src": bool(status),
        "status_src": [line[3:] for line in status],
        "src_fingerprint": digest.hexdigest()[:16],
    }


def tool_versions(wrk: str, pgbench: str) -> dict[str, str]:
    versions = {}
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        versions["wrk"] = (
            (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
        )
    if pgbench:
        out = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False)
        versions["pgbench"] = out.stdout.strip()
    return versions


def write_results_md(report: dict[str, Any], table: str, ratios: str, sqlite_ratios: str) -> None:
    meta = report["meta"]
    machine = meta["machine"]
    git = meta["git"]
    settings = meta["settings"]
    dirty = ""
    if git["dirty_src"]:
        dirty = (
            f" plus uncommitted changes to {len(git['status_src'])} files under src/"
            f" (fingerprint {git.get('src_fingerprint', 'n/a')})"
        )
    if meta.get("build_sha256"):
        build = meta["build_sha256"][:16]
        dirty += f"; every process ran a copy of src/ taken at the start (sha256 {build})"
    if meta.get("src_changed_during_run"):
        dirty += ", and src/ changed during the run"
    pg = (
        "fsync and synchronous_commit off"
        if settings.get("pg_nondurable")
        else "durable: fsync and synchronous_commit on"
    )
    text = f"""# Benchmark results

Written by `make bench` (bench/run.py) after its latest full run; do not edit by hand.
How to run it and what each case is: README.md, section "Benchmarks". Where the
time goes and what stands between these numbers and the targets: bench/PROFILE.md.

- date: {meta["date"]} (start)
- git commit: `{git["commit"]}`{dirty}
- machine: {machine["nproc"]} CPUs ({machine["cpu_model"]}), {machine["memory_gib"]} GiB memory,
  Linux {machine["kernel"]}, Python {machine["python"]}; load average at start
  {machine["load_average"]}, at end {meta["load_average_end"]} (a shared machine: absolute numbers
  are noisy, the ratios are measured side by side in one run)
- settings: {settings["workers"]} uvicorn workers per server, {settings["connections"]} connections
  (wrk, {settings["threads"]} threads; pgbench clients), {settings["duration"]} s per run,
  {settings["repeats"]} repeats in alternating order (medians), {settings["warmup"]} s warm-up,
  {settings["users"]:,} users, embedded {settings["tasks"]} tasks, pgbench scale
  {settings["pgbench_scale"]}; {meta["tools"].get("wrk", "")}; {meta["tools"].get("pgbench", "")}
- tokenbank settings: {_settings_text(meta.get("tokenbank_settings") or {})}
- run time: {meta["total_seconds"]:.0f} s (setup {meta["setup_seconds"]:.0f} s)

{table}

Rate is operations per second: requests for cases 1-5, hold+capture pairs (6) and
start+end pairs (7) per second (req/s counts both requests), debits per second (8),
transactions per second (9). Latencies are per request (per debit in case 8, per
transaction in case 9). Errors: non-2xx answers plus socket errors, over all repeats.
Spread: (max - min) / median of the rates. Peak RSS: VmHWM of each uvicorn worker,
reset before each run (the embedded process's own in case 8).

{ratios}

For reference, the same on SQLite:

{sqlite_ratios}

Every run of a mutating case was followed by `tokenbank audit` (passed) and a ledger
check: each acknowledged operation is on the ledger, plus at most the requests still
unanswered when wrk stopped. PostgreSQL is a private server the harness starts
(tests/support/postgres.py), {pg}, for tokenbank and
pgbench alike. SQLite "FULL" is synchronous=FULL (durable), "NORMAL" is WAL with
synchronous=NORMAL.
"""
    RESULTS_MD.write_text(text)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        earlier: dict[str, Any] = json.loads(args.render.read_text())
        return publish(earlier, args.render, write_md=not args.no_results_md)
    plan = planned_runs(args)
    if not plan:
        say("nothing to run: check --cases and --backends")
        return 2
    git_start = git_info()
    harness = Harness(args)  # takes the snapshot of src/ every process imports
    failure: str | None = None
    machine = machine_info()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        harness.setup(plan)
        harness.measure(plan)
    except BenchFailure as error:
        failure = str(error)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        harness.close()
    summary = summarise(harness.runs, plan)
    git_end = git_info()
    settings = (
        "workers", "connections", "threads", "duration", "warmup", "repeats", "users",
        "tasks", "pgbench_scale", "pg_nondurable", "cases", "backends",
    )  # fmt: skip
    mode = "quick" if args.quick else ("full" if args.full else "partial")
    report: dict[str, Any] = {
        "meta": {
            "date": date,
            "mode": "profile" if args.profile else mode,
            "machine": machine,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "git": git_start,
            "build_sha256": harness.build_sha256,
            "src_changed_during_run": git_end != git_start,
            "tools": tool_versions(harness.wrk, harness.pgbench),
            "settings": {name: getattr(args, name) for name in settings},
            "tokenbank_settings": dict(EXTRA_SETTINGS),
            "setup_seconds": round(harness.setup_seconds, 1),
            "total_seconds": round(time.monotonic() - harness.started, 1),
            "audits": {
                name: {"runs": db.audits, "seconds": round(db.audit_seconds, 1)}
                for name, db in harness.databases.items()
            },
            "profiles": harness.profiles,
        },
        "planned": [f"{case.name}/{target}" for case, target in plan],
        "cases": summary,
        "ratios": compute_ratios(summary, RATIOS),
        "sqlite_ratios": compute_ratios(summary, SQLITE_RATIOS),
        "ledger_checks": [
            {"run": run.key, "repeat": run.repeat, **run.ledger}
            for run in harness.runs
            if run.ledger
        ],
        "runs": [asdict(run) for run in harness.runs],
        "ok": failure is None,
        "failure": failure,
    }
    json_path = args.json
    if json_path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        json_path = RESULTS_DIR / f"bench-{report['meta']['mode']}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return publish(report, json_path, write_md=not args.no_results_md)


def publish(report: dict[str, Any], json_path: Path, *, write_md: bool) -> int:
    """Print the table, the ratios and the checks; a clean full run updates RESULTS.md."""
    table = render_table(report["cases"])
    ratio_table = render_ratios(report["ratios"])
    sqlite_table = render_ratios(report["sqlite_ratios"])
    say("")
    say(table)
    say("")
    say(ratio_table)
    if any(ratio["value"] is not None for ratio in report["sqlite_ratios"]):
        say("")
        say("for reference, on SQLite:")
        say(sqlite_table)
    say("")
    checks = report["ledger_checks"]
    passed = sum(1 for check in checks if "problems" not in check)
    say(f"ledger checks: {len(checks)} runs audited, {passed} passed")
    meta = report["meta"]
    for path in meta["profiles"]:
        say(f"profile: {path}")
    say(f"JSON: {json_path}")
    say(f"total {meta['total_seconds']:.0f}s (setup {meta['setup_seconds']:.0f}s)")
    if not report["ok"]:
        say("")
        say("=" * 72)
        say(f"BENCH FAILED: {report['failure']}")
        say("=" * 72)
        return 1
    if meta["mode"] == "full" and write_md:
        write_results_md(report, table, ratio_table, sqlite_table)
        say(f"updated {RESULTS_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

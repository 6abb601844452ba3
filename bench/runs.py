"""One measured run: wrk against a server, the embedded debits, or pgbench; its numbers."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cases import CASE_BY_NAME, FEATURE_ID, HOT_USER, SCALE_TARGET, Case
from bench.common import BENCH, LUA, PYTHON, REPO, BenchFailure
from bench.processes import (
    TICKS_PER_SECOND,
    Server,
    clean_env,
    cpu_ticks,
    postgres_processes,
    reset_peak_rss,
    status_kib,
)
from bench.profiling import Profiler

WRK_ERRORS = ("connect_errors", "read_errors", "write_errors", "timeouts")


@dataclass
class Run:
    """The numbers of one run of one case on one target (the JSON's "runs")."""

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


def unanswered(run: Run) -> int:
    """Requests wrk sent that had no answer when it stopped (at most one per connection)."""
    return max(0, int(run.detail.get("sent", 0)) - int(run.detail.get("answered", 0)))


def describe_run(run: Run) -> str:
    """One progress line: the run's rate, latencies and errors."""
    rate = f"{run.rate:,.0f} {CASE_BY_NAME[run.case].unit}"
    latency = f"p50 {run.p50_ms} ms, p99 {run.p99_ms} ms" if run.p50_ms is not None else ""
    return f"{run.key:<22} {rate:>16}  {latency}, errors {run.errors}"


# --- wrk --------------------------------------------------------------------------------


def run_wrk(
    run: Run,
    case: Case,
    server: Server,
    *,
    wrk: str,
    key: str,
    args: argparse.Namespace,
    seconds: int,
    profiler: Profiler | None,
) -> None:
    """Load `server` with wrk and the case's Lua script for `seconds`, with API key `key`."""
    command = _wrk_command(case, server, wrk=wrk, key=key, args=args, seconds=seconds)
    for pid in server.worker_pids:
        reset_peak_rss(pid)
    spy = None
    if profiler is not None:
        pid = server.process.pid if server.process else 0
        spy = profiler.attach(run.key, run.case, run.target, pid, seconds)
    postgres_pids = postgres_processes()
    ticks_before = (cpu_ticks(server.worker_pids), cpu_ticks(postgres_pids))
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    ticks_after = (cpu_ticks(server.worker_pids), cpu_ticks(postgres_pids))
    if spy is not None and profiler is not None:
        profiler.finish(spy)
    counts = _wrk_counts(run, result)
    elapsed = counts["duration_us"] / 1e6
    run.rate = round(counts["ops"] / elapsed, 1)
    run.requests_per_s = round(counts["answered"] / elapsed, 1)
    run.p50_ms = round(counts["p50_us"] / 1000, 3)
    run.p99_ms = round(counts["p99_us"] / 1000, 3)
    run.errors = counts["non2xx"] + sum(counts[name] for name in WRK_ERRORS)
    run.peak_rss_mib = [
        round((status_kib(pid, "VmHWM") or 0) / 1024, 1) for pid in server.worker_pids
    ]
    run.detail = counts | {"users": wrk_users(server.name, args)}  # the script's users=
    run.detail |= _cpu_per_operation(ticks_before, ticks_after, counts["ops"])


def _cpu_per_operation(
    before: tuple[int, int], after: tuple[int, int], operations: int
) -> dict[str, float]:
    """CPU microseconds per operation of the server's workers and of PostgreSQL's
    processes: on a shared machine, steadier than a rate (another tenant's load
    lowers the rate, not the CPU each operation takes)."""
    per_operation = 1e6 / TICKS_PER_SECOND / max(operations, 1)
    return {
        "server_cpu_us_per_op": round((after[0] - before[0]) * per_operation, 1),
        "postgres_cpu_us_per_op": round((after[1] - before[1]) * per_operation, 1),
    }


def _wrk_command(
    case: Case, server: Server, *, wrk: str, key: str, args: argparse.Namespace, seconds: int
) -> list[str]:
    headers = ["-H", "Content-Type: application/json"]
    headers += ["-H", f"Authorization: Bearer {key}"]
    script_args = [f"users={wrk_users(server.name, args)}", f"feature={FEATURE_ID}"]
    if case.name == "hot":
        script_args.append(f"user={HOT_USER}")
    return [
        wrk,
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
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


def wrk_users(target: str, args: argparse.Namespace) -> int:
    """How many users (bench-0 ... bench-N-1) the Lua scripts pick from, uniformly, on a
    target: the --scale database's own count, else --users."""
    return int(args.scale_users) if target == SCALE_TARGET else int(args.users)


def _wrk_counts(run: Run, result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The counts the Lua script printed (its BENCH_RESULT line)."""
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise BenchFailure(
            f"wrk failed on {run.key} ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    counts: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
    return counts


# --- embedded ---------------------------------------------------------------------------


def run_embedded(
    run: Run,
    database_url: str,
    *,
    args: argparse.Namespace,
    seconds: int,
    profiler: Profiler | None,
) -> None:
    """bench/embedded_debits.py on the database for `seconds`: debits with no HTTP."""
    command = [
        PYTHON,
        str(BENCH / "embedded_debits.py"),
        "--database-url",
        database_url,
        "--no-prepare",
        "--users",
        str(args.users),
        "--tasks",
        str(args.tasks),
        "--seconds",
        str(seconds),
        "--json",
    ]
    if profiler is not None:
        command = profiler.wrap(run.key, run.case, run.target, command)
    env = clean_env(TOKENBANK_DATABASE_URL=database_url)
    if run.target.startswith("sqlite"):
        env["TOKENBANK_SQLITE_SYNCHRONOUS"] = "FULL"
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 300, check=False
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        raise BenchFailure(
            f"embedded debits failed on {run.target}:\n{result.stdout}{result.stderr}"
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


# --- pages ------------------------------------------------------------------------------


def run_pages(run: Run, database_url: str, *, entries: int, seconds: int) -> None:
    """bench/page_times.py on the database: every page in turn for `seconds`, on a
    ledger topped up to `entries` entries. The table's p50 and p99 are the slowest
    page's."""
    command = [
        PYTHON,
        "-m",
        "bench.page_times",
        "--database-url",
        database_url,
        "--entries",
        str(entries),
        "--seconds",
        str(seconds),
        "--json",
    ]
    env = clean_env(TOKENBANK_DATABASE_URL=database_url)
    if run.target.startswith("sqlite"):
        env["TOKENBANK_SQLITE_SYNCHRONOUS"] = "FULL"
    result = subprocess.run(
        command,
        env=env,
        cwd=REPO,  # bench.page_times is a module of the bench package
        capture_output=True,
        text=True,
        timeout=seconds + 600,
        check=False,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        raise BenchFailure(f"page times failed on {run.target}:\n{result.stdout}{result.stderr}")
    counts = json.loads(lines[-1])
    run.rate = counts["pages_per_s"]
    run.p50_ms, run.p99_ms = counts["slowest_p50_ms"], counts["slowest_p99_ms"]
    run.detail = counts


# --- pgbench ----------------------------------------------------------------------------


def run_pgbench(
    run: Run,
    *,
    pgbench: str,
    connection: list[str],
    args: argparse.Namespace,
    seconds: int,
    workdir: Path,
) -> None:
    """pgbench tpcb-like on the database "pgbench" for `seconds` (`connection`: -h -p -U)."""
    logs = Path(tempfile.mkdtemp(prefix="pgbench-log-", dir=workdir))
    command = [
        pgbench,
        "-n",
        "-b",
        "tpcb-like",
        "-M",
        "prepared",
        "-c",
        str(args.connections),
        "-j",
        str(args.threads),
        "-T",
        str(seconds),
        "-l",
        "--log-prefix",
        str(logs / "tx"),
        *connection,
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
        raise BenchFailure(f"pgbench failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    latencies = _pgbench_latencies(logs)
    shutil.rmtree(logs, ignore_errors=True)
    run.rate = round(float(tps.group(1)), 1)
    if latencies:
        run.p50_ms = round(latencies[len(latencies) // 2] / 1000, 3)
        run.p99_ms = round(latencies[int(len(latencies) * 0.99)] / 1000, 3)
    run.errors = int(failed.group(1)) if failed else 0
    run.detail = {
        "transactions": len(latencies),
        "mode": "prepared",
        "scale": args.pgbench_scale,
        "clients": args.connections,
    }


def _pgbench_latencies(logs: Path) -> list[int]:
    """Every transaction's latency (microseconds, sorted) from pgbench's -l logs."""
    return sorted(
        int(fields[2])
        for log in logs.glob("tx*")
        for fields in (line.split() for line in log.read_text().splitlines())
        if len(fields) >= 3 and fields[2].isdigit()
    )

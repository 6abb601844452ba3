"""The report: medians and ratios, the tables, the JSON file, and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cases import RATIOS, REFERENCE_RATIOS, TARGET_LABEL, Case, Ratio, scale_ratios
from bench.common import REPO, RESULTS_DIR, RESULTS_MD, say
from bench.harness import Harness
from bench.processes import EXTRA_SETTINGS
from bench.runs import Run
from bench.scale_report import SCALE_KEYS, build_text, existing_section, scale_section, with_section

# The options a report records under meta.settings.
SETTINGS = (
    "workers", "connections", "threads", "duration", "warmup", "repeats", "users",
    "tasks", "page_entries", "pgbench_scale", "pg_nondurable", "pg_shared_buffers", "cases",
    "backends", "scale", "scale_users", "scale_entries",
)  # fmt: skip


def _shared_buffers(settings: dict[str, Any]) -> str:
    """What the run gave PostgreSQL (runs from before the option had 128MB)."""
    return str(settings.get("pg_shared_buffers") or "128MB")


def _settings_text(settings: dict[str, str]) -> str:
    if not settings:
        return "defaults (no --setting)"
    return ", ".join(f"{name}={value}" for name, value in sorted(settings.items()))


def summarise(runs: list[Run], plan: list[tuple[Case, str]]) -> dict[str, dict[str, Any]]:
    """Per run key, the medians (and spread, errors, peak RSS) of its measured runs."""
    summary: dict[str, dict[str, Any]] = {}
    for case, target in plan:
        key = f"{case.name}/{target}"
        measured = [r for r in runs if r.key == key and r.repeat >= 0]
        if not measured:
            continue
        rates = [r.rate for r in measured]
        median_rate = statistics.median(rates)
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
            "requests_per_s": _median_of([r.requests_per_s for r in measured]),
            "p50_ms": _median_of([r.p50_ms for r in measured]),
            "p99_ms": _median_of([r.p99_ms for r in measured]),
            "errors": sum(r.errors for r in measured),
            "peak_rss_mib": [
                max(r.peak_rss_mib[i] for r in measured if len(r.peak_rss_mib) > i)
                for i in range(max((len(r.peak_rss_mib) for r in measured), default=0))
            ],
        }
        summary[key]["cpu_us_per_op"] = _cpu_medians(measured)
        peaks = summary[key]["peak_rss_mib"]
        summary[key]["peak_rss_max_mib"] = max(peaks) if peaks else None
    return summary


def _cpu_medians(measured: list[Run]) -> tuple[float, float] | None:
    """Median CPU microseconds per operation of the server's workers and of
    PostgreSQL (wrk's cases only)."""
    pairs = [
        (r.detail["server_cpu_us_per_op"], r.detail["postgres_cpu_us_per_op"])
        for r in measured
        if "server_cpu_us_per_op" in r.detail
    ]
    if not pairs:
        return None
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _cpu_cell(row: dict[str, Any]) -> str:
    cpu = row.get("cpu_us_per_op")
    if cpu is None:
        return "-"
    server, postgres = cpu
    return (
        f"{server:,.0f}"
        if str(row["target"]).startswith("sqlite")
        else f"{server:,.0f} / {postgres:,.0f}"
    )


def _median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def compute_ratios(
    summary: dict[str, dict[str, Any]], ratios: tuple[Ratio, ...]
) -> list[dict[str, Any]]:
    """Each ratio's value from the summary's medians, and whether it met its target."""
    out = []
    for ratio in ratios:
        top = summary.get(ratio.numerator[0], {}).get(ratio.numerator[1])
        if ratio.denominator is None:
            bottom: float | None = 1.0
        else:
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
                "denominator": "/".join(ratio.denominator) if ratio.denominator else "-",
                "value": value,
                "target": f"{'>=' if ratio.at_least else '<='} {ratio.target:g}",
                "met": met,
            }
        )
    return out


def render_table(summary: dict[str, dict[str, Any]]) -> str:
    """The table of medians, in markdown."""
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
        "CPU us/op",
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
                _cpu_cell(row),
                " / ".join(f"{m:.0f}" for m in row["peak_rss_mib"]) or "-",
            )
        )
    return _markdown(rows, right=(0, 3, 5, 6, 7, 8, 9, 10))


def render_ratios(ratios: list[dict[str, Any]]) -> str:
    """The ratios with their targets and verdicts, in markdown."""
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
    """CPUs, CPU model, memory, kernel, Python and the load average now."""
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
    status = [line for line in _git("status", "--porcelain", "--", "src").splitlines() if line]
    digest = hashlib.sha256(_git("diff", "HEAD", "--", "src").encode())
    for line in status:
        if line.startswith("??"):
            untracked = REPO / line[3:]
            files = sorted(untracked.rglob("*")) if untracked.is_dir() else [untracked]
            for path in files:
                with contextlib.suppress(OSError):
                    if path.is_file():
                        digest.update(path.read_bytes())
    return {
        "commit": _git("rev-parse", "HEAD").strip(),
        "dirty_src": bool(status),
        "status_src": [line[3:] for line in status],
        "src_fingerprint": digest.hexdigest()[:16],
    }


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout


def tool_versions(wrk: str, pgbench: str) -> dict[str, str]:
    """The first line of `wrk --version` and `pgbench --version` (of those used)."""
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


def write_results_md(
    report: dict[str, Any], table: str, ratios: str, reference_ratios: str, scale_md: str | None
) -> None:
    """Rewrite bench/RESULTS.md: the run's tables, machine, settings and commit; and the
    --scale section: this run's (`scale_md`), else the one the file had."""
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

Written by `make bench` (python -m bench) after its latest full run; do not edit by hand.
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
  {settings["pgbench_scale"]}, PostgreSQL shared_buffers {_shared_buffers(settings)};
  {meta["tools"].get("wrk", "")}; {meta["tools"].get("pgbench", "")}
- tokenbank settings: {_settings_text(meta.get("tokenbank_settings") or {})}
- run time: {meta["total_seconds"]:.0f} s (setup {meta["setup_seconds"]:.0f} s)

{table}

Rate is operations per second: requests for cases 1-5, hold+capture pairs (6) and
start+end pairs (7) per second (req/s counts both requests), debits per second (8),
transactions per second (9). Latencies are per request (per debit in case 8, per
transaction in case 9). Errors: non-2xx answers plus socket errors, over all repeats.
Spread: (max - min) / median of the rates. CPU us/op: CPU time per operation
(user + system, median of the runs) of the server's workers, then of all of
PostgreSQL's processes; steadier than a rate on a shared machine. Peak RSS: VmHWM
of each uvicorn worker, reset before each run (the embedded process's own in case 8).

{ratios}

For reference, the first performance issue's targets, on both engines:

{reference_ratios}

Every run of a mutating case was followed by `tokenbank audit` (passed) and a ledger
check: each acknowledged operation is on the ledger, plus at most the requests still
unanswered when wrk stopped. PostgreSQL is a private server the harness starts
(tokenbank.testing.postgres), {pg}, for tokenbank and
pgbench alike. SQLite "FULL" is synchronous=FULL (durable), "NORMAL" is WAL with
synchronous=NORMAL.
"""
    if scale_md is None and RESULTS_MD.exists():
        scale_md = existing_section(RESULTS_MD.read_text())
    RESULTS_MD.write_text(with_section(text, scale_md))


def print_scale(report: dict[str, Any]) -> str | None:
    """Print --scale's ratios and build; its RESULTS.md section (None without --scale)."""
    scale = report.get("scale")
    if not scale:
        return None
    table = render_table({k: v for k, v in report["cases"].items() if k in SCALE_KEYS})
    ratios = render_ratios(scale["ratios"])
    say("")
    say("--scale: deduct(4) at scale beside deduct(4) on the usual database:")
    say(ratios)
    say(build_text(scale.get("build")))
    return scale_section(report, table, ratios)


def _write_md(report: dict[str, Any], tables: tuple[str, str, str], scale_md: str | None) -> None:
    """A full run rewrites bench/RESULTS.md; a --scale run (not --quick) its section."""
    mode = report["meta"]["mode"]
    if mode == "full":
        write_results_md(report, *tables, scale_md)
        say(f"updated {RESULTS_MD.relative_to(REPO)}")
    elif scale_md is not None and mode != "quick" and RESULTS_MD.exists():
        RESULTS_MD.write_text(with_section(RESULTS_MD.read_text(), scale_md))
        say(f"updated the --scale section of {RESULTS_MD.relative_to(REPO)}")


def publish(report: dict[str, Any], json_path: Path, *, write_md: bool) -> int:
    """Print the table, the ratios and the checks; a clean full run updates RESULTS.md
    (a clean --scale run, its section)."""
    table = render_table(report["cases"])
    ratio_table = render_ratios(report["ratios"])
    reference_table = render_ratios(report["reference_ratios"])
    say("")
    say(table)
    if any(ratio["value"] is not None for ratio in report["ratios"]):
        say("")
        say(ratio_table)
    if any(ratio["value"] is not None for ratio in report["reference_ratios"]):
        say("")
        say("for reference, the first performance issue's targets:")
        say(reference_table)
    scale_md = print_scale(report)
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
    if write_md:
        _write_md(report, (table, ratio_table, reference_table), scale_md)
    return 0


def build_report(
    args: argparse.Namespace,
    plan: list[tuple[Case, str]],
    harness: Harness,
    *,
    date: str,
    machine: dict[str, Any],
    git_start: dict[str, Any],
    failure: str | None,
) -> dict[str, Any]:
    """Everything about the run, as the JSON file holds it."""
    summary = summarise(harness.runs, plan)
    git_end = git_info()
    mode = "quick" if args.quick else ("full" if args.full else "partial")
    return {
        "meta": {
            "date": date,
            "mode": "profile" if args.profile else mode,
            "machine": machine,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "git": git_start,
            "build_sha256": harness.build_sha256,
            "src_changed_during_run": git_end != git_start,
            "tools": tool_versions(harness.wrk, harness.pgbench),
            "settings": {name: getattr(args, name) for name in SETTINGS},
            "tokenbank_settings": dict(EXTRA_SETTINGS),
            "setup_seconds": round(harness.setup_seconds, 1),
            "total_seconds": round(time.monotonic() - harness.started, 1),
            "audits": {
                name: {"runs": db.audits, "seconds": round(db.audit_seconds, 1)}
                for name, db in harness.databases.items()
            },
            "profiles": harness.profiler.profiles,
        },
        "planned": [f"{case.name}/{target}" for case, target in plan],
        "cases": summary,
        "ratios": compute_ratios(summary, RATIOS),
        "reference_ratios": compute_ratios(summary, REFERENCE_RATIOS),
        "scale": _scale_report(args, summary, harness),
        "ledger_checks": [
            {"run": run.key, "repeat": run.repeat, **run.ledger}
            for run in harness.runs
            if run.ledger
        ],
        "runs": [asdict(run) for run in harness.runs],
        "ok": failure is None,
        "failure": failure,
    }


def _scale_report(
    args: argparse.Namespace, summary: dict[str, dict[str, Any]], harness: Harness
) -> dict[str, Any] | None:
    """--scale's sizes, build and ratios (None without --scale)."""
    if not args.scale:
        return None
    users, entries = args.scale_users, args.scale_entries
    return {
        "users": users,
        "entries": entries,
        "build": harness.scale_build,
        "ratios": compute_ratios(summary, scale_ratios(users, entries)),
    }


def write_json(report: dict[str, Any], json_path: Path | None) -> Path:
    """The report into `json_path` (default bench/results/bench-MODE-TIME.json); its path."""
    if json_path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        json_path = RESULTS_DIR / f"bench-{report['meta']['mode']}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return json_path

"""The command line: the options, their defaults, and the (case, target) runs they select."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.cases import (
    BACKENDS,
    CASE_BY_NAME,
    CASES,
    PAGE_ENTRIES,
    SCALE_CASE,
    SCALE_ENTRIES,
    SCALE_TARGET,
    SCALE_USERS,
    TARGET_BACKEND,
    Case,
)
from bench.processes import EXTRA_SETTINGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the defaults of a full or a --quick run filled in.

    --setting values go to EXTRA_SETTINGS, which every tokenbank process of the run gets.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _apply_settings(args, parser)
    _apply_defaults(args, parser)
    _select(args, parser)
    _check_scale(args, parser)
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run every benchmark case against the same build and print one table.",
    )
    _add_load_options(parser)
    _add_scale_options(parser)
    _add_run_options(parser)
    return parser


def _add_scale_options(parser: argparse.ArgumentParser) -> None:
    """--scale: deduct(4) on a bulk-loaded large database too (bench/scale.py)."""
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run deduct(4) on a PostgreSQL database of --scale-users users and"
        " --scale-entries ledger entries (bulk-loaded, audited, VACUUM ANALYZEd), beside"
        " deduct(4) on postgres; alone, it runs only those two (with --cases, those cases"
        " as well)",
    )
    parser.add_argument(
        "--scale-users",
        type=int,
        default=SCALE_USERS,
        help=f"users of the --scale database (default {SCALE_USERS:,})",
    )
    parser.add_argument(
        "--scale-entries",
        type=int,
        default=SCALE_ENTRIES,
        help=f"ledger entries of the --scale database (default {SCALE_ENTRIES:,}; at least"
        " two per user: each user's opening credit)",
    )


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    """How much load, for how long, on how many users (None: the mode's default)."""
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
        "--page-entries",
        type=int,
        default=None,
        help="ledger entries the pages case tops the database up to (default 100000; quick 2000)",
    )
    parser.add_argument(
        "--pgbench-scale",
        type=int,
        default=None,
        help="pgbench -i scale factor (default: --connections; quick 1)",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """What to run, how to set it up, and where the results go."""
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated: " + ",".join(CASE_BY_NAME) + " (default all; with --scale, deduct)",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated: sqlite,postgres (default both; with --scale alone, postgres)",
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
        "--pg-shared-buffers",
        default="128MB",
        metavar="SIZE",
        help="PostgreSQL's shared_buffers for every PostgreSQL case (default 128MB, its"
        " own default); production sizes it to hold the hot rows",
    )
    parser.add_argument(
        "--no-results-md",
        action="store_true",
        help="do not update bench/RESULTS.md after a full run (or its section after --scale)",
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


def _apply_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for setting in args.setting:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            parser.error(f"--setting {setting!r}: expected NAME=VALUE")
        name = name.upper()
        EXTRA_SETTINGS[name if name.startswith("TOKENBANK_") else f"TOKENBANK_{name}"] = value


def _apply_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.duration = args.duration or (1 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.users = args.users or (200 if args.quick else 10_000)
    args.page_entries = args.page_entries or (2_000 if args.quick else PAGE_ENTRIES)
    args.pgbench_scale = args.pgbench_scale or (1 if args.quick else args.connections)
    args.threads = args.threads or max(1, min(os.cpu_count() or 1, args.connections))
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    if min(args.duration, args.repeats, args.users, args.workers, args.connections) < 1:
        parser.error("--duration, --repeats, --users, --workers and --connections must be >= 1")


def _select(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """args.backends, args.cases and args.profile_target as lists; args.full;
    args.scale_only (--scale without --cases: deduct on postgres and at scale only)."""
    args.scale_only = args.scale and args.cases is None
    default_backends = "postgres" if args.scale_only else "all"
    args.backends = _split(args.backends or default_backends, BACKENDS, parser, "--backends")
    args.cases = args.cases or (SCALE_CASE if args.scale_only else "all")
    args.profile_target = None
    if args.profile:
        _select_profile(args, parser)
    else:
        args.cases = _split(args.cases, tuple(CASE_BY_NAME), parser, "--cases")
    args.full = (
        not args.quick
        and args.profile is None
        and set(args.cases) == set(CASE_BY_NAME)
        and set(args.backends) == set(BACKENDS)
    )


def _check_scale(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.scale:
        return
    if args.profile:
        parser.error("--scale and --profile do not go together")
    if SCALE_CASE not in args.cases or "postgres" not in args.backends:
        parser.error(f"--scale compares {SCALE_CASE} on postgres: keep both in the run")
    if args.scale_users < 1 or args.scale_entries < 2 * args.scale_users:
        parser.error("--scale-users must be >= 1 and --scale-entries >= 2 x --scale-users")


def _select_profile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--profile CASE[/TARGET]: that case alone, once, on that target's backend."""
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
        for target in _targets(case, args):
            backend = TARGET_BACKEND[target]
            if backend is not None and backend not in args.backends:
                continue
            if args.profile_target and target != args.profile_target:
                continue
            runs.append((case, target))
    return runs


def _targets(case: Case, args: argparse.Namespace) -> tuple[str, ...]:
    """The case's targets in this run: with --scale, deduct's gains the scale database
    (right after postgres, so that the two alternate side by side); --scale alone
    keeps only those two."""
    if not args.scale or case.name != SCALE_CASE:
        return case.targets
    targets = []
    for target in case.targets:
        if not args.scale_only or target == "postgres":
            targets.append(target)
        if target == "postgres":
            targets.append(SCALE_TARGET)
    return tuple(targets)

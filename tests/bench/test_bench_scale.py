"""`python -m bench --scale`: the bulk-loaded large database passes `tokenbank audit`, and
deduct(4) runs on it beside the usual database, with its ratio and peak RSS reported.

The run is tiny (2,000 users, 20,000 entries, 1 s): it checks the mode, not its numbers.
Like the quick bench it needs `wrk` (skipped, saying so, when it cannot be installed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import databases
from bench.cases import SCALE_TARGET
from bench.databases import Database
from bench.options import parse_args, planned_runs
from bench.scale import bulk_load_sql
from bench.scale_report import SECTION_END, SECTION_START, existing_section, with_section
from tests.bench.test_bench_quick import QUICK_TIMEOUT_SECONDS, REPO, _ensure_wrk

SCALE_USERS = 2_000
SCALE_ENTRIES = 20_000


def _planned(*argv: str) -> list[str]:
    return [f"{case.name}/{target}" for case, target in planned_runs(parse_args(list(argv)))]


def test_scale_alone_runs_deduct_on_postgres_and_at_scale_only() -> None:
    assert _planned("--scale") == ["deduct/postgres", f"deduct/{SCALE_TARGET}"]
    args = parse_args(["--scale"])
    assert (args.scale_users, args.scale_entries) == (1_000_000, 10_000_000)


def test_the_default_and_quick_runs_do_not_build_the_scale_database() -> None:
    assert not any(SCALE_TARGET in key for key in _planned())
    assert not any(SCALE_TARGET in key for key in _planned("--quick"))


def test_scale_with_cases_adds_the_scale_run_beside_deduct_on_postgres() -> None:
    planned = _planned("--scale", "--cases", "deduct,ping", "--backends", "postgres")
    position = planned.index("deduct/postgres")
    assert planned[position + 1] == f"deduct/{SCALE_TARGET}"
    assert "ping/postgres" in planned


@pytest.mark.parametrize(
    "argv",
    [
        ["--scale", "--cases", "ping"],
        ["--scale", "--cases", "deduct", "--backends", "sqlite"],
        ["--scale", "--scale-users", "0"],
        ["--scale", "--scale-users", "1000", "--scale-entries", "1999"],
        ["--scale", "--profile", "deduct/postgres"],
    ],
)
def test_scale_refuses_a_run_without_its_comparison_or_with_bad_sizes(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_load_script_is_one_transaction_without_the_row_triggers() -> None:
    script = bulk_load_sql(SCALE_USERS, SCALE_ENTRIES)
    assert script.strip().startswith("BEGIN;") and script.strip().endswith("COMMIT;")
    assert "SET LOCAL session_replication_role = replica;" in script
    assert f"generate_series(0, {SCALE_USERS} - 1)" in script
    with pytest.raises(ValueError, match="users must be >= 1"):
        bulk_load_sql(0, SCALE_ENTRIES)


def test_results_md_keeps_or_replaces_the_scale_section() -> None:
    first = f"{SECTION_START}\nold numbers\n{SECTION_END}\n"
    second = f"{SECTION_START}\nnew numbers\n{SECTION_END}\n"
    full_run = "# Benchmark results\n\nthe table\n"
    appended = with_section(full_run, first)
    assert appended.startswith(full_run) and appended.endswith(first)
    assert existing_section(appended) == first
    replaced = with_section(appended, second)
    assert "old numbers" not in replaced and replaced.count(SECTION_START) == 1
    assert replaced.startswith(full_run) and existing_section(replaced) == second
    assert with_section(full_run, None) == full_run
    assert existing_section(full_run) is None


@pytest.mark.slow
def test_scale_mode_builds_an_audited_database_and_reports_the_ratio(tmp_path: Path) -> None:
    _ensure_wrk()
    report_path = tmp_path / "scale.json"
    results_md = REPO / "bench" / "RESULTS.md"
    before = results_md.read_text() if results_md.exists() else None
    command = [sys.executable, "-m", "bench", "--scale", "--quick", "--json", str(report_path)]
    command += ["--scale-users", str(SCALE_USERS), "--scale-entries", str(SCALE_ENTRIES)]

    result = subprocess.run(
        command,
        cwd=REPO,  # `python -m bench` imports the package from the repository's root
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, f"bench failed:\n{result.stdout}\n{result.stderr}"
    report = json.loads(report_path.read_text())
    scale_key = f"deduct/{SCALE_TARGET}"
    assert report["ok"] is True
    assert report["planned"] == ["deduct/postgres", scale_key]
    # The bulk load made the ledger asked for, and `tokenbank audit` passed on it.
    build = report["scale"]["build"]
    assert build["wallets"] == SCALE_USERS + 1  # and the hot user of the base
    assert build["ledger_entries"] == SCALE_ENTRIES
    assert build["rows_loaded"] > 0 and build["rows_per_s"] > 0
    # Each database was loaded with deduct(4) over all of its users, then audited.
    runs = {run["key"]: run for run in report["runs"]}
    assert runs[scale_key]["detail"]["users"] == SCALE_USERS
    assert runs["deduct/postgres"]["detail"]["users"] == report["meta"]["settings"]["users"]
    checked = {check["run"]: check for check in report["ledger_checks"]}
    assert set(checked) == {"deduct/postgres", scale_key}
    for key, check in checked.items():
        assert check["audit"] == "passed" and "problems" not in check, key
        assert check["ledger_transactions_added"] >= check["acknowledged"] > 0, key
    # The ratio and the peak RSS, with their targets, in the JSON and the printed table.
    ratios = {ratio["ratio"]: ratio for ratio in report["scale"]["ratios"]}
    ratio_label = "deduct(4) at 2,000 users/20,000 entries / deduct(4), postgres"
    assert ratios[ratio_label]["target"] == ">= 0.9"
    assert ratios[ratio_label]["value"] is not None and ratios[ratio_label]["met"] is not None
    rss_label = "peak RSS per server worker MiB, deduct(4) at 2,000 users/20,000 entries"
    assert ratios[rss_label]["target"] == "<= 150" and ratios[rss_label]["value"] > 0
    assert any(
        line.startswith(f"| {ratio_label}") and ("| MET" in line or "| NOT MET" in line)
        for line in result.stdout.splitlines()
    ), result.stdout
    # A --quick run leaves bench/RESULTS.md alone.
    assert (results_md.read_text() if results_md.exists() else None) == before


def test_a_settled_audit_audits_twice_even_when_one_audit_outlasts_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At --scale sizes one audit can take longer than SETTLE_TIMEOUT_SECONDS: the ledger
    has settled when two audits agree, not when the first one ends in time."""
    audits: list[Database] = []

    def slow_audit(database: Database) -> tuple[int, int]:
        audits.append(database)
        return (100, 7)

    monkeypatch.setattr(databases, "audit", slow_audit)
    monkeypatch.setattr(databases, "SETTLE_TIMEOUT_SECONDS", 0.0)
    monkeypatch.setattr(databases, "SETTLE_SECONDS", 0.0)
    database = Database("postgres-scale", "postgresql://unused")

    assert databases.settled_audit(database) == (100, 7)
    assert len(audits) == 2

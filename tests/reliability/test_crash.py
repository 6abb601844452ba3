"""The short crash test (issue 6): SIGKILL a real `tokenbank serve` under load.

Runs tests/reliability/crash.py (a script, in its own process) on each engine with 16
clients and 10 kills; `make crash` runs the long variant. Each server restart takes a
few seconds (interpreter, uvicorn and two workers), so the 10 kills bound the time:
about a minute per engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HARNESS = Path(__file__).with_name("crash.py")
CLIENTS = 16
KILLS = 10
SECONDS = 5  # the kill phase: kills come as soon as the server has served briefly


def run_harness(
    engine: str, options: list[str], tmp_path: Path, *, timeout_seconds: float
) -> tuple[dict[str, Any], str]:
    """crash.py's report and its output, once it ran clean (no violation, exit 0)."""
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(HARNESS), "--engine", engine, *options]
    command += ["--json", str(report_path)]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_seconds, check=False
    )
    output = run.stdout + run.stderr
    assert report_path.exists(), output
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report["violations"] == [], output
    assert run.returncode == 0, output
    return report, output


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_no_token_is_created_or_lost_when_the_server_is_killed(engine: str, tmp_path: Path) -> None:
    options = ["--clients", str(CLIENTS), "--kills", str(KILLS), "--seconds", str(SECONDS)]
    report, output = run_harness(engine, options, tmp_path, timeout_seconds=600)
    assert report["kills"] >= KILLS
    assert report["tokens_created_or_lost"] == 0
    assert report["actual_total"] == report["expected_total"]
    assert report["unresolved"] == 0
    assert report["pending_holds"] == 0
    # The run did what it is for: operations acknowledged across the kills, and
    # outcomes left unknown by a kill resolved by retrying with the same key.
    assert report["acknowledged"] > 0
    assert report["unknown_outcomes_resolved"] > 0
    # (Refunds and captures depend on earlier answers and can be few in a short run.)
    for kind in ("deduct", "credit", "hold", "end"):
        assert report["by_kind"][kind]["acknowledged"] > 0, output

"""`make bench-quick` runs: every case, a JSON report, and books that balance.

A smoke test of the harness (`python -m bench`), with no timing assertions (the
numbers of a one-second run on a shared machine mean nothing). It needs the `wrk`
load generator: when it is missing, scripts/ensure-wrk.sh installs it (Debian, as
root); only if that fails is the test skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cases import CASES, RATIOS, REFERENCE_RATIOS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT_SECONDS = 600  # it takes about a minute; a busy machine can be slow


def _ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run([str(REPO / "scripts" / "ensure-wrk.sh")], check=False, capture_output=True)
    if shutil.which("wrk") is None:
        pytest.skip(
            "wrk (the HTTP load generator) is not installed and scripts/ensure-wrk.sh could"
            " not install it (needs Debian and root): apt-get install wrk"
        )


def test_quick_bench_runs_every_case_and_the_books_balance(tmp_path: Path) -> None:
    _ensure_wrk()
    expected = {f"{case.name}/{target}" for case in CASES for target in case.targets}
    # cases 1-7 on both engines (+ FULL/NORMAL), 2-5 on the peer, 8 twice, 9, 10 twice
    assert len(expected) == 23
    report_path = tmp_path / "quick.json"

    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(report_path)],
        cwd=REPO,  # `python -m bench` imports the package from the repository's root
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, f"bench failed:\n{result.stdout}\n{result.stderr}"
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["failure"] is None
    assert report["meta"]["mode"] == "quick"
    assert set(report["planned"]) == expected
    assert set(report["cases"]) == expected
    for key, case in report["cases"].items():
        assert case["repeats"] == 1, key
        assert case["rate"] >= 0, key
    # Every run of a mutating case was audited and its ledger matched what was acknowledged.
    mutating = {f"{c.name}/{t}" for c in CASES if c.mutating for t in c.targets}
    checked = {check["run"]: check for check in report["ledger_checks"]}
    assert set(checked) == mutating
    for key, check in checked.items():
        assert check["audit"] == "passed", key
        assert "problems" not in check, key
        assert (
            check["acknowledged"]
            <= check["ledger_transactions_added"]
            <= check["acknowledged"] + check["unanswered_at_deadline"]
        ), key
    # The table's ratios, each with its target (values: no timing assertions here).
    assert [r["ratio"] for r in report["ratios"]] == [r.label for r in RATIOS]
    assert [r["ratio"] for r in report["reference_ratios"]] == [r.label for r in REFERENCE_RATIOS]
    for ratio in report["ratios"] + report["reference_ratios"]:
        assert ratio["target"].startswith((">=", "<=")), ratio
    assert "deduct(4) / no-op(2), postgres" in result.stdout
    assert f"ledger checks: {len(mutating)} runs audited, {len(mutating)} passed" in result.stdout

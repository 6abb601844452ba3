"""`python -m bench` (from the repository's root): the harness's entry point.

Options: `python -m bench --help`; what it does: the package's docstring (bench/__init__.py).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from types import FrameType
from typing import Any

from bench.cases import RATIOS, REFERENCE_RATIOS, Case
from bench.common import BenchFailure, say
from bench.harness import Harness
from bench.options import parse_args, planned_runs
from bench.report import (
    build_report,
    compute_ratios,
    git_info,
    machine_info,
    publish,
    write_json,
)


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with --render, re-print) and publish; the exit status."""
    args = parse_args(argv)
    if args.render is not None:
        earlier: dict[str, Any] = json.loads(args.render.read_text())
        # The ratios as this version of the bench defines them, from the run's medians.
        earlier["ratios"] = compute_ratios(earlier["cases"], RATIOS)
        earlier["reference_ratios"] = compute_ratios(earlier["cases"], REFERENCE_RATIOS)
        return publish(earlier, args.render, write_md=not args.no_results_md)
    plan = planned_runs(args)
    if not plan:
        say("nothing to run: check --cases and --backends")
        return 2
    git_start = git_info()
    harness = Harness(args)  # takes the snapshot of src/ every process imports
    machine = machine_info()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    failure = _measure(harness, plan)
    report = build_report(
        args, plan, harness, date=date, machine=machine, git_start=git_start, failure=failure
    )
    json_path = write_json(report, args.json)
    return publish(report, json_path, write_md=not args.no_results_md)


def _measure(harness: Harness, plan: list[tuple[Case, str]]) -> str | None:
    """Set up and measure, always tearing down; why it stopped early, or None."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        harness.setup(plan)
        harness.measure(plan)
    except BenchFailure as error:
        return str(error)
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        harness.close()
    return None


if __name__ == "__main__":
    sys.exit(main())

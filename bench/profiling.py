"""--profile: py-spy attached to a server's workers, or wrapped around the embedded run."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import PYTHON, RESULTS_DIR, BenchFailure, log

SUFFIXES = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}


class Profiler:
    """Records profiles in one py-spy format into bench/results/; `profiles` lists them."""

    def __init__(self, profile_format: str) -> None:
        self.profile_format = profile_format
        self.profiles: list[str] = []

    def path(self, case: str, target: str) -> Path:
        """A new file in bench/results/ for a profile of this case on this target."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        suffix = SUFFIXES[self.profile_format]
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return RESULTS_DIR / f"profile-{case}-{target}-{stamp}.{suffix}"

    def record_command(self, output: Path, seconds: int | None) -> list[str]:
        """`py-spy record` into `output` (for `seconds`, or until its target exits)."""
        py_spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchFailure("py-spy is not installed: pip install -e '.[dev]'")
        command = [
            py_spy,
            "record",
            "--rate",
            "100",
            "--format",
            self.profile_format,
            "--output",
            str(output),
            "--nonblocking",
        ]
        if seconds is not None:
            command += ["--duration", str(seconds)]
        return command

    def wrap(self, key: str, case: str, target: str, command: list[str]) -> list[str]:
        """`command` run under py-spy (the embedded case: a process of its own)."""
        output = self.path(case, target)
        self.profiles.append(str(output))
        log(f"profiling {key} with py-spy into {output}")
        return [*self.record_command(output, None), "--", *command]

    def attach(
        self, key: str, case: str, target: str, pid: int, seconds: int
    ) -> subprocess.Popen[bytes]:
        """py-spy attached to `pid` and its subprocesses, before a load of `seconds`."""
        output = self.path(case, target)
        # It attaches first (the sleep below): record until the load has surely ended.
        command = [*self.record_command(output, seconds + 2), "--subprocesses", "--pid", str(pid)]
        self.profiles.append(str(output))
        log(f"profiling {key} with py-spy into {output}")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach before the load starts
        return spy

    def finish(self, spy: subprocess.Popen[bytes]) -> None:
        """Wait for an attached py-spy to write its profile (it stops on its own)."""
        try:
            _, stderr = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.terminate()
            _, stderr = spy.communicate(timeout=10)
        if spy.returncode not in (0, None):
            log(f"py-spy failed ({spy.returncode}): {stderr.decode(errors='replace').strip()}")

#!/usr/bin/env python3
"""Summarise a py-spy raw profile (collapsed stacks): where the samples went.

    .venv/bin/python -m bench --profile deduct/postgres --profile-format raw
    .venv/bin/python bench/profile_top.py bench/results/profile-deduct-postgres-*.txt

Prints the functions with the most inclusive samples (the function or anything it
called) and the most self samples (the function itself), as shares of all samples.
Idle samples (a process waiting in the event loop's selector) are counted apart, so
the shares say where the CPU went.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

IDLE_FRAMES = ("select (selectors.py", "_run_once (asyncio", "run_forever (uvloop")
LOCATION = re.compile(r" \((?P<file>[^:)]+)(?::\d+)?\)$")


def frame_name(frame: str, keep_lines: bool) -> str:
    if keep_lines:
        return frame
    return LOCATION.sub(lambda match: f" ({Path(match['file']).name})", frame)


def parse(
    path: Path, keep_lines: bool
) -> tuple[collections.Counter[str], collections.Counter[str], int, int]:
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame, keep_lines) for frame in stack.split(";")]
        total += count
        if frames and any(frames[-1].startswith(idle_frame) for idle_frame in IDLE_FRAMES):
            idle += count
            continue
        for frame in set(frames):
            inclusive[frame] += count
        self_time[frames[-1]] += count
    return inclusive, self_time, total, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--lines", action="store_true", help="keep line numbers apart")
    parser.add_argument("--grep", default=None, help="only frames containing this text")
    args = parser.parse_args()
    inclusive, self_time, total, idle = parse(args.profile, args.lines)
    busy = max(1, total - idle)
    print(
        f"{total} samples, {idle} idle ({idle / max(1, total):.0%}); shares below are of"
        f" the {busy} busy samples"
    )
    for title, counter in (("inclusive", inclusive), ("self", self_time)):
        print(f"\n== {title} ==")
        rows = [
            (name, count)
            for name, count in counter.most_common()
            if args.grep is None or args.grep in name
        ][: args.top]
        for name, count in rows:
            print(f"{count / busy:6.1%}  {name[:150]}")


if __name__ == "__main__":
    main()

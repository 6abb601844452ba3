"""--scale in the report: its ratios, its build, and its own section of bench/RESULTS.md.

A run with --scale writes (or replaces) the section between SECTION_START and
SECTION_END; a full run without --scale rewrites the rest of the file and keeps the
section of the latest --scale run.
"""

from __future__ import annotations

from typing import Any

from bench.cases import SCALE_CASE, SCALE_TARGET

SECTION_START = "<!-- scale: written by python -m bench --scale; do not edit by hand -->"
SECTION_END = "<!-- end of scale -->"
SCALE_KEYS = (f"{SCALE_CASE}/postgres", f"{SCALE_CASE}/{SCALE_TARGET}")


def build_text(build: dict[str, Any] | None) -> str:
    """One paragraph: what the scale database holds and what building it cost."""
    if not build:
        return "The scale database was not built (the run stopped first)."
    rate = f"{build['rows_per_s']:,}" if build.get("rows_per_s") else "-"
    return (
        f"Scale database: {build['users']:,} users, {build['ledger_entries']:,} ledger"
        f" entries, {build['ledger_transactions']:,} transactions, bulk-loaded by SQL on the"
        f" server (bench/scale.py): {build['rows_loaded']:,} rows in {build['load_seconds']} s"
        f" ({rate} rows/s), base through the API {build['base_seconds']} s, VACUUM ANALYZE +"
        f" CHECKPOINT {build['vacuum_analyze_seconds']} s, `tokenbank audit` passed in"
        f" {build['first_audit_seconds']} s; {build['total_seconds']} s in all."
    )


def scale_section(report: dict[str, Any], table: str, ratios: str) -> str:
    """bench/RESULTS.md's --scale section (`table` and `ratios`: rendered markdown)."""
    meta = report["meta"]
    settings = meta["settings"]
    machine = meta["machine"]
    checks = [c for c in report["ledger_checks"] if c["run"] in SCALE_KEYS]
    return f"""{SECTION_START}
## Deduct at scale (`python -m bench --scale`)

- date: {meta["date"]} (start); git commit: `{meta["git"]["commit"]}`
- machine: {machine["nproc"]} CPUs ({machine["cpu_model"]}), load average at start
  {machine["load_average"]}, at end {meta["load_average_end"]}
- settings: {settings["workers"]} uvicorn workers per server, {settings["connections"]}
  connections ({settings["threads"]} wrk threads), {settings["duration"]} s per run,
  {settings["repeats"]} repeats in alternating order (medians), {settings["warmup"]} s warm-up;
  the usual database has {settings["users"]:,} users; PostgreSQL
  {"fsync off" if settings.get("pg_nondurable") else "durable"}, shared_buffers
  {settings.get("pg_shared_buffers", "128MB")}

{table}

{ratios}

{build_text(report["scale"].get("build"))} Every run on either database was followed by
`tokenbank audit` and the ledger check ({len(checks)} runs checked, all passed); each
server's users are picked uniformly from all of its users (bench/lua/deduct.lua).
{SECTION_END}
"""


def existing_section(text: str) -> str | None:
    """The --scale section of a RESULTS.md text, if it has one."""
    start = text.find(SECTION_START)
    end = text.find(SECTION_END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(SECTION_END)] + "\n"


def with_section(text: str, section: str | None) -> str:
    """`text` with its --scale section replaced by `section` (appended if it had none;
    unchanged if `section` is None)."""
    if section is None:
        return text
    old = existing_section(text)
    if old is not None:
        return text.replace(old, section)
    return text.rstrip("\n") + "\n\n" + section

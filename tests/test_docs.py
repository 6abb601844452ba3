"""The code's pointers into docs/ lead somewhere.

Comments cite design decisions as "decision N" (docs/architecture.md) and wire
contracts by name (docs/compatibility.md), never the documents tokenbank was first
written from, which are not in this repository.
"""

from __future__ import annotations

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPOSITORY / "docs" / "architecture.md"
CITED_DECISION = re.compile(r"\b[Dd]ecision (\d+)\b")
DOCUMENTED_DECISION = re.compile(r"^\*\*(\d+)\. ", re.MULTILINE)
SEED_CITATION = re.compile(r"\b[Ss]eed 00\d\b")


def source_files() -> list[Path]:
    roots = [REPOSITORY / "src", REPOSITORY / "clients", REPOSITORY / "bench"]
    return [path for root in roots if root.exists() for path in sorted(root.rglob("*.py"))]


def test_every_cited_decision_is_documented() -> None:
    documented = set(DOCUMENTED_DECISION.findall(ARCHITECTURE.read_text()))
    assert {str(n) for n in range(1, 13)} <= documented
    missing = [
        f"{path.relative_to(REPOSITORY)}: decision {number}"
        for path in source_files()
        for number in CITED_DECISION.findall(path.read_text())
        if number not in documented
    ]
    assert missing == []


def test_code_names_contracts_not_seed_documents() -> None:
    citing = [
        str(path.relative_to(REPOSITORY))
        for path in source_files()
        if SEED_CITATION.search(path.read_text())
    ]
    assert citing == []

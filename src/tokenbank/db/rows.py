"""The type of a result row that code passes around without naming its columns."""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import Row

# A result row of any shape (SQLAlchemy types rows by their column types).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

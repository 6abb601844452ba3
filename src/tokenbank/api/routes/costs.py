"""Routes: costs (seed 000). (Filled in by its own change.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["costs (seed 000)"])

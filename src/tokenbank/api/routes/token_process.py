"""Routes: token process (seed 001). (Filled in by its own change.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["token process (seed 001)"])

"""The memory planner: will a model fit, and on what (no torch imported here)."""

from __future__ import annotations

from hal.planner.estimate import WEIGHT_FORMATS, Breakdown, estimate, kv_cache_bytes
from hal.planner.models import PRESETS, ModelSpec, preset, resolve

__all__ = ["PRESETS", "WEIGHT_FORMATS", "Breakdown", "ModelSpec", "estimate", "kv_cache_bytes",
           "preset", "resolve"]

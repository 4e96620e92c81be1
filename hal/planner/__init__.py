"""The planner: will a model fit, on which cards, how many, how fast (no torch imported here)."""

from __future__ import annotations

from hal.planner.estimate import WEIGHT_FORMATS, Breakdown, estimate, kv_cache_bytes
from hal.planner.models import PRESETS, ModelSpec, preset, resolve
from hal.planner.planning import Layout, Placement, Plan, plan
from hal.planner.speed import Efficiency, Speed

__all__ = ["PRESETS", "WEIGHT_FORMATS", "Breakdown", "Efficiency", "Layout", "ModelSpec",
           "Placement", "Plan", "Speed", "estimate", "kv_cache_bytes", "plan", "preset",
           "resolve"]

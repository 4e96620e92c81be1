"""The planner: will a model fit, on which cards, how many, how fast (no torch imported here)."""

from __future__ import annotations

from hal.planner.estimate import WEIGHT_FORMATS, Breakdown, Workload, estimate, kv_cache_bytes, memory
from hal.planner.layouts import (
    ExpertOffload,
    ExpertParallel,
    LayerSplit,
    Layout,
    Shares,
    TensorPipeline,
    register,
)
from hal.planner.models import PRESETS, ModelSpec, preset, resolve
from hal.planner.planning import LocalDevice, Placement, Plan, plan
from hal.planner.speed import Efficiency, Speed, speed

__all__ = ["PRESETS", "WEIGHT_FORMATS", "Breakdown", "Efficiency", "ExpertOffload",
           "ExpertParallel", "LayerSplit", "Layout",
           "LocalDevice", "ModelSpec", "Placement", "Plan", "Shares", "Speed", "TensorPipeline",
           "Workload", "estimate", "kv_cache_bytes", "memory", "plan", "preset", "register",
           "resolve", "speed"]

"""Fit the engine classes' decode factors (hal/data/engines.json) to published runs.

Reads bench/published.json, takes every decode row that is neither ``explained`` (outside the
model on purpose) nor ``held_out`` (kept for the check, docs/planner.md), and fits, by
non-negative least squares on the relative step-time error, the few physical factors of each
engine class the rows can tell apart:

- ``serving``: the bandwidth share (MBU), the fixed cost of a layer, what an MoE layer adds
  and what each sequence adds to it (every class takes that one: only its batched rows tell
  it), and the latency of a collective across nodes;
- ``serving-vllm``: what an MoE layer adds in vLLM (and SGLang before its DeepSeek kernels);
- ``layer-split``: its bandwidth share (its MoE layer cost is serving-vllm's: fitted apart
  they agree within 3 %, and one MoE row of its own could only be matched, not predicted; the
  stage hand-off stays the sourced constant: fitted, it trades against the bandwidth share);
- ``offload``: its MoE layer cost and the host's bandwidth share (the GPU part takes serving's
  bandwidth share and every class serving's layer cost: one kernel-launch figure for all).

Everything else (the in-node all-reduce latency, link and compute shares, the stage hand-off)
stays the sourced constant in engines.json.  The model is :class:`hal.planner.speed.StepTerms`,
the one ``hal plan`` uses: step = memory_s / bandwidth + host_s / host_bandwidth + wire_s +
collectives x latency + layers x layer_overhead_s + moe_layers x moe_layer_s + hops x hop_s,
linear in (1 / share - 1, seconds).  A row names its engine class where it is not its
layout's (``engine``: serving-vllm).  A row published as
a range pulls only when the prediction leaves it (the error is to the nearer end).

``python scripts/fit_engine_costs.py`` prints the coefficients, each fitted row's error and
its leave-one-out error (the fit without that row predicting it); ``--write`` stores the
coefficients in hal/data/engines.json; ``--json`` prints them as JSON.  numpy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_published as pub  # noqa: E402

from hal.planner.speed import Efficiency, StepTerms, engines  # noqa: E402

ENGINES_JSON = ROOT / "hal" / "data" / "engines.json"
#: The fitted parameters: (engine class, factor).  A share of a peak is fitted as its inverse,
#: at least 1 (a share at most the peak).
PARAMS: tuple[tuple[str, str], ...] = (
    ("serving", "bandwidth"), ("serving", "layer_overhead_s"), ("serving", "moe_layer_s"),
    ("serving", "node_latency_s"), ("serving", "moe_token_s"), ("serving-vllm", "moe_layer_s"),
    ("layer-split", "bandwidth"),
    ("offload", "moe_layer_s"), ("offload", "host_bandwidth"),
)
#: Factors a class takes from another's fit (one physical figure, too few rows to split it).
TIED = {("layer-split", "layer_overhead_s"): ("serving", "layer_overhead_s"),
        ("layer-split", "moe_layer_s"): ("serving-vllm", "moe_layer_s"),
        ("serving-vllm", "bandwidth"): ("serving", "bandwidth"),
        ("serving-vllm", "layer_overhead_s"): ("serving", "layer_overhead_s"),
        ("serving-vllm", "node_latency_s"): ("serving", "node_latency_s"),
        ("offload", "layer_overhead_s"): ("serving", "layer_overhead_s"),
        ("offload", "bandwidth"): ("serving", "bandwidth"),
        ("layer-split", "node_latency_s"): ("serving", "node_latency_s"),
        ("offload", "node_latency_s"): ("serving", "node_latency_s"),
        ("serving-vllm", "moe_token_s"): ("serving", "moe_token_s"),
        ("layer-split", "moe_token_s"): ("serving", "moe_token_s"),
        ("offload", "moe_token_s"): ("serving", "moe_token_s")}
SHARES = ("bandwidth", "host_bandwidth")
#: Significant figures stored in engines.json.
DIGITS = 3


@dataclass(frozen=True)
class Row:
    """One fitted row: its id, engine class, step terms and the published step-time range."""

    id: str
    engine: str
    terms: StepTerms
    t_low: float  # seconds a step at the published upper tokens/s
    t_high: float


def rows(data: dict[str, Any] | None = None) -> list[Row]:
    """The decode rows the fit uses, with their step terms."""
    data = data or pub.load()
    out = []
    for row in data["rows"]:
        if row["kind"] != "decode" or row.get("explained") or row.get("held_out"):
            continue
        s, layout = pub.decode_speed(row, data["models"])
        assert s.terms is not None and s.terms.memory_s is not None, row["id"]
        assert not s.terms.overlap, f"{row['id']}: an overlapped step is not linear in the factors"
        published = row["published"]
        low, high = (published, published) if not isinstance(published, list) else published
        out.append(Row(row["id"], pub.engine_of(row, layout), s.terms, 1 / high, 1 / low))
    return out


def _resolve(engine: str, factor: str) -> tuple[str, str]:
    return TIED.get((engine, factor), (engine, factor))


def _design(fit_rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """A (rows x params) and the constant part of each row's step: step = A x + c, where x
    holds (1 / share - 1) for shares and seconds for costs."""
    index = {p: i for i, p in enumerate(PARAMS)}
    a = np.zeros((len(fit_rows), len(PARAMS)))
    c = np.zeros(len(fit_rows))
    for i, r in enumerate(fit_rows):
        t = r.terms
        assert t.memory_s is not None
        base = engines()[r.engine].factors
        c[i] = t.wire_s + t.memory_s + t.host_s  # the share parts at the peak
        latency = "node_latency_s" if t.across_nodes else "allreduce_latency_s"
        columns = {"bandwidth": t.memory_s, "host_bandwidth": t.host_s,
                   "layer_overhead_s": float(t.layers), "moe_layer_s": float(t.moe_layers),
                   "hop_s": float(t.hops), latency: float(t.collectives),
                   "moe_token_s": t.moe_tokens}
        for factor, value in columns.items():
            key = _resolve(r.engine, factor)
            if key in index:
                a[i, index[key]] += value
            elif factor not in SHARES:  # a sourced constant cost
                c[i] += value * getattr(base, factor)
            else:  # a sourced share: its inverse - 1 on top of the peak part
                c[i] += value * (1 / getattr(base, factor) - 1)
    return a, c


def _nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Least squares with x >= 0 (Lawson and Hanson's active-set method, as scipy's nnls)."""
    n = a.shape[1]
    x = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    for _ in range(3 * n):
        grad = a.T @ (b - a @ x)
        if free.all() or np.max(np.where(free, -np.inf, grad)) <= tol:
            break
        free[int(np.argmax(np.where(free, -np.inf, grad)))] = True
        while True:
            z = np.zeros(n)
            z[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if np.all(z[free] > 0):
                x = z
                break
            neg = free & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            free &= x > tol
    return x


def solve(fit_rows: list[Row], iterations: int = 60) -> np.ndarray:
    """x minimising the relative step-time error to each row's published range."""
    a, c = _design(fit_rows)
    lo = np.array([r.t_low for r in fit_rows])
    hi = np.array([r.t_high for r in fit_rows])
    target = np.sqrt(lo * hi)
    x = np.zeros(len(PARAMS))
    for _ in range(iterations):
        w = 1 / target  # relative error
        x_new = _nnls(a * w[:, None], (target - c) * w)
        pred = a @ x_new + c
        new_target = np.clip(pred, lo, hi)
        if np.allclose(x_new, x, rtol=1e-9, atol=1e-12) and np.allclose(new_target, target):
            break
        x, target = x_new, new_target
    return x


def factors(x: np.ndarray) -> dict[str, dict[str, float]]:
    """The fitted factors by engine class, rounded as stored (shares from their inverses)."""
    out: dict[str, dict[str, float]] = {}
    for (engine, factor), value in zip(PARAMS, x, strict=True):
        v = 1 / (1 + float(value)) if factor in SHARES else float(value)
        out.setdefault(engine, {})[factor] = _round(v)
    for (engine, factor), (src_engine, src_factor) in TIED.items():
        out.setdefault(engine, {})[factor] = out[src_engine][src_factor]
    return out


def _round(v: float) -> float:
    return float(f"{v:.{DIGITS}g}")


def predict(fit: dict[str, dict[str, float]], row: Row) -> float:
    """tokens/s the fitted factors give a row."""
    eff = replace(engines()[row.engine].factors, **fit.get(row.engine, {}))
    step = row.terms.step_s(eff)
    assert step
    return 1 / step


def error(tokens_s: float, row: Row) -> float:
    """Error to the nearer end of the published range (0 inside)."""
    lo, hi = 1 / row.t_high, 1 / row.t_low
    if lo <= tokens_s <= hi:
        return 0.0
    end = lo if tokens_s < lo else hi
    return tokens_s / end - 1


def report(fit_rows: list[Row]) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """The fit on every row, and each row's fitted and leave-one-out error."""
    fit = factors(solve(fit_rows))
    lines = []
    for i, r in enumerate(fit_rows):
        rest = fit_rows[:i] + fit_rows[i + 1:]
        loo = factors(solve(rest))
        lines.append({"id": r.id, "engine": r.engine, "fitted": error(predict(fit, r), r),
                      "leave_one_out": error(predict(loo, r), r)})
    return fit, lines


def write(fit: dict[str, dict[str, float]], path: Path = ENGINES_JSON) -> None:
    """Store the fitted factors in engines.json (other keys kept), atomically."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for engine, values in fit.items():
        data["engines"][engine].update(values)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Fit, print, and optionally write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the fit in engines.json")
    parser.add_argument("--json", action="store_true", help="print the fit as JSON")
    args = parser.parse_args(argv)
    fit_rows = rows()
    fit, lines = report(fit_rows)
    if args.json:
        print(json.dumps({"factors": fit, "rows": lines}, indent=1))
    else:
        print(f"{len(fit_rows)} rows, {len(PARAMS)} fitted parameters")
        for engine, values in fit.items():
            print(f"  {engine}: " + ", ".join(f"{k} {v:g}" for k, v in values.items()))
        print("| row | engine | fitted error | leave-one-out error |")
        print("|---|---|---|---|")
        for line in lines:
            print(f"| {line['id']} | {line['engine']} | {line['fitted']:+.0%} | "
                  f"{line['leave_one_out']:+.0%} |")
    if args.write:
        write(fit)
    return 0


_ = Efficiency  # the factors' type, named in the docstring's terms

if __name__ == "__main__":
    sys.exit(main())

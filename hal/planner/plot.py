"""``hal plan --plot FILE``: memory by term against context, and the ranking as a bar chart.

matplotlib is an optional extra (``pip install -e '.[plot]'`` from a checkout), imported only
here, with the non-interactive Agg backend so no display is needed.
"""

from __future__ import annotations

import os
from typing import Any

from hal.errors import ConfigError
from hal.planner.estimate import estimate

SUFFIXES = (".png", ".svg")
GIB = 2**30


def check_target(path: str) -> None:
    """Refuse a file type matplotlib is not asked for, a missing folder, or no matplotlib."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"--plot {path!r}: expected a .png or .svg file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"--plot {path!r}: folder {folder!r} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from hal.console import install_hint

        raise ConfigError(f"--plot needs matplotlib: {install_hint('plot')}") from None


def _contexts(limit: int) -> list[int]:
    out, c = [], 512
    while c < limit:
        out.append(c)
        c *= 2
    return [*out, limit]


def plot(plan: Any, path: str) -> None:
    """Write the picture of ``plan`` to ``path`` (PNG or SVG by its suffix)."""
    check_target(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req, spec = plan.request, plan.spec
    formats = list(req.formats)
    limit = max(req.context, min(spec.max_context or 131072, 1 << 20))
    xs = _contexts(limit)
    speeds = [r for r in plan.ranking if r.speed and r.speed.decode_tokens_s][:15]
    fig = plt.figure(figsize=(max(11.0, 3.2 * len(formats)), 10 if speeds else 4.8),
                     layout="constrained")
    fig.suptitle(f"hal plan {spec.name}: batch {req.batch}, {req.mode}", fontsize=13)
    bottom_fig = None
    top_fig: Any = fig
    if speeds:
        subs: Any = fig.subfigures(2, 1, height_ratios=[1, 1.15])
        top_fig, bottom_fig = subs[0], subs[1]
    axes = top_fig.subplots(1, len(formats), sharey=True, squeeze=False)[0]
    chosen = [r for r in plan.ranking if r.kind == "card"][:3]
    colours = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    for i, (ax, fmt) in enumerate(zip(axes, formats, strict=True)):
        terms: dict[str, list[float]] = {"weights + scales": [], "KV cache": [],
                                         "activations + overhead": []}
        for c in xs:
            b = estimate(spec, dtype=fmt, kv_dtype=req.kv_dtype, batch=req.batch, context=c,
                         mode="train" if req.mode == "train" else "inference",
                         checkpointing=req.checkpointing)
            terms["weights + scales"].append((b.weights + b.weight_scales + b.gradients
                                              + b.optimizer) / GIB)
            terms["KV cache"].append(b.kv_cache / GIB)
            terms["activations + overhead"].append((b.activations + b.overhead) / GIB)
        ax.stackplot(xs, *terms.values(), labels=list(terms), colors=colours[:3], alpha=0.8)
        for j, r in enumerate(chosen):
            ax.axhline(r.memory_total / GIB, color="black", lw=1, ls=("--", ":", "-.")[j],
                       label=f"capacity of {r.config}: {r.memory_total / GIB:,.0f} GiB")
        ax.axvline(req.context, color="grey", lw=0.8, label=f"--context {req.context:,}")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{fmt} weights" + (" (--dtype)" if fmt == req.dtype else ""))
        ax.set_xlabel("context (tokens)")
        if i == 0:
            ax.set_ylabel("memory at 1 device, TP 1 (GiB)")
    handles, labels = axes[0].get_legend_handles_labels()
    top_fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    if speeds and bottom_fig is not None:
        ax = bottom_fig.subplots()
        labels = [r.config for r in speeds][::-1]
        est = [r.speed.decode_tokens_s for r in speeds][::-1]
        bound = [r.speed.decode_tokens_s_bound or 0 for r in speeds][::-1]
        ax.barh(labels, bound, color="#cccccc", label="upper bound (peak bandwidth)")
        ax.barh(labels, est, color=colours[0], label="estimate (efficiency factors)")
        ax.set_xlabel("decode tokens/s a sequence")
        ax.set_title(f"ranking by {req.rank or 'memory'} at {req.dtype}, context "
                     f"{req.context:,}: decode speed of the first {len(speeds)}")
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)

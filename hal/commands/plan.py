"""``hal plan MODEL``: which accelerator, how many, how fast; this module only renders.

:func:`hal.planner.plan` computes the whole answer in one pass (a :class:`Plan`); here it
becomes tables (rich on a terminal, plain text when piped), JSON, or a picture.  The planner
and catalogue are torch-free; ``--no-local`` skips the device probe and plugin loading.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: Width of the compact bars next to key numbers.
BAR = 10


def add_parser(sub: Any) -> None:
    """Register the ``plan`` command."""
    p = sub.add_parser(
        "plan", help="which accelerator runs a model, how many of it, and how fast",
        description="Estimate weights, KV cache, activations and overhead for MODEL; for each "
        "catalogue card and weight format, the fewest cards that hold it (tensor and pipeline "
        "parallel) and the decode/prefill speed they allow. MODEL: a parameter count (13B), a "
        "Hugging Face id (deepseek-ai/DeepSeek-R1-Distill-Qwen-14B), a config.json, or a preset "
        "(deepseek-r1, deepseek-r1-distill-qwen-14b, ...).",
    )
    p.add_argument("model", metavar="MODEL",
                   help="parameter count, Hugging Face id, config.json path or preset")
    p.add_argument("--dtype", default="bf16", help="weight format: fp32, fp16, bf16, fp8, int8, "
                   "int4 (default bf16)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: the weight dtype "
                   "for 16/32-bit weights, else fp16)")
    p.add_argument("--batch", type=int, default=1, help="sequences at once (default 1)")
    p.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    p.add_argument("--train", action="store_true", help="training: gradients, Adam, activations")
    p.add_argument("--checkpointing", action="store_true",
                   help="with --train: activation checkpointing")
    p.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="the breakdown per device under tensor parallelism of degree N")
    p.add_argument("--rank", choices=("memory", "speed", "power"), default=None,
                   help="one table of the feasible configurations, best first: least memory, "
                   "fastest decode, or most tokens a joule")
    p.add_argument("--cards", default=None, metavar="IDS",
                   help="catalogue cards to consider, comma-separated ids or name parts "
                   "(default all; 'none' for none)")
    p.add_argument("--max-tp", type=int, default=8, metavar="N",
                   help="largest tensor-parallel degree (devices a node; default 8)")
    for name, what in (("bw-efficiency", "decode's share of peak memory bandwidth"),
                       ("compute-efficiency", "prefill's share of peak dense TFLOPS"),
                       ("link-efficiency", "all-reduce's share of the link bandwidth"),
                       ("allreduce-latency", "seconds a small all-reduce costs"),
                       ("layer-overhead", "fixed seconds a layer costs a decode step")):
        p.add_argument(f"--{name}", default=None, metavar="X",
                       help=f"{what} (default in docs/planner.md; HAL_PLAN_* variables too)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="write a PNG or SVG: memory by term against context, and the ranking "
                   "(needs matplotlib: the plot extra, docs/planner.md)")
    p.add_argument("--no-local", action="store_true",
                   help="skip the local devices (no device probe, no torch)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def build(args: argparse.Namespace) -> Any:
    """The :class:`Plan` for the command line's arguments."""
    from hal.planner.planning import plan

    cards = None
    if args.cards is not None:
        cards = [] if args.cards.strip().lower() in ("", "none") else \
            [c for c in (x.strip() for x in args.cards.split(",")) if c]
    overrides = {"bandwidth": args.bw_efficiency, "compute": args.compute_efficiency,
                 "link": args.link_efficiency, "allreduce_latency_s": args.allreduce_latency,
                 "layer_overhead_s": args.layer_overhead}
    return plan(args.model, args.dtype, kv_dtype=args.kv_dtype, batch=args.batch,
                context=args.context, train=args.train, checkpointing=args.checkpointing,
                tensor_parallel=args.tensor_parallel, cards=cards, local=not args.no_local,
                rank=args.rank, max_tp=args.max_tp, efficiency_overrides=overrides)


def bar(value: float | None, top: float) -> str:
    """A compact bar of ``value`` against ``top``: up to :data:`BAR` blocks, eighths at the end."""
    if not value or not top or value <= 0:
        return ""
    eighths = max(1, round(BAR * 8 * min(1.0, value / top)))
    return "\u2588" * (eighths // 8) + ("", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b",
                                          "\u258a", "\u2589")[eighths % 8]


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _sig(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


Table = tuple[str, list[str], list[list[str]]]


def render(plan: Any) -> list[Table]:
    """The report as (title, header, rows) tables, shared by the plain and rich printers."""
    from hal.units import format_bytes

    est, spec, req = plan.estimate, plan.spec, plan.request
    tables: list[Table] = []
    rows = [[name.replace("_", " "), format_bytes(value), f"{value:,}"]
            for name, value in est.terms.items()
            if value or name in ("weights", "kv_cache", "activations")]
    rows.append(["total", format_bytes(est.total), f"{est.total:,}"])
    active = (f", {spec.params_active / 1e9:.1f}B active"
              if spec.params_active != spec.params_total else "")
    tp = f", per device at tensor parallel {est.tensor_parallel}" if est.tensor_parallel > 1 else ""
    tables.append((f"{spec.name}: {spec.params_total / 1e9:.2f}B params{active} ({spec.kind}, "
                   f"{spec.attention} attention) - {est.mode}, {est.dtype} weights, {est.kv_dtype} "
                   f"KV cache, batch {est.batch}, context {est.context:,}{tp}",
                   ["term", "size", "bytes"], rows))

    if plan.local is not None:
        top = max((d.speed.decode_tokens_s or 0 for d in plan.local if d.speed), default=0)
        local_rows = []
        for d in plan.local:
            verdict = ("fits" if d.fits_free else
                       "fits when the device is empty" if d.fits_total else "does not fit")
            s = d.speed
            decode = (f"{_num(s.decode_tokens_s)} {bar(s.decode_tokens_s, top)}"
                      if s and s.decode_tokens_s else "-")
            local_rows.append([f"{d.backend}:{d.index}" + (" *" if d.selected else ""), d.name,
                               format_bytes(d.total), format_bytes(d.free), verdict,
                               format_bytes(abs(d.headroom))
                               + (" left" if d.headroom >= 0 else " short"),
                               decode, d.rates_basis or "no rates: run hal bench --save"])
        tables.append(("local devices (* selected); decode tokens/s a sequence is an estimate",
                       ["device", "name", "total", "free", "verdict", "headroom",
                        "decode tok/s", "rates from"], local_rows))

    if req.rank:
        tables.append(_ranking(plan))
    elif plan.placements:
        tables.append(_cards(plan))
    return tables


def _cards(plan: Any) -> Table:
    from hal.units import format_bytes

    req = plan.request
    by_card: dict[str, dict[str, Any]] = {}
    for p in plan.placements:
        by_card.setdefault(p.card.id, {})[p.dtype] = p
    top = max((p.speed.decode_tokens_s or 0 for p in plan.placements
               if p.dtype == req.dtype and p.speed), default=0)
    rows = []
    for cells in by_card.values():
        first = next(iter(cells.values()))
        card = first.card
        row = [card.name + (" (shared)" if card.shared_memory else ""),
               format_bytes(card.memory_bytes)]
        for f in req.formats:
            p = cells[f]
            row.append("-" if p.layout is None else str(p.layout.count)
                       + (f" ({p.layout.label})" if p.layout.count > 1 else ""))
        mine = cells[req.dtype]
        s = mine.speed
        row.append(_num(mine.max_context, 0) if mine.max_context else "-")
        row.append(f"{_num(s.decode_tokens_s)} {bar(s.decode_tokens_s, top)}"
                   if s and s.decode_tokens_s else "-")
        row.append(_num(s.prefill_s, 2) if s and s.prefill_s is not None else "-")
        rows.append(row)
    header = (["card", "memory"] + [f + (" *" if f == req.dtype else "") for f in req.formats]
              + [f"context ({req.dtype})", "decode tok/s (est.)", "prefill s (est.)"])
    title = (f"cards: how many of each hold the model at context {req.context:,}, batch "
             f"{req.batch}, by weight format (- : none up to TP {req.max_tp} x PP layers); for "
             f"--dtype {req.dtype} (*): the context that fits at that count, decode tokens/s a "
             "sequence and prefill seconds (estimates)")
    return title, header, rows


def _ranking(plan: Any) -> Table:
    from hal.units import format_bytes

    req = plan.request
    key = {"memory": None, "speed": "decode_tokens_s", "power": "tokens_per_joule"}[req.rank]
    top = max((getattr(r.speed, key or "decode_tokens_s") or 0 for r in plan.ranking if r.speed),
              default=0)
    rows = []
    for i, r in enumerate(plan.ranking, 1):
        s = r.speed
        shown = getattr(s, key or "decode_tokens_s") if s else None
        rows.append([str(i), r.config,
                     f"{format_bytes(r.needed_per_device)} / {format_bytes(r.capacity_per_device)}",
                     format_bytes(r.memory_total),
                     f"{_num(s.decode_tokens_s) if s else '-'}"
                     + (f" {bar(shown, top)}" if req.rank != "power" and s else ""),
                     _num(s.decode_tokens_s_bound) if s else "-",
                     _num(s.aggregate_tokens_s) if s else "-",
                     _num(s.prefill_s, 2) if s and s.prefill_s is not None else "-",
                     (f"{_sig(s.tokens_per_joule)} {bar(shown, top)}"
                      if req.rank == "power" and s and s.tokens_per_joule
                      else _sig(s.tokens_per_joule) if s else "-")])
    header = ["#", "configuration", "a device: needs / has", "memory in all",
              "decode tok/s a seq (est.)", "upper bound", f"at batch {req.batch} (est.)",
              "prefill s (est.)", "tokens/J (est.)"]
    title = (f"ranking by {req.rank}: feasible configurations at {req.dtype}, best first "
             "(estimates use the efficiency factors below; upper bounds use peak figures)")
    return title, header, rows


def footer(plan: Any) -> list[str]:
    """Lines under the tables: why fewer cards fail, assumptions, efficiency, formulas."""
    lines: list[str] = []
    top = plan.ranking[0] if plan.ranking else None
    if top is not None and top.kind == "card":
        placement = plan.placement(top.id)
        if placement.fails:
            lines.append(f"why not fewer {placement.card.name}:")
            lines.extend(f"  - {a.reason}" for a in placement.fails[-4:])
        if placement.speed:
            lines.append(f"how fast ({placement.config}; {placement.speed.basis}):")
            lines.extend(f"  - {n}" for n in placement.speed.notes)
    e = plan.efficiency
    lines.append(f"efficiency factors: bandwidth {e.bandwidth:g}, compute {e.compute:g}, link "
                 f"{e.link:g}, all-reduce latency {e.allreduce_latency_s * 1e6:g} us, layer "
                 f"overhead {e.layer_overhead_s * 1e6:g} us "
                 "(docs/planner.md; --bw-efficiency etc. or HAL_PLAN_* override)")
    lines.append("assumptions:")
    lines.extend(f"  - {a}" for a in plan.assumptions)
    lines.append("how each term is computed:")
    lines.extend(f"  - {n}" for n in plan.estimate.notes)
    return lines


def _plain(answer: str, tables: list[Table], lines: list[str]) -> str:
    out = [answer, ""]
    for title, header, rows in tables:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        out.append(title)
        out.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        for r in rows:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        out.append("")
    out.extend(lines)
    return "\n".join(out) + "\n"


def _rich(answer: str, tables: list[Table], lines: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    console.print(answer, style="bold", markup=False, highlight=False)
    for title, header, rows in tables:
        table = RichTable(title=title, title_justify="left")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i < 2 else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    for line in lines:
        console.print(line, markup=False, highlight=False)


def run(args: argparse.Namespace) -> int:
    """Print the plan; exit 0 (bad values raise ConfigError: exit 2)."""
    if args.plot is not None:
        from hal.planner.plot import check_target

        check_target(args.plot)  # before any work: a missing matplotlib is one line, exit 2
    plan = build(args)
    if args.plot is not None:
        from hal.planner.plot import plot

        plot(plan, args.plot)
    if args.json:
        json.dump(plan.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    tables = render(plan)
    lines = footer(plan)
    if args.plot is not None:
        lines.insert(0, f"picture written to {args.plot}")
    if sys.stdout.isatty():
        _rich(plan.answer, tables, lines)
    else:
        sys.stdout.write(_plain(plan.answer, tables, lines))
    return 0

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

from hal.commands import completes_path

#: Width of the compact bars next to key numbers.
BAR = 10


def _whole(flag: str) -> Any:
    """A flag's whole number, ASCII digits and a sign only; ``plan()`` checks its range."""
    from hal.parse import int_flag

    return int_flag(flag, lo=-(2**31), hi=2**31 - 1)


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
    p.add_argument("--dtype", default=None, help="weight format: fp32, fp16, bf16, fp8 "
                   "(128x128 block-scaled), int8 (W8A16), w8a8, int4, awq, gptq, nvfp4, mxfp4, "
                   "GGUF q2_k..q8_0 and iq1_s..iq4_nl, Unsloth ud-iq1_s..ud-q2_k_xl "
                   "(docs/planner.md: Weight formats; default: the checkpoint's own, e.g. fp8 "
                   "for DeepSeek-R1, else bf16)")
    p.add_argument("--no-convert", action="store_true",
                   help="refuse a format a card does not compute natively instead of converting "
                   "it (fp8 on a card without fp8 becomes w8a8 or bf16 otherwise)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: the weight dtype "
                   "for 16/32-bit weights, else fp16)")
    p.add_argument("--batch", type=_whole("--batch"), default=1, help="sequences at once (default 1)")
    p.add_argument("--context", type=_whole("--context"), default=4096,
                   help="tokens per sequence (default 4096)")
    p.add_argument("--train", action="store_true", help="training: gradients, Adam, activations")
    p.add_argument("--checkpointing", action="store_true",
                   help="with --train: activation checkpointing")
    p.add_argument("--tensor-parallel", type=_whole("--tensor-parallel"), default=1, metavar="N",
                   help="the breakdown per device under tensor parallelism of degree N")
    p.add_argument("--rank", choices=("memory", "speed", "power"), default=None,
                   help="one table of the feasible configurations, best first: least memory, "
                   "fastest decode, or most tokens a joule")
    p.add_argument("--cards", default=None, metavar="IDS",
                   help="catalogue cards to consider, comma-separated ids or name parts "
                   "(default all; 'none' for none)")
    p.add_argument("--max-tp", type=_whole("--max-tp"), default=8, metavar="N",
                   help="largest tensor-parallel degree (devices a node; default 8)")
    p.add_argument("--layout", default=None, metavar="KIND",
                   help="use only this layout kind: tp (tensor x pipeline parallel), "
                   "layer-split (llama.cpp --split-mode layer), offload (with --host), ep "
                   "(expert parallel, data-parallel attention) (default: the usual one for "
                   "each card)")
    p.add_argument("--host", default=None, metavar="ID",
                   help="host platform whose memory may hold an MoE's routed experts (tries "
                   "expert offload): desktop-ddr5-6000, xeon-8ch-ddr4-3200, xeon-8ch-ddr5-4800, "
                   "xeon-8ch-ddr5-4800-x2, epyc-12ch-ddr5-4800, epyc-12ch-ddr5-6000")
    p.add_argument("--mtp", nargs="?", const="0.85", default=None, metavar="ACCEPT",
                   help="speculative decoding with a multi-token-prediction draft (DeepSeek-V3/"
                   "R1's MTP module): 1 + ACCEPT tokens a step (default 0.85, the DeepSeek-V3 "
                   "report's acceptance); off unless given")
    p.add_argument("--engine", default=None, metavar="CLASS",
                   help="the serving engine class whose fitted costs the tensor-parallel and "
                   "expert-parallel rows use: serving-vllm (vLLM; default) or serving (SGLang, "
                   "TensorRT-LLM: fused MoE kernels, ~6x less a DeepSeek MoE layer; "
                   "hal/data/engines.json)")
    p.add_argument("--gpu-memory-utilization", default=None, metavar="F",
                   help="share of each card's memory a deployment may fill (default 0.9, "
                   "vLLM's default; the rest is the engine's margin)")
    for name, what in (("bw-efficiency", "decode's share of peak memory bandwidth"),
                       ("compute-efficiency", "prefill's share of peak dense TFLOPS"),
                       ("link-efficiency", "all-reduce's share of the link bandwidth"),
                       ("allreduce-latency", "seconds a small all-reduce costs in a node"),
                       ("node-latency", "seconds a small all-reduce costs across nodes"),
                       ("layer-overhead", "fixed seconds a layer costs a decode step"),
                       ("moe-layer-overhead", "seconds an MoE layer adds (routing, dispatch)"),
                       ("hop-latency", "seconds a pipeline stage takes to pass a token on"),
                       ("host-bw-efficiency", "offloaded experts' share of host bandwidth"),
                       ("moe-token-overhead", "seconds each sequence adds to an MoE layer")):
        p.add_argument(f"--{name}", default=None, metavar="X",
                       help=f"{what} (default: the engine class's, hal/data/engines.json; "
                       "HAL_PLAN_* variables too)")
    completes_path(p.add_argument(
        "--plot", default=None, metavar="FILE",
        help="write a PNG or SVG: memory by term against context, and the ranking "
        "(needs matplotlib: the plot extra, docs/planner.md)"))
    p.add_argument("--no-local", action="store_true",
                   help="skip the local devices (no device probe, no torch)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (compact; "
                   "with --all every field and formula)")
    p.add_argument("--all", action="store_true", help="every configuration, the per-card table "
                   "by format, the breakdown and every formula (default: the answer and the "
                   "top 10 in one screen)")
    p.add_argument("--emit", default=None, metavar="ENGINE", choices=("vllm", "sglang", "llama.cpp"),
                   help="print the launch command of the top configuration for vllm, sglang or "
                   "llama.cpp (one line a node; docs/planner.md: Launch lines)")
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
                 "layer_overhead_s": args.layer_overhead, "node_latency_s": args.node_latency,
                 "moe_layer_s": args.moe_layer_overhead, "hop_s": args.hop_latency,
                 "host_bandwidth": args.host_bw_efficiency,
                 "moe_token_s": args.moe_token_overhead}
    return plan(args.model, args.dtype, kv_dtype=args.kv_dtype, batch=args.batch,
                context=args.context, train=args.train, checkpointing=args.checkpointing,
                tensor_parallel=args.tensor_parallel, cards=cards, local=not args.no_local,
                rank=args.rank, max_tp=args.max_tp, efficiency_overrides=overrides,
                convert=not args.no_convert,
                gpu_memory_utilization=args.gpu_memory_utilization, layout=args.layout,
                host=args.host, mtp=args.mtp, engine=args.engine)


def _emit(plan: Any, args: argparse.Namespace) -> int:
    """Print the launch lines of the plan's top configuration (``--emit``); JSON with --json."""
    from hal.planner.emit import emit, launch_from_plan

    launch, config, note = launch_from_plan(plan, args.model)
    lines = emit(args.emit, launch)
    if args.json:
        json.dump({"engine": args.emit, "configuration": config, "conversion": note or None,
                   "launch": launch.__dict__, "lines": lines}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    head = [f"# {config}, {launch.quant} weights (hal plan estimate)"]
    if note:
        head.append(f"# {note}")
    if len(lines) > 1:
        head.append("# one line a node, the head node first: replace HEAD_NODE_IP with its address")
    sys.stdout.write("\n".join([*head, *lines]) + "\n")
    return 0


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


#: The default answer fits a terminal this wide.
WIDTH = 100


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def compact(plan: Any) -> str:
    """The one-screen answer: a first line that answers, its caveat, the top 10 by the
    ranking within :data:`WIDTH` columns (every "-" says why on its row), then a few lines."""
    import textwrap

    from hal.planner.planning import TOP, why_missing
    from hal.units import format_bytes

    req, spec = plan.request, plan.spec
    rows = plan.ranking[:TOP]
    by = req.rank or "memory"
    out: list[str] = []
    if rows:
        top = rows[0]
        s = top.speed
        first = f"{spec.name}: {top.config}"
        if s and s.decode_tokens_s:
            first += f", ~{s.decode_tokens_s:,.1f} tok/s a sequence (estimate)"
        out.append(_short(first, WIDTH))
        what = {"memory": "least memory", "speed": "fastest", "power": "most tokens a joule"}[by]
        caveat = (f"{req.dtype} weights, context {req.context:,}, batch {req.batch}; {what}"
                  f" of {len(plan.ranking)} that fit, {format_bytes(top.needed_per_device)} a "
                  f"device; decode is an estimate for the {req.engine} engine class: "
                  "published MoE runs of one setup differ by up to 3x between engines "
                  "(--engine; docs/planner.md)")
        out.extend(textwrap.wrap(caveat, WIDTH, initial_indent="  ", subsequent_indent="  "))
    else:
        out.extend(textwrap.wrap(plan.answer, WIDTH, subsequent_indent="  "))
    if rows:
        header = ["#", "configuration", "needs/usable", "decode", "prefill", "note"]
        by_id = {(p.card.id, p.dtype): p for p in plan.placements}
        body = []
        for i, r in enumerate(rows, 1):
            s = r.speed
            p = by_id.get((r.id, req.dtype))
            usable = p.capacity if p is not None else r.capacity_per_device
            note = (why_missing(p) if p is not None else
                    None if s and s.decode_tokens_s else "no rates: hal bench --save") or ""
            body.append([str(i), r.config, f"{r.needed_per_device / 2**30:,.0f}/"
                         f"{usable / 2**30:,.0f} GiB",
                         _num(s.decode_tokens_s) if s and s.decode_tokens_s else "-",
                         _num(s.prefill_s, 2) if s and s.prefill_s is not None else "-", note])
        fixed = sum(max(len(str(x[c])) for x in [header, *body]) for c in (0, 2, 3, 4, 5))
        room = WIDTH - 2 - 2 * (len(header) - 1) - fixed
        for b in body:
            b[1] = _short(b[1], room)
        if not any(b[5] for b in body):
            header, body = header[:5], [b[:5] for b in body]
        widths = [max(len(str(x[c])) for x in [header, *body]) for c in range(len(header))]
        out.append("")
        out.append(_short(f"top {len(rows)} by {by} (decode tok/s a sequence and prefill s: "
                          "estimates; --all for every row and formula)", WIDTH))
        for line in [header, *body]:
            out.append(("  " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths))).rstrip())
        if len(plan.ranking) > TOP:
            out.append(f"  ... {len(plan.ranking) - TOP} more with --all")
    if plan.local:
        for d in plan.local:
            verdict = ("fits" if d.fits_free else "fits when empty" if d.fits_total
                       else "does not fit")
            out.append(_short(f"local {d.backend}:{d.index} ({d.name}): {verdict}, needs "
                              f"{format_bytes(d.needed)} of {format_bytes(d.free)} free", WIDTH))
    out.append(_short(f"{spec.name}: {spec.params_total / 1e9:.1f}B params, weights "
                      f"{format_bytes(plan.estimate.weights)} in all; usable: memory x "
                      "--gpu-memory-utilization", WIDTH))
    return "\n".join(out) + "\n"


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
    if args.emit is not None:
        return _emit(plan, args)
    if args.plot is not None:
        from hal.planner.plot import plot

        plot(plan, args.plot)
    if args.json:
        if args.all:
            json.dump(plan.as_dict(), sys.stdout, indent=2)
        else:
            json.dump(plan.as_dict(full=False), sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    if not args.all:
        text = compact(plan)
        if args.plot is not None:
            text += f"picture written to {args.plot}\n"
        sys.stdout.write(text)
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

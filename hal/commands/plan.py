"""``hal plan MODEL``: the memory breakdown, the fit on local devices, and the cards that run it.

The planner and catalogue are torch-free; ``--no-local`` skips the device probe (and plugin
loading) entirely, so the answer comes from arithmetic alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

#: Weight formats the catalogue table compares, most precise first.
TABLE_FORMATS = ("bf16", "fp8", "int8", "int4")


def add_parser(sub: Any) -> None:
    """Register the ``plan`` command."""
    p = sub.add_parser(
        "plan", help="how much memory a model needs, and which devices and cards run it",
        description="Estimate weights, KV cache, activations and overhead for MODEL: a "
        "parameter count (13B, 350M), a Hugging Face config.json, or a preset "
        "(deepseek-r1, deepseek-r1-distill-qwen-14b, ...).",
    )
    p.add_argument("model", metavar="MODEL", help="parameter count, config.json path or preset")
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
                   help="figures per device under tensor parallelism of degree N")
    p.add_argument("--no-local", action="store_true",
                   help="skip the local devices (no device probe, no torch)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _context_room(spec: Any, acc: Any, dtype: str, args: argparse.Namespace) -> int:
    from hal.planner.fit import max_context

    return max_context(spec, acc, batch=1, dtype=dtype, kv_dtype=args.kv_dtype,
                       mode="train" if args.train else "inference",
                       checkpointing=args.checkpointing, tensor_parallel=args.tensor_parallel,
                       use_free=False, limit=1 << 22)


def catalogue_rows(spec: Any, args: argparse.Namespace, entries: list[Any]) -> list[dict[str, Any]]:
    """Per card: for each weight format, whether batch 1 fits and the context that fits."""
    from hal.planner.estimate import estimate
    from hal.planner.fit import fits

    rows = []
    formats = [f for f in TABLE_FORMATS if not (args.train and f in ("fp8", "int8", "int4"))]
    if args.dtype not in formats:
        formats.append(args.dtype)
    for acc in entries:
        cells: dict[str, Any] = {}
        for dtype in formats:
            est = estimate(spec, dtype=dtype, kv_dtype=args.kv_dtype, batch=1,
                           context=args.context, mode="train" if args.train else "inference",
                           checkpointing=args.checkpointing,
                           tensor_parallel=args.tensor_parallel)
            ok = fits(est, acc).fits_total
            room = _context_room(spec, acc, dtype, args) if ok else 0
            cells[dtype] = {"fits": ok, "needed": est.total, "max_context": room}
        rows.append({"id": acc.id, "name": acc.name, "memory_bytes": acc.memory_bytes,
                     "shared_memory": acc.shared_memory, "backend": acc.backend,
                     "provider": acc.provider, "formats": cells})
    return rows


def local_fits(spec: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each available local device's total and free memory against the estimate."""
    from hal.inventory import _guard
    from hal.planner.estimate import DEFAULT_RUNTIME_BYTES, estimate
    from hal.planner.fit import fits
    from hal.plugins import load_plugins
    from hal.selection import select

    selected = select()
    available = {c.name for c in selected.candidates if c.available}  # probed once, there
    out = []
    for backend in load_plugins().backends():
        if backend.name not in available:
            continue
        errors: list[str] = []
        # a CPU has no runtime context to pay for; accelerators keep the default
        runtime = 0 if backend.device_type == "cpu" else DEFAULT_RUNTIME_BYTES
        est = estimate(spec, dtype=args.dtype, kv_dtype=args.kv_dtype, batch=args.batch,
                       context=args.context, mode="train" if args.train else "inference",
                       checkpointing=args.checkpointing, tensor_parallel=args.tensor_parallel,
                       runtime_bytes=runtime)
        for info in _guard(backend.devices, errors, "devices()") or []:
            mem = _guard(functools.partial(backend.memory, info.index), errors, "memory()")
            if mem is None or mem.total <= 0:
                continue
            fit = fits(est, mem)
            row = fit.as_dict()
            row.update({"backend": backend.name, "index": info.index, "device": info.name,
                        "selected": backend.name == selected.backend.name})
            out.append(row)
    return out


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``hal plan`` shows, as one JSON-able dict."""
    from hal.planner.catalogue import catalogue
    from hal.planner.estimate import dtype_name, estimate
    from hal.planner.models import resolve

    args.dtype = dtype_name(args.dtype)
    if args.kv_dtype is not None:
        args.kv_dtype = dtype_name(args.kv_dtype, kv=True)
    if args.checkpointing and not args.train:
        from hal.errors import ConfigError

        raise ConfigError("--checkpointing applies to training; add --train")
    spec = resolve(args.model)
    est = estimate(spec, dtype=args.dtype, kv_dtype=args.kv_dtype, batch=args.batch,
                   context=args.context, mode="train" if args.train else "inference",
                   checkpointing=args.checkpointing, tensor_parallel=args.tensor_parallel)
    entries = catalogue(plugins=not args.no_local)
    return {
        "schema": "hal.plan/1",
        "model": {"name": spec.name, "kind": spec.kind, "params_total": spec.params_total,
                  "params_active": spec.params_active, "attention": spec.attention,
                  "layers": spec.num_layers, "max_context": spec.max_context,
                  "source": spec.source},
        "estimate": est.as_dict(),
        "local": None if args.no_local else local_fits(spec, args),
        "catalogue": catalogue_rows(spec, args, entries),
    }


def _tokens(n: int, limit: int | None) -> str:
    if limit and n >= limit:
        return f"{limit:,} (max)"
    return f"{n:,}"


def render(data: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, list[str],
                                                                          list[list[str]]]]:
    """The report as (title, header, rows) tables, shared by the plain and rich printers."""
    from hal.units import format_bytes

    est, model = data["estimate"], data["model"]
    tables = []
    rows = [[name.replace("_", " "), format_bytes(value), f"{value:,}"]
            for name, value in est.items() if name in (
                "weights", "weight_scales", "gradients", "optimizer", "kv_cache", "activations",
                "overhead") and (value or name in ("weights", "kv_cache", "activations"))]
    rows.append(["total", format_bytes(est["total"]), f"{est['total']:,}"])
    active = (f", {model['params_active'] / 1e9:.1f}B active"
              if model["params_active"] != model["params_total"] else "")
    tp = f", per device at tensor parallel {est['tensor_parallel']}" \
        if est["tensor_parallel"] > 1 else ""
    title = (f"{model['name']}: {model['params_total'] / 1e9:.2f}B params{active} "
             f"({model['kind']}, {model['attention']} attention) - {est['mode']}, "
             f"{est['dtype']} weights, {est['kv_dtype']} KV cache, batch {est['batch']}, "
             f"context {est['context']:,}{tp}")
    tables.append((title, ["term", "size", "bytes"], rows))
    if data["local"] is not None:
        local_rows = []
        for d in data["local"]:
            verdict = ("fits" if d["fits_free"] else
                       "fits when the device is empty" if d["fits_total"] else "does not fit")
            local_rows.append([f"{d['backend']}:{d['index']}" + (" *" if d["selected"] else ""),
                               d["device"], format_bytes(d["total"]), format_bytes(d["free"]),
                               verdict, format_bytes(abs(d["headroom"]))
                               + (" left" if d["headroom"] >= 0 else " short")])
        tables.append(("local devices (* selected)",
                       ["device", "name", "total", "free", "verdict", "headroom"], local_rows))
    formats = list(data["catalogue"][0]["formats"]) if data["catalogue"] else []
    limit = model["max_context"]
    cat_rows = []
    for row in data["catalogue"]:
        cells = [row["name"] + (" (shared)" if row["shared_memory"] else ""),
                 format_bytes(row["memory_bytes"])]
        for f in formats:
            cell = row["formats"][f]
            cells.append(_tokens(cell["max_context"], limit) if cell["fits"] else "-")
        cat_rows.append(cells)
    header = ["card", "memory"] + [f + (" *" if f == est["dtype"] else "") for f in formats]
    tables.append((f"cards: tokens of context that fit at batch 1, by weight format "
                   f"(- : does not fit at context {est['context']:,}; * : --dtype)",
                   header, cat_rows))
    return tables


def _plain(tables: list[tuple[str, list[str], list[list[str]]]], notes: list[str]) -> str:
    lines: list[str] = []
    for title, header, rows in tables:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        lines.append(title)
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("")
    lines.append("how each term is computed:")
    lines.extend(f"  - {n}" for n in notes)
    return "\n".join(lines) + "\n"


def _rich(tables: list[tuple[str, list[str], list[list[str]]]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, header, rows in tables:
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i < 2 else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    console.print("[bold]how each term is computed:[/bold]")
    for n in notes:
        console.print(f"  - {n}", markup=False)


def run(args: argparse.Namespace) -> int:
    """Print the plan; exit 0 (bad values raise ConfigError: exit 2)."""
    data = collect(args)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    tables = render(data, args)
    notes = data["estimate"]["notes"]
    if sys.stdout.isatty():
        _rich(tables, notes)
    else:
        sys.stdout.write(_plain(tables, notes))
    return 0

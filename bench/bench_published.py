"""hal's answer beside published deployments (bench/published.json): decode, memory, card counts.

``python bench/bench_published.py`` prints the markdown table of docs/planner.md ("Checked
against the world"); tests/test_planner_published.py holds each row to its tolerance.  Every
figure goes through the planner's public seams: ``memory`` and ``speed`` at the row's layout
with the card's catalogue rates and the layout's engine-class factors, or ``plan`` for a card
count.  Nothing is fitted per row: the engine factors in hal/data/engines.json are the same
for every row of an engine class.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal.planner.catalogue import find, find_host
from hal.planner.estimate import Workload, memory
from hal.planner.formats import Format
from hal.planner.layouts import (
    LAYOUTS,
    ExpertOffload,
    ExpertParallel,
    LayerSplit,
    Layout,
    TensorPipeline,
)
from hal.planner.models import from_config, resolve
from hal.planner.planning import _rates, plan
from hal.planner.speed import Efficiency, efficiency, engines, speed

DATA = Path(__file__).with_name("published.json")
#: Tolerances the issue sets: decode within 35 %, memory within 10 %, counts exact.
DECODE_TOLERANCE, MEMORY_TOLERANCE = 0.35, 0.10


def load() -> dict[str, Any]:
    """The data file."""
    return dict(json.loads(DATA.read_text(encoding="utf-8")))


def quantized(bpw: float) -> Format:
    """A quantized format of ``bpw`` average bits a weight (a GGUF or GPTQ file's figure), scales
    included; embeddings and lm_head kept in 16-bit."""
    return Format(f"{bpw:g}-bit", "gptq", bpw, 0.0, 16, "fp16", True,
                  "the published file's average bits a weight")


def layout_of(row: dict[str, Any]) -> Layout | None:
    """The row's layout (None: hal's own choice, from plan())."""
    lay = row.get("layout")
    if lay is None:
        return None
    kind = lay["kind"]
    if kind == "tp":
        return TensorPipeline(lay.get("tp", 1), lay.get("pp", 1))
    if kind == "layer-split":
        return LayerSplit(lay["devices"])
    if kind == "offload":
        return ExpertOffload(lay.get("gpus", 1))
    if kind == "ep":
        return ExpertParallel(lay["devices"])
    raise KeyError(f"row {row['id']}: layout kind {kind!r} not in {sorted(LAYOUTS)}")


@dataclass(frozen=True)
class Result:
    """One row: hal's figure, the published range and the error to its nearer end."""

    row: dict[str, Any]
    hal: float
    low: float
    high: float
    layout: str

    @property
    def error(self) -> float:
        """hal / published - 1, to the nearer end of the published range (0 inside it)."""
        if self.low <= self.hal <= self.high:
            return 0.0
        end = self.low if self.hal < self.low else self.high
        return self.hal / end - 1

    @property
    def within(self) -> bool:
        """Inside the tolerance of the row's kind."""
        kind = self.row["kind"]
        if kind == "count":
            return self.hal == self.low
        limit = DECODE_TOLERANCE if kind == "decode" else MEMORY_TOLERANCE
        return abs(self.error) <= limit


def prepared(row: dict[str, Any], models: dict[str, Any]) -> tuple[Workload, Layout | None, Any, Any]:
    """The row's workload, layout (None for a card count), card and host."""
    name = row["model"]
    spec = from_config(models[name], name=name) if name in models else resolve(name)
    fmt = quantized(row["bpw"]) if "bpw" in row else None
    work = Workload(spec, row.get("dtype") or "fp16", batch=row["batch"], context=row["context"],
                    weight_format=fmt)
    host = find_host(row["host"]) if row.get("host") else None
    if row["kind"] == "count":
        return work, None, row["card"], host
    layout = layout_of(row)
    if layout is None:
        p = plan(spec, work.dtype, batch=work.batch, context=work.context, local=False,
                 cards=[row["card"]], formats=(work.dtype,))
        chosen = p.placement(row["card"]).layout
        assert chosen is not None, row["id"]
        layout = chosen
    return work, layout, find(row["card"]), host


def engine_of(row: dict[str, Any], layout: Layout) -> str:
    """The engine class whose factors apply: the row's ``engine`` (the engine that ran it, where
    its class differs from the layout's, e.g. serving-vllm), else the layout's."""
    return str(row.get("engine") or layout.engine)


def decode_speed(row: dict[str, Any], models: dict[str, Any],
                 factors: dict[str, Efficiency] | None = None) -> tuple[Any, Layout]:
    """The speed() of a decode row at its layout, with its engine class's factors (``factors``
    replaces the shipped ones: the fit's trials)."""
    work, layout, card, host = prepared(row, models)
    assert layout is not None, row["id"]
    cls = engine_of(row, layout)
    base = (factors or {}).get(cls) or engines()[cls].factors
    eff = efficiency(environ={}, base=base)
    return speed(work, layout, _rates(card, host), eff), layout


def evaluate(row: dict[str, Any], models: dict[str, Any]) -> Result:
    """hal's answer for one row."""
    published = row["published"]
    low, high = (published, published) if not isinstance(published, list) else published
    if row["kind"] == "count":
        work, _, card_id, _ = prepared(row, models)
        p = plan(work.spec, work.dtype, batch=work.batch, context=work.context, local=False,
                 cards=[card_id], formats=(work.dtype,), host=row.get("host"))
        placed = p.placement(card_id)
        count = placed.layout.count if placed.layout else 0
        return Result(row, count, low, high, placed.layout.label if placed.layout else "-")
    if row["kind"] == "memory":
        work, layout, _, _ = prepared(row, models)
        assert layout is not None
        est = memory(work, layout)
        value = {"weights": est.weights + est.weight_scales, "total": est.total,
                 "host": est.host}[row["term"]]
        return Result(row, value, low, high, layout.label)
    s, layout = decode_speed(row, models)
    return Result(row, s.decode_tokens_s or 0.0, low, high, layout.label)


def results() -> list[Result]:
    """Every row evaluated."""
    data = load()
    return [evaluate(r, data["models"]) for r in data["rows"]]


def _figure(kind: str, x: float) -> str:
    if kind == "decode":
        return f"{x:,.1f} tok/s"
    if kind == "memory":
        return f"{x / 2**30:,.1f} GiB"
    return f"{x:g} cards"


def table(rows: list[Result]) -> str:
    """The markdown table of docs/planner.md."""
    out = ["| group | deployment | published | hal (layout) | error | source |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        row = r.row
        kind = row["kind"]
        pub = (_figure(kind, r.low) if r.low == r.high
               else f"{_figure(kind, r.low)} - {_figure(kind, r.high)}")
        what = (f"{row['model']} {row.get('dtype') or str(row['bpw']) + ' bpw'}, "
                f"{row['card']}" + (f" + {row['host']}" if row.get("host") else "")
                + (f", batch {row['batch']}, context {row['context']:,}" if kind == "decode"
                   else f", {row.get('term', 'count')}"))
        err = ("exact" if kind == "count" and r.within else
               f"{r.error:+.0%}" + ("" if r.within else " (explained)"
                                    if row.get("explained") else " OUT"))
        out.append(f"| {row['group']} | {what} | {pub} | {_figure(kind, r.hal)} ({r.layout}) "
                   f"| {err} | {row['source']}"
                   + (f" - outside: {row['explained']}" if row.get("explained") else "") + " |")
    return "\n".join(out)


def main() -> int:
    """Print the table and a summary; exit 1 when a row without an explanation is outside."""
    rows = results()
    print(table(rows))
    decode = [abs(r.error) for r in rows if r.row["kind"] == "decode"
              and not r.row.get("explained")]
    bad = [r.row["id"] for r in rows if not r.within and not r.row.get("explained")]
    print(f"\n{len(rows)} rows; decode |error| median {sorted(decode)[len(decode) // 2]:.0%}, "
          f"worst {max(decode):.0%}; outside without explanation: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

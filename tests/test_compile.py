"""hal inside torch.compile and torch.export: a cold get_device()/autocast() in traced code, and
HAL_PRECISION changes after compiling (docs/torch-compile.md).

Tiny modules and Dynamo's ``eager`` backend (no code generation), so each test costs Dynamo's
tracing only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import hal
from hal import selection

pytestmark = pytest.mark.compile


class Tiny(torch.nn.Module):
    """A forward that asks hal for its device and autocast, as model code does."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with hal.autocast():
            return self.layer(x.to(hal.get_device()))


@pytest.fixture
def cold(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tiny]:
    """No selection made yet in this process, no compiled code cached; cpu chosen, bf16 asked for."""
    for var in ("HAL_DEVICE", "HAL_STRICT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HAL_PLUGINS", "cpu")
    monkeypatch.setenv("HAL_PRECISION", "bf16")
    hal.reset()
    torch._dynamo.reset()
    assert selection._selection is None
    yield Tiny()
    torch._dynamo.reset()
    hal.reset()


def test_cold_start_inside_fullgraph_compile(cold: Tiny) -> None:
    out = torch.compile(cold, fullgraph=True, backend="eager")(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    # The selection was made for real at trace time and is the process's selection from now on.
    assert selection._selection is not None and hal.get_device() == torch.device("cpu")


def test_cold_start_has_one_graph_and_no_break(cold: Tiny) -> None:
    report = torch._dynamo.explain(cold)(torch.randn(2, 4))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_cold_start_inside_strict_export(cold: Tiny) -> None:
    exported = torch.export.export(cold, (torch.randn(2, 4),), strict=True)
    x = torch.randn(2, 4)
    assert exported.module()(x).dtype == torch.bfloat16
    assert torch.equal(exported.module()(x), cold(x))


def test_a_precision_change_after_compiling_recompiles(cold: Tiny,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = torch.compile(cold, fullgraph=True, backend="eager")
    x = torch.randn(2, 4)
    assert compiled(x).dtype == torch.bfloat16
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    assert compiled(x).dtype == torch.float32  # Dynamo's guard on HAL_PRECISION: recompiled
    assert cold(x).dtype == torch.float32  # eager agrees
    monkeypatch.setenv("HAL_PRECISION", "bf16")
    assert compiled(x).dtype == torch.bfloat16


def test_warm_selection_is_one_graph_and_follows_a_precision_change(
        cold: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    hal.get_device()
    with hal.autocast():
        pass
    report = torch._dynamo.explain(cold)(torch.randn(2, 4))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons
    compiled = torch.compile(cold, fullgraph=True, backend="eager")
    assert compiled(torch.randn(2, 4)).dtype == torch.bfloat16
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    assert compiled(torch.randn(2, 4)).dtype == torch.float32

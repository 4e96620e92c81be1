"""hal.optimize on the CPU: intel-extension-for-pytorch applied for real, or the model unchanged.

The IPEX tests run in ``tox -e ipex`` (torch 2.8 with IPEX 2.8.0 from the registry); elsewhere, or
when the registry could not deliver them, they skip with the reason.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest
import torch

import hal
from hal.backends.cpu import CpuBackend

IN_ENV = os.environ.get("HAL_TEST_IPEX") == "1"


def ipex_version() -> str | None:
    try:
        return importlib.metadata.version("intel-extension-for-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _matching() -> bool:
    v = ipex_version()
    return v is not None and v.split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]


needs_ipex = pytest.mark.skipif(
    not _matching(),
    reason=("the registry did not deliver torch 2.8 with intel-extension-for-pytorch 2.8.0 "
            "(see the pip error in the tox log)") if IN_ENV else
    f"needs intel-extension-for-pytorch matching torch {torch.__version__} (tox -e ipex)")


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 16 * 16, 64), torch.nn.GELU(), torch.nn.Linear(64, 10)).eval()


def ipex_modules(m: torch.nn.Module) -> list[str]:
    return [type(x).__qualname__ for x in m.modules()
            if type(x).__module__.startswith("intel_extension_for_pytorch")]


@pytest.mark.skipif(ipex_version() is not None, reason="IPEX is installed here")
def test_without_ipex_the_model_comes_back_unchanged() -> None:
    m = model()
    assert CpuBackend().optimize(m) is m
    assert hal.get_backend("cpu").optimize(m) is m


@needs_ipex
def test_hal_optimize_applies_ipex_and_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_DEVICE", "cpu")
    hal.reset()
    m = model()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        eager = m(x)
        optimized = hal.optimize(m)
        got = optimized(x)
    hal.reset()
    assert ipex_modules(optimized), "no module was replaced by IPEX"
    assert not ipex_modules(m) or optimized is not m
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)


@needs_ipex
def test_a_training_model_is_left_to_the_caller() -> None:
    m = model().train()
    assert CpuBackend().optimize(m) is m  # ipex.optimize for training needs the optimizer too

"""A CUDA-only inference script, unchanged, on a real PrivateUse1 device through hal's generic backend.

The device is the suite's ``halsim`` (torch's Python-only PrivateUse1 route, loaded by torch's
backend autoload; see test_backend_accelerator.py), given kernels here so that a model really
runs on it: every aten op on a ``halsim`` tensor runs on the host data it wraps, and its results
are ``halsim`` tensors again.  No hal plugin: hal finds it through ``torch.accelerator``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ISOLATED_VARS, make_dist

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "cuda_only"
pytestmark = pytest.mark.slow
python_route = pytest.mark.skipif(
    not hasattr(torch.utils.backend_registration, "_setup_privateuseone_for_python_backend")
    or torch.accelerator.current_accelerator() is not None,
    reason=f"torch {torch.__version__} has no Python-only PrivateUse1 route, or is a build whose "
           "current accelerator is already set")
openreg = pytest.mark.skipif(
    importlib.util.find_spec("torch_openreg") is None,
    reason="needs torch_openreg built and installed (tox -e openreg)")

DEVICE_MODULE = '''
    """halsim: a PrivateUse1 device whose kernels run on the host data each tensor wraps."""
    import torch
    import torch.utils.backend_registration as br
    from torch.utils._pytree import tree_leaves, tree_map

    NAME = "halsim"


    def _autoload():
        br._setup_privateuseone_for_python_backend(NAME)


    class HalsimTensor(torch.Tensor):
        """A halsim tensor: torch sees device halsim:0; ``raw`` holds its values on the host."""

        @staticmethod
        def __new__(cls, raw):
            made = torch.Tensor._make_wrapper_subclass(
                cls, raw.shape, strides=raw.stride(), dtype=raw.dtype,
                device=torch.device(NAME, 0), requires_grad=raw.requires_grad)
            made.raw = raw
            return made

        __torch_function__ = torch._C._disabled_torch_function_impl

        @classmethod
        def __torch_dispatch__(cls, op, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            dev = kwargs.get("device")
            leaves = tree_leaves((args, kwargs))
            onto = (torch.device(dev).type == NAME if dev is not None
                    else any(isinstance(a, HalsimTensor) for a in leaves))
            host = tree_map(_host, (args, kwargs))
            out = op(*host[0], **host[1])
            if not onto:
                return out
            mine = {id(a.raw): a for a in leaves if isinstance(a, HalsimTensor)}
            return tree_map(lambda o: (mine[id(o)] if id(o) in mine else HalsimTensor(o))
                            if isinstance(o, torch.Tensor) else o, out)


    def _host(value):
        if isinstance(value, HalsimTensor):
            return value.raw
        if isinstance(value, torch.device) and value.type == NAME:
            return torch.device("cpu")
        return value


    def _factory(op, *args, **kwargs):
        return HalsimTensor.__torch_dispatch__(op, (), args, kwargs)


    _lib = torch.library.Library("_", "IMPL")
    _lib.fallback(_factory, dispatch_key="PrivateUse1")
'''


@pytest.fixture(scope="module")
def halsim_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution whose ``torch.backends`` entry point registers the ``halsim`` device."""
    return make_dist(tmp_path_factory.mktemp("halsim-kernels"), "halsim", "0.1",
                     {"halsim": "halsim:_autoload"}, {"halsim": DEVICE_MODULE},
                     group="torch.backends")


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    # cwd outside the checkout: a stale *.egg-info there would shadow the installed entry points.
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=site)


@python_route
def test_the_cuda_only_inference_script_runs_unchanged_on_the_privateuse1_device(
        halsim_site: Path) -> None:
    done = _run(halsim_site, "-m", "hal.cuda_compat", str(SCRIPTS / "inference.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    # torch's own warnings (no numpy in a lean env) may come first: hal says its line once
    said = [x for x in done.stderr.splitlines() if x.startswith("hal: ")]
    assert len(said) == 1 and said[0].startswith(
        "hal: cuda-compat: 'cuda' maps to halsim (backend accelerator): "
        "accelerator is the highest-priority available backend")
    lines = done.stdout.splitlines()
    assert lines[0] == "GPU: halsim:0 of 1"
    got = json.loads(lines[-1])
    assert got["device"] == "halsim:0"
    assert got["labels"] == got["expected"]  # the device's answers are the host's
    assert got["probs_sum"] == 8.0


@python_route
def test_memory_figures_the_device_does_not_report_are_refused_not_zero(halsim_site: Path) -> None:
    code = ("import hal.cuda_compat as c, torch; c.enable(quiet=True)\n"
            "x = torch.ones(4, device='cuda'); print(x.device)\n"
            "torch.cuda.memory_allocated()\n")
    done = _run(halsim_site, "-c", code)
    assert done.stdout.strip() == "halsim:0"
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hal.errors.UnmappedCallError: torch.cuda.memory_allocated has no "
                           "equivalent on accelerator (halsim) under hal's cuda-compat mode: "
                           "accelerator does not report memory figures (not reported: ")


@openreg
def test_the_inference_script_runs_unchanged_on_torch_openreg(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    done = subprocess.run([sys.executable, "-m", "hal.cuda_compat", str(SCRIPTS / "inference.py")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.startswith("hal: cuda-compat: 'cuda' maps to openreg (backend accelerator)")
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["device"] == "openreg:0"
    assert got["labels"] == got["expected"] and got["probs_sum"] == 8.0

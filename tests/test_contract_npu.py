"""Every name the Ascend backend touches exists in the real torch_npu, read from its wheel.

torch_npu cannot be imported without CANN, so the wheel that matches the installed torch is
fetched with ``pip download`` into a cache (or taken from HAL_TEST_TORCH_NPU_WHEEL) and its
``torch_npu/npu`` sources are parsed with ``ast`` straight from the zip.  Device-property
attributes live in the C++ extension: they are checked as C strings in libtorch_npu.so.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from hal.backends.ascend import AscendBackend
from hal.backends.ascend.testing import fake_npu as fn
from hal.backends.ascend.testing.contract_npu import (
    binary_strings_present,
    npu_names,
    obtain_wheel,
    wheel_version,
)
from hal.testing.contract import (
    ContractError,
    Recorder,
    check_against,
    contract_problems,
    exercise,
    record,
)
from hal.testing.fake_allocator import mirrored_names
from hal.versions import release_text

PROPS = "get_device_properties()"
ENV = {"ASCEND_TOOLKIT_HOME": "/t", "LD_LIBRARY_PATH": "/t/lib64"}


@pytest.fixture(scope="module")
def wheel() -> Path:
    release = release_text(torch.__version__) or torch.__version__
    path, why = obtain_wheel(release)
    if path is None:
        pytest.skip(f"no torch-npu wheel to read (registry unreachable?): {why}")
    return path


@pytest.fixture(scope="module")
def real_names(wheel: Path) -> dict[str, inspect.Signature | None]:
    return npu_names(wheel)


def recorded_run(fake: fn.FakeNpu) -> tuple[Recorder, list[str]]:
    proxy, rec = record(fake.module, wrap_results=("get_device_properties",))
    exercise(AscendBackend(proxy, fake.loader, "/nonexistent", environ=ENV,
                           versions_of=fake.versions_of()))
    props = sorted({n.split("().", 1)[1] for n in rec.names if n.startswith(PROPS + ".")})
    return rec, props


def test_the_wheel_matches_the_installed_torch(wheel: Path) -> None:
    # torch_npu X.Y.Z[.postN] pins torch X.Y.Z; if none exists yet the newest was fetched.
    release = release_text(torch.__version__)
    if release_text(wheel_version(wheel)) != release:
        pytest.skip(f"no torch-npu release for torch {release}; checked {wheel.name} instead")
    assert wheel.name.startswith(f"torch_npu-{release}")


def test_backend_uses_only_real_torch_npu_names(wheel: Path,
                                                real_names: dict[str, Any]) -> None:
    for spec in (fn.ASCEND_910B, fn.ASCEND_310P3, fn.NpuSpec("AscendX", 999, 1, 1, 1, 0, 0, False)):
        rec, props = recorded_run(fn.fake_npu(spec))
        assert {"device_count", "get_device_name", "mem_get_info"} <= set(rec.names)
        check_against(rec, real_names, namespaces={PROPS: set(props)})
        present = binary_strings_present(wheel, props)
        assert all(present.values()), f"not in libtorch_npu.so: {present}"
    assert "utils.get_soc_version" in rec.names and "is_bf16_supported" in rec.names


def test_the_early_2_1_path_uses_only_real_names(real_names: dict[str, Any]) -> None:
    fake = fn.fake_npu(mem_get_info=False)
    proxy, rec = record(fake.module, wrap_results=("get_device_properties",))
    AscendBackend(proxy, fake.loader, "/none", environ=ENV,
                  versions_of=fake.versions_of()).memory(0)
    assert "mem_get_info" in rec.missing_in_fake
    check_against(rec, real_names, namespaces={PROPS: {"total_memory"}})


def test_the_fake_mirrors_every_public_name_with_the_real_signature(
        real_names: dict[str, Any]) -> None:
    fake = fn.fake_npu().module
    public = mirrored_names(fn.FakeNpuModule, private=False)
    assert {"memory_allocated", "empty_cache", "get_device_name"} <= set(public)
    mirrored = Recorder(objects={name: getattr(fake, name) for name in public})
    mirrored.objects["utils.get_soc_version"] = fake.utils.get_soc_version
    assert contract_problems(mirrored, real_names) == []


def test_real_oom_text_and_property_names_are_in_the_binary(wheel: Path) -> None:
    attrs = [a for a in vars(fn._NPUDeviceProperties(fn.ASCEND_910B)) if not a.startswith("_")]
    present = binary_strings_present(wheel, [*attrs, "NPU out of memory. Tried to allocate "])
    assert all(present.values()), present
    assert binary_strings_present(wheel, ["gcnArchName_of_a_gpu"]) == {
        "gcnArchName_of_a_gpu": False}


def test_contract_fails_when_a_backend_uses_a_name_torch_npu_lacks(
        real_names: dict[str, Any]) -> None:
    class Drifted(AscendBackend):
        def memory(self, index: int = 0) -> Any:
            self.module.get_device_uuid(index)  # torch.cuda has it; torch_npu does not
            return super().memory(index)

    fake = fn.fake_npu()
    fake.module.get_device_uuid = lambda device=None: "uuid"  # type: ignore[attr-defined]
    proxy, rec = record(fake.module)
    Drifted(proxy, fake.loader, "/none", environ=ENV, versions_of=fake.versions_of()).memory(0)
    with pytest.raises(ContractError, match="get_device_uuid: not in the real module"):
        check_against(rec, real_names)


def test_contract_fails_on_a_wrong_signature(real_names: dict[str, Any]) -> None:
    def get_device_name(device: Any = None) -> str:  # the real parameter is device_name
        return "Ascend910B2"
    rec = Recorder(objects={"get_device_name": get_device_name})
    (problem,) = contract_problems(rec, real_names)
    assert "get_device_name: fake signature (device=…) differs" in problem

"""Every name the XPU backend touches exists in the installed torch's real torch.xpu.

The backend runs against the fake wrapped in a recording proxy; each recorded name (and each
attribute read from device properties) is then checked against the real module and the real
``_XpuDeviceProperties`` stub in torch/_C/__init__.pyi, signatures included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hal.backends.xpu import XpuBackend
from hal.backends.xpu.testing import fake_xpu as fx
from hal.testing import contract
from hal.testing.fake_allocator import mirrored_names

PROPS = "get_device_properties()"


def real_property_names() -> dict[str, Any]:
    stub = Path(os.path.dirname(torch.__file__), "_C", "__init__.pyi")
    return contract.names_from_source(stub, class_name="_XpuDeviceProperties")


def recorded_run(fake: fx.FakeXpu) -> Any:
    proxy, rec = contract.record(fake.module, wrap_results=("get_device_properties",))
    contract.exercise(XpuBackend(proxy, "/nonexistent", environ={}, versions_of=fake.versions_of))
    return rec


def test_backend_uses_only_real_torch_xpu_names() -> None:
    rec = recorded_run(fx.max_1550_card())
    assert {"device_count", "_is_compiled", "mem_get_info", f"{PROPS}.total_memory",
            f"{PROPS}.has_subgroup_matrix_multiply_accumulate"} <= set(rec.names)
    contract.check_against(rec, torch.xpu, namespaces={PROPS: real_property_names()})


def test_the_fake_mirrors_every_public_name_with_the_real_signature() -> None:
    fake = fx.fake_xpu().module
    public = mirrored_names(type(fake))
    assert {"_is_compiled", "memory_allocated", "empty_cache", "get_device_name"} <= set(public)
    mirrored = contract.Recorder(objects={name: getattr(fake, name) for name in public})
    assert contract.contract_problems(mirrored, torch.xpu) == []  # names and signature shapes
    props = fx._XpuDeviceProperties(fx.MAX_1550_STACK, 0)
    assert set(vars(props)) <= set(real_property_names())


def test_contract_fails_when_a_backend_uses_a_name_torch_xpu_lacks() -> None:
    class Drifted(XpuBackend):
        def memory(self, index: int = 0) -> Any:
            self.module.get_device_uuid(index)  # not a torch.xpu function
            return super().memory(index)

    fake = fx.max_1550_card()
    fake.module.get_device_uuid = lambda device=None: "uuid"  # type: ignore[attr-defined]
    proxy, rec = contract.record(fake.module, wrap_results=("get_device_properties",))
    Drifted(proxy, "/none", environ={}, versions_of=fake.versions_of).memory(0)
    with pytest.raises(contract.ContractError, match="get_device_uuid: not in the real module"):
        contract.check_against(rec, torch.xpu, namespaces={PROPS: real_property_names()})


def test_contract_fails_on_a_property_the_real_stub_lacks() -> None:
    problems = contract.contract_problems([f"{PROPS}.compute_capability"], torch.xpu,
                                 namespaces={PROPS: real_property_names()})
    assert problems == [f"{PROPS}.compute_capability: not in the real module"]

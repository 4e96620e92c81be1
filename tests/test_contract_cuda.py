"""Contract tests: every torch.cuda / torch.version / pynvml name the CUDA and ROCm backends touch
exists in the real modules (installed CPU torch, nvidia-ml-py) with a compatible signature."""

from __future__ import annotations

import importlib
import os
import types
from typing import Any

import pytest
import torch

from hal.backends.cuda import CudaBackend
from hal.backends.cuda import testing as fc
from hal.backends.rocm import RocmBackend
from hal.backends.rocm.testing import fake_kfd as fk
from hal.testing.contract import (
    ContractError,
    Recorder,
    check_against,
    contract_problems,
    exercise,
    names_from_source,
    record,
)
from hal.testing.fake_tree import FakePci, make_fake_tree

TORCH_DIR = os.path.dirname(torch.__file__)


def real_property_names() -> dict[str, Any]:
    """_CudaDeviceProperties members: the stub's, plus pci_* that torch's own source reads."""
    names: dict[str, Any] = dict(
        names_from_source(os.path.join(TORCH_DIR, "_C", "__init__.pyi"), "_CudaDeviceProperties"))
    with open(os.path.join(TORCH_DIR, "numa", "binding.py"), encoding="utf-8") as f:
        binding = f.read()
    for attr in ("pci_bus_id", "pci_device_id", "pci_domain_id"):
        if f"device_properties.{attr}" in binding:
            names[attr] = None
    return names


def exercise_all(backend: Any, oom_module: Any) -> None:
    """Run every Backend method once (the contract is what these touch)."""
    exercise(backend)
    backend.versions()
    backend.hardware()
    backend.findings()
    try:
        fc.allocate(oom_module, 1 << 50)
    except Exception as exc:
        assert backend.is_oom(exc)
    assert not backend.is_oom(ValueError("nope"))


def recorded_cuda_run(tmp_path: Any, backend_cls: type = CudaBackend,
                      env: dict[str, str] | None = None) -> tuple[Recorder, Recorder, Recorder,
                                                                   Recorder]:
    fake = fc.make_cuda(["H100", "A100-80GB"])
    cuda, rec = record(fake, wrap_results=("get_device_properties",))
    version, vrec = record(fc.cuda_version())
    nvml, nrec = record(fc.make_nvml(["H100", "A100-80GB"]))
    cudnn, crec = record(types.SimpleNamespace(version=lambda: 90100))
    root = make_fake_tree(tmp_path, pci=[FakePci("0000:07:00.0", 0x10DE, 0x2330)])
    b = backend_cls(cuda, version, nvml, root, cudnn)
    exercise_all(b, fake)
    return rec, vrec, nrec, crec


def test_cuda_backend_uses_only_real_torch_cuda_names(tmp_path: Any) -> None:
    rec, vrec, _, crec = recorded_cuda_run(tmp_path)
    assert "get_device_properties().total_memory" in rec
    assert "mem_get_info" in rec and "_device_count_nvml" not in rec  # NVML path taken
    check_against(rec, torch.cuda,
                  namespaces={"get_device_properties()": real_property_names()})
    check_against(vrec, torch.version)
    check_against(crec, importlib.import_module("torch.backends.cudnn"))


def test_cuda_backend_torch_nvml_path_names_are_real(tmp_path: Any) -> None:
    fake = fc.make_cuda(["T4"])
    cuda, rec = record(fake, wrap_results=("get_device_properties",))
    b = CudaBackend(cuda, fc.cuda_version(), False, make_fake_tree(tmp_path))
    assert b.probe().available
    assert "_device_count_nvml" in rec
    check_against(rec, torch.cuda, namespaces={"get_device_properties()": real_property_names()})


def test_cuda_backend_uses_only_real_pynvml_names(tmp_path: Any) -> None:
    pynvml = pytest.importorskip("pynvml")
    _, _, nrec, _ = recorded_cuda_run(tmp_path)
    assert "nvmlDeviceGetUUID" in nrec
    check_against(nrec, pynvml)


def test_rocm_backend_uses_only_real_torch_cuda_names(tmp_path: Any) -> None:
    fake = fc.make_cuda(["MI300X", "MI300X"])
    cuda, rec = record(fake, wrap_results=("get_device_properties",))
    version, vrec = record(fc.hip_version())
    root = make_fake_tree(tmp_path, pci=[FakePci("0000:0c:00.0", 0x1002, 0x74A1)],
                          dev=["kfd", *fk.render_nodes(2)],
                          files=fk.kfd_files(["MI300X", "MI300X"]))
    b = RocmBackend(cuda, version, False, root, types.SimpleNamespace(version=lambda: 30300))
    exercise_all(b, fake)
    assert "get_device_properties().gcnArchName" in rec
    check_against(rec, torch.cuda, namespaces={"get_device_properties()": real_property_names()})
    check_against(vrec, torch.version)


class _WrongNameBackend(CudaBackend):
    """Uses a name torch.cuda does not have (a drifted fake would still provide it)."""

    def memory(self, index: int = 0) -> Any:
        return self.module.get_device_memory_info(index)


class _WrongSignatureBackend(CudaBackend):
    """Calls a real name with a keyword the real function does not take."""

    def synchronize(self, index: int | None = None) -> None:
        self.module.synchronize(device=index, blocking=True)


def test_contract_fails_for_a_name_the_real_module_lacks() -> None:
    fake = fc.make_cuda(["A100-80GB"])
    drifted = types.SimpleNamespace(get_device_memory_info=lambda device=None: (1, 2),
                                    mem_get_info=fake.mem_get_info)
    cuda, rec = record(drifted)
    _WrongNameBackend(cuda, fc.cuda_version(), False).memory(0)
    with pytest.raises(ContractError, match="get_device_memory_info: not in the real module"):
        check_against(rec, torch.cuda)


def test_contract_fails_for_a_call_the_real_signature_rejects() -> None:
    def synchronize(device: Any = None, **kwargs: Any) -> None:
        """A sloppy fake that accepts anything."""

    cuda, rec = record(types.SimpleNamespace(synchronize=synchronize))
    _WrongSignatureBackend(cuda, fc.cuda_version(), False).synchronize(0)
    problems = contract_problems(rec, torch.cuda)
    assert any("fake signature (device=…, **kwargs) differs" in p for p in problems), problems
    assert any("keywords blocking, device" in p for p in problems), problems


def test_contract_reads_names_without_importing(tmp_path: Any) -> None:
    src = tmp_path / "mod.py"
    src.write_text("import os\nX: int = 1\ndef f(a, b=2, *, c): ...\nclass K:\n"
                   "    def m(self, x): ...\n")
    names = names_from_source(src)
    assert set(names) >= {"os", "X", "f", "K"}
    sig = names["f"]
    assert sig is not None and list(sig.parameters) == ["a", "b", "c"]
    members = names_from_source(src, "K")
    assert list(members["m"].parameters) == ["x"]  # type: ignore[union-attr]
    assert contract_problems(["f", "g"], names) == ["g: not in the real module"]


def test_every_fake_cuda_public_name_exists_in_real_torch_cuda() -> None:
    """The fakes invent no API: each public attribute mirrors a real torch.cuda name."""
    fake = fc.make_cuda(["A100-80GB"])
    public = [n for n in dir(fake) if not n.startswith("__") and not n.startswith("_FakeCuda")]
    problems = contract_problems(_recorder_for(fake, public), torch.cuda)
    assert problems == []
    props = fc.FakeCudaDeviceProperties(fc.SPECS["H100"], 0)
    real = real_property_names()
    assert [n for n in vars(props) if n not in real] == []


def _recorder_for(obj: Any, names: list[str]) -> Recorder:
    rec = Recorder()
    for n in names:
        rec.objects[n] = getattr(obj, n)
    return rec

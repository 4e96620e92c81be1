"""The Ascend backend against fakes of real devices, fake filesystem trees, and this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import run_hal

from hal.backends.ascend import AscendBackend, socs, stack
from hal.backends.ascend.testing import fake_npu as fn
from hal.backends.cpu import CpuBackend
from hal.selection import decide
from hal.testing import oom_corpus
from hal.testing.fake_tree import ACCELERATOR_CLASS, ETHERNET_CLASS, FakePci, make_fake_tree

MiB = 1024**2
CANN_ENV = {"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest",
            "LD_LIBRARY_PATH": "/usr/local/Ascend/ascend-toolkit/latest/lib64:/usr/lib"}


def backend_for(fake: fn.FakeNpu, root: str = "/nonexistent", environ: dict[str, str] | None = None,
                torch_version: str = "2.13.0") -> AscendBackend:
    return AscendBackend(fake.module, fake.loader, root,
                         environ=dict(CANN_ENV) if environ is None else environ,
                         versions_of=fake.versions_of(torch_version))


# -- selection, spec-sheet memory and dtypes ---------------------------------------------------

@pytest.mark.parametrize(("spec", "memory", "dtypes"), [
    (fn.ASCEND_910B2C, 62432 * MiB, [torch.bfloat16, torch.float16, torch.float32]),
    (fn.ASCEND_910B4, 32 * 1024 * MiB, [torch.bfloat16, torch.float16, torch.float32]),
    (fn.ASCEND_310P3, 21534 * MiB, [torch.float16, torch.float32]),
], ids=["910B2C", "910B4", "310P3"])
def test_fake_device_selects_ascend_with_spec_figures(spec: fn.NpuSpec, memory: int,
                                                      dtypes: list[torch.dtype]) -> None:
    fake = fn.fake_npu(spec, count=8)
    backend = backend_for(fake)
    sel = decide([backend, CpuBackend()], environ={})
    assert sel.backend is backend and sel.index == 0
    assert "8 Ascend NPU(s)" in sel.reason
    assert not fake.module.initialized, "probe must not initialise the NPU runtime"
    info = backend.devices()[3]
    assert (info.name, info.total_memory, info.capability) == (spec.soc_name, memory, spec.soc_name)
    assert info.extras["cube_core_num"] == spec.cube_core_num
    assert backend.memory(3).total == memory
    assert list(backend.dtypes(3)) == dtypes


def test_310p_has_no_bf16_and_910b_has() -> None:
    assert torch.bfloat16 not in backend_for(fn.fake_npu(fn.ASCEND_310P3)).dtypes(0)
    assert backend_for(fn.fake_npu(fn.ASCEND_910B)).dtypes(0)[0] == torch.bfloat16


def test_memory_tracks_the_allocator_and_other_processes() -> None:
    fake = fn.fake_npu(fn.ASCEND_910B, count=2)
    backend = backend_for(fake)
    fake.module.allocate(10 * 1024 * MiB, device=1)
    fake.module._devices[1].other_processes = 1024 * MiB
    mem = backend.memory(1)
    assert (mem.allocated, mem.reserved, mem.peak) == (10240 * MiB,) * 3
    assert mem.free == 62432 * MiB - 10240 * MiB - 1024 * MiB
    assert "mem_get_info" in mem.source
    backend.reset_peak_memory(1)
    backend.empty_cache()
    assert backend.memory(1).peak == 10240 * MiB
    assert backend.memory(0).allocated == 0


def test_early_torch_npu_without_mem_get_info_falls_back_and_says_so() -> None:
    fake = fn.fake_npu(fn.ASCEND_910B, mem_get_info=False, version="2.1.0")
    assert not hasattr(fake.module, "mem_get_info")
    fake.module.allocate(4096 * MiB)
    mem = backend_for(fake, torch_version="2.1.0").memory(0)
    assert mem.total == 62432 * MiB
    assert mem.free == 62432 * MiB - 4096 * MiB
    assert "missing" in mem.source and "total_memory" in mem.source


def test_unknown_soc_uses_soc_version_then_torch_npu() -> None:
    newer = fn.NpuSpec("Ascend910B9", 223, 64 * 1024 * MiB, 20, 40, 0, 0xD802, True)
    assert backend_for(fn.fake_npu(newer)).dtypes(0)[0] == torch.bfloat16
    mystery = fn.NpuSpec("AscendX", 999, 8 * 1024 * MiB, 1, 1, 0, 0xD802, False)
    assert list(backend_for(fn.fake_npu(mystery)).dtypes(0)) == [torch.float16, torch.float32]


@pytest.mark.parametrize(("name", "family"), [
    ("Ascend910B1", socs.FAMILY_910B), ("Ascend910B4_1", socs.FAMILY_910B),
    ("Ascend910B", socs.FAMILY_910A), ("Ascend910ProB", socs.FAMILY_910A),
    ("Ascend910_9391", socs.FAMILY_910_93), ("Ascend310P3", socs.FAMILY_310P),
    ("Ascend310B1", socs.FAMILY_310B), ("Ascend950", socs.FAMILY_950), ("Ascend", None),
])
def test_soc_families_by_name(name: str, family: socs.SocFamily | None) -> None:
    assert socs.family_by_name(name) is family


def test_soc_families_by_version_follow_torch_npu_bf16_rule() -> None:
    # torch_npu IsBF16Supported(): SocVersion >= Ascend910B1 (220); 310B is the one we doubt.
    for version in (100, 104, 200, 205):
        assert "bfloat16" not in socs.family_by_version(version).dtypes  # type: ignore[union-attr]
    for version in (220, 225, 250, 256, 260):
        assert socs.family_by_version(version).dtypes[0] == "bfloat16"  # type: ignore[union-attr]
    assert socs.family_by_version(150) is None


# -- probe: each situation has its own reason --------------------------------------------------

def test_probe_torch_npu_absent() -> None:
    backend = AscendBackend(None, fn.absent_loader, "/nonexistent", environ={},
                            versions_of={"torch": "2.13.0+cpu"}.get)
    probe = backend.probe()
    assert not probe.available
    assert "torch_npu is not installed" in probe.reason and "torch-npu==2.13.0" in probe.reason


@pytest.mark.parametrize("autoload", [True, False])
@pytest.mark.parametrize("lib", ["libhccl.so", "libascendcl.so", "libascend_hal.so"])
def test_probe_cann_libraries_missing(lib: str, autoload: bool) -> None:
    backend = AscendBackend(None, fn.missing_cann_loader(lib, autoload=autoload), "/none",
                            environ={}, versions_of={"torch-npu": "2.13.0"}.get)
    probe = backend.probe()
    assert not probe.available
    assert f"cannot load the CANN library {lib}" in probe.reason
    assert "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in probe.reason
    assert ("TORCH_DEVICE_BACKEND_AUTOLOAD=0" in probe.reason) is autoload


def test_probe_names_the_set_env_script_that_exists(tmp_path: Path) -> None:
    root = make_fake_tree(tmp_path, files={"/usr/local/Ascend/cann/set_env.sh": "# CANN 8.5\n"})
    backend = AscendBackend(None, fn.missing_cann_loader(), root, environ={})
    assert "source /usr/local/Ascend/cann/set_env.sh" in backend.probe().reason


def test_probe_other_import_failures_are_reasons_not_exceptions() -> None:
    def broken() -> None:
        raise OSError("/x/libtorch_npu.so: undefined symbol: _ZN3c104cuda9SetDevice")
    reason = AscendBackend(None, broken, "/none", environ={}).probe().reason
    assert "does not match the installed torch" in reason


def test_probe_without_devices_and_with_hiding_variable() -> None:
    empty = fn.FakeNpu(fn.FakeNpuModule([]))
    probe = backend_for(empty).probe()
    assert not probe.available and "sees no Ascend NPU" in probe.reason
    hidden = backend_for(empty, environ={"ASCEND_RT_VISIBLE_DEVICES": ""}).probe()
    assert "ASCEND_RT_VISIBLE_DEVICES=''" in hidden.reason


def test_probe_with_devices_counts_without_initialising() -> None:
    fake = fn.fake_npu(fn.ASCEND_310P3, count=4)
    probe = backend_for(fake).probe()
    assert probe == type(probe)(True, "torch_npu 2.13.0 sees 4 Ascend NPU(s)", 4)
    assert not fake.module.is_initialized()


# -- OOM ----------------------------------------------------------------------------------------

def test_is_oom_on_the_real_message_and_the_corpus() -> None:
    backend = backend_for(fn.fake_npu())
    exc = fn.oom_error(fn.ASCEND_910B)
    assert isinstance(exc, torch.OutOfMemoryError)
    assert str(exc).startswith("NPU out of memory. Tried to allocate 2.00 GiB (NPU 0; 60.97 GiB")
    assert backend.is_oom(exc)
    assert backend.is_oom(RuntimeError(str(exc)))  # torch_npu <= 2.1 raised RuntimeError
    assert not backend.is_oom(ValueError(str(exc)))
    assert oom_corpus.check_backend(backend.is_oom, "ascend") == []


# -- hardware() and findings() from fake trees ------------------------------------------------

DRIVER_INFO = "Version=24.1.rc2.2\nascendhal_version=7.35.23\npackage_version=24.1.rc2.2\n"
TOOLKIT_INFO = ("package_name=Ascend-cann-toolkit\nversion=8.0.RC2\n"
                "innerversion=V100R001C18SPC001B224\narch=x86_64\nos=linux\n")


def npu_tree(tmp_path: Path, n: int = 2, cann: bool = True) -> str:
    files = {stack.DRIVER_VERSION_FILE: DRIVER_INFO}
    if cann:
        files["/usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ascend_toolkit_install.info"] = (
            TOOLKIT_INFO)
        files["/usr/local/Ascend/ascend-toolkit/set_env.sh"] = "# set_env\n"
    pci = [FakePci(f"0000:{0xc1 + i:02x}:00.0", 0x19E5, 0xD802, ACCELERATOR_CLASS, "devdrv_device")
           for i in range(n)]
    pci.append(FakePci("0000:7d:00.0", 0x19E5, 0xA222, ETHERNET_CLASS, "hns3"))  # a Huawei NIC
    return make_fake_tree(tmp_path, pci=pci,
                          dev=[*(f"davinci{i}" for i in range(n)), "davinci_manager"], files=files)


def test_hardware_from_a_fake_tree(tmp_path: Path) -> None:
    backend = AscendBackend(None, fn.absent_loader, npu_tree(tmp_path), environ={})
    hw = backend.hardware()
    pci = [h for h in hw if h.kind == "pci"]
    assert len(pci) == 2 and all("Ascend 910B [19e5:d802]" in h.detail for h in pci)
    assert "driver devdrv_device" in pci[0].detail
    assert [h.path for h in hw if h.kind == "dev"] == [
        "/dev/davinci0", "/dev/davinci1", "/dev/davinci_manager"]
    assert [h.detail for h in hw if h.kind == "driver"] == ["Ascend NPU driver 24.1.rc2.2"]
    assert backend.hardware_count() == 2


def test_versions_read_cann_and_driver_files(tmp_path: Path) -> None:
    fake = fn.fake_npu()
    versions = backend_for(fake, npu_tree(tmp_path)).versions()
    assert versions["cann"] == "8.0.RC2"
    assert versions["cann_version_file"].endswith("x86_64-linux/ascend_toolkit_install.info")
    assert versions["driver"] == "24.1.rc2.2"
    assert versions["torch_npu"] == "2.13.0"


def ids(findings: object) -> list[str]:
    return [f.id for f in findings]  # type: ignore[attr-defined]


def test_finding_npu_without_torch_npu(tmp_path: Path) -> None:
    backend = AscendBackend(None, fn.absent_loader, npu_tree(tmp_path), environ=dict(CANN_ENV),
                            versions_of={"torch": "2.13.0+cpu"}.get)
    (finding,) = backend.findings()
    assert (finding.id, finding.severity) == ("ascend.torch_npu_missing", "error")
    assert "2 Ascend NPU(s)" in finding.message
    assert finding.fix.startswith("pip install torch-npu==2.13.0")


def test_no_findings_without_npu_or_torch_npu(tmp_path: Path) -> None:
    backend = AscendBackend(None, fn.absent_loader, make_fake_tree(tmp_path), environ={},
                            versions_of={"torch": "2.13.0"}.get)
    assert backend.findings() == []


def test_finding_cann_environment_not_set_up(tmp_path: Path) -> None:
    fake = fn.fake_npu()
    (finding,) = backend_for(fake, npu_tree(tmp_path), environ={}).findings()
    assert (finding.id, finding.severity) == ("ascend.cann_env", "error")
    assert "CANN 8.0.RC2 is installed" in finding.message
    assert finding.fix == "source /usr/local/Ascend/ascend-toolkit/set_env.sh"
    partial = {"ASCEND_TOOLKIT_HOME": CANN_ENV["ASCEND_TOOLKIT_HOME"], "LD_LIBRARY_PATH": "/usr/lib"}
    (finding,) = backend_for(fake, npu_tree(tmp_path), environ=partial).findings()
    assert "LD_LIBRARY_PATH has no entry under" in finding.message
    assert backend_for(fake, npu_tree(tmp_path)).findings() == []


def test_finding_cann_not_installed_at_all(tmp_path: Path) -> None:
    (finding,) = backend_for(fn.fake_npu(), npu_tree(tmp_path, cann=False), environ={}).findings()
    assert "no CANN toolkit was found" in finding.message
    assert finding.fix.startswith("install the CANN toolkit")


def test_finding_import_failure(tmp_path: Path) -> None:
    backend = AscendBackend(None, fn.missing_cann_loader("libascendcl.so"), npu_tree(tmp_path),
                            environ=dict(CANN_ENV), versions_of={"torch-npu": "2.13.0",
                                                                 "torch": "2.13.0"}.get)
    (finding,) = backend.findings()
    assert finding.id == "ascend.import_failed" and "libascendcl.so" in finding.message
    assert finding.fix == "source /usr/local/Ascend/ascend-toolkit/set_env.sh"


@pytest.mark.parametrize(("npu", "torch_version", "mismatch"), [
    ("2.13.0", "2.13.0+cpu", False), ("2.1.0.post8", "2.1.0", False),
    ("2.12.0.post3", "2.13.0", True), ("2.13.0", "2.12.1", True),
])
def test_finding_torch_npu_not_matching_torch(tmp_path: Path, npu: str, torch_version: str,
                                              mismatch: bool) -> None:
    fake = fn.fake_npu(version=npu)
    found = [f for f in backend_for(fake, npu_tree(tmp_path), torch_version=torch_version)
             .findings() if f.id == "ascend.version_mismatch"]
    assert bool(found) is mismatch
    if mismatch:
        rel = torch_version.split("+")[0]
        assert found[0].fix.startswith(f"pip install torch-npu=={rel}")


@pytest.mark.parametrize(("npu", "torch_version", "cann", "want", "keep"), [
    ("2.10.0.post4", "2.10.0", "8.5.0", "9.1.0", None),  # vllm-ascend 0.23.0's pins on an old CANN
    ("2.9.0.post6", "2.9.0", "8.5.1", "9.1.0", "2.9.0"),  # a torch_npu for this CANN exists
    ("2.9.0", "2.9.0", "8.5.1", None, None),  # a patch release of the same line
    ("2.8.0", "2.8.0", "8.3.RC2.alpha003", None, None),  # another RC of the same line
    ("2.13.0", "2.13.0", "8.0.RC2", None, None),  # a release the table does not list: no claim
], ids=["new-npu-old-cann", "with-alternative", "patch", "rc", "unlisted"])
def test_finding_cann_not_the_release_torch_npu_is_built_for(
        tmp_path: Path, npu: str, torch_version: str, cann: str, want: str | None,
        keep: str | None) -> None:
    root = npu_tree(tmp_path)
    info = Path(root, "usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ascend_toolkit_install.info")
    info.write_text(TOOLKIT_INFO.replace("version=8.0.RC2", f"version={cann}"))
    found = [f for f in backend_for(fn.fake_npu(version=npu), root, torch_version=torch_version)
             .findings() if f.id == "ascend.cann_mismatch"]
    assert bool(found) is (want is not None)
    if found:
        assert found[0].severity == "warn"
        assert f"torch_npu {npu} is built for CANN {want}, but CANN {cann} is installed" in found[0].message
        assert found[0].fix.startswith(f"install CANN {want}")
        assert (f"pip install torch-npu=={keep}" in found[0].fix) is (keep is not None)


def test_the_torch_npu_cann_table_is_well_formed() -> None:
    from hal.backends.ascend import compat
    for npu, cann in compat.TORCH_NPU_CANN.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", npu), npu
        assert compat.cann_line(cann) is not None, cann
    assert compat.cann_line("CANN 8.3.RC1") == (8, 3) and compat.cann_line("eight") is None


@pytest.mark.parametrize(("value", "hides"), [
    ("", True), ("4,5", True), ("1,0", True), ("x", True), ("0", False), ("1", False),
    ("0,1", False), ("1,7", False), ("0,1,", False),
])
def test_finding_visible_devices_hiding_everything(tmp_path: Path, value: str, hides: bool) -> None:
    env = {**CANN_ENV, "ASCEND_RT_VISIBLE_DEVICES": value}
    found = backend_for(fn.fake_npu(), npu_tree(tmp_path), environ=env).findings()
    assert ("ascend.visible_devices_hide_all" in ids(found)) is hides
    if hides:
        assert found[-1].fix.startswith("unset ASCEND_RT_VISIBLE_DEVICES")


@pytest.mark.parametrize(("value", "raw", "count"), [
    (None, 8, None), ("", 8, 0), ("0,1,2", 8, 3), ("2,1", 8, 0), ("0,9", 8, 1),
    ("3abc,4", 8, 1), ("abc", 8, 0), ("0,,1", 8, 1),
])
def test_visible_count_mirrors_torch_npu(value: str | None, raw: int, count: int | None) -> None:
    assert stack.visible_count(value, raw) == count


# -- this machine: the real defaults ----------------------------------------------------------

def test_real_defaults_say_torch_npu_is_not_installed() -> None:
    sel = decide([AscendBackend(), CpuBackend()], environ={"HAL_DEVICE": "ascend"})
    assert sel.backend.name == "cpu" and sel.fell_back
    assert "ascend: torch_npu is not installed" in sel.reason


def test_cli_hal_device_ascend_falls_back_to_cpu() -> None:
    done = run_hal("devices", env={"HAL_DEVICE": "ascend"})
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "torch_npu is not installed" in out
    assert "selected: cpu" in out


# -- torch.device("npu") needs the PrivateUse1 name: a subprocess (process-global, one-way) --

def test_torch_device_and_conformance_with_privateuse1_registered() -> None:
    script = textwrap.dedent("""
        import torch
        torch.utils.rename_privateuse1_backend("npu")
        from hal.backends.ascend import AscendBackend
        from hal.backends.cpu import CpuBackend
        from hal.selection import decide
        from hal.backends.ascend.testing import fake_npu as fn
        from hal.testing.conformance import run_checks
        fake = fn.fake_npu(fn.ASCEND_910B, count=2)
        env = {"ASCEND_TOOLKIT_HOME": "/t", "LD_LIBRARY_PATH": "/t/lib64"}
        b = AscendBackend(fake.module, fake.loader, "/nonexistent", environ=env,
                          versions_of=fake.versions_of())
        sel = decide([b, CpuBackend()], environ={"HAL_DEVICE": "npu:1"})
        dev = sel.device
        assert type(dev) is torch.device and (dev.type, dev.index) == ("npu", 1), dev
        assert b.torch_device() == torch.device("npu")
        problems = run_checks(b, oom_error=fn.oom_error(), corpus_vendor="ascend",
                              runtime_initialized=fake.module.is_initialized)
        assert problems == [], problems
        print("ok", dev)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok npu:1"

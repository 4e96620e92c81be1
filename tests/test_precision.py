"""hal.precision: the policy per device, HAL_PRECISION, autocast and grad_scaler."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import hal
from hal import precision, selection
from hal.backends.cpu.backend import CpuBackend
from hal.contract import Backend, Probe
from hal.errors import ConfigError
from hal.plugins import registered
from hal.precision import HalPrecisionWarning, parse_precision, policy


class FakeDevice(Backend):
    """A backend whose native (and optionally emulated / fast) dtypes a test chooses."""

    priority = 50

    def __init__(self, name: str, device_type: str, native: Sequence[torch.dtype],
                 emulated: Sequence[torch.dtype] | None = None,
                 fast: Sequence[torch.dtype] | None = None) -> None:
        self._name, self._type = name, device_type
        self.native, self.emulated, self.fast = list(native), emulated, fast

    @property  # type: ignore[override]
    def name(self) -> str:
        return self._name

    @property  # type: ignore[override]
    def device_type(self) -> str:
        return self._type

    def probe(self) -> Probe:
        return Probe(True, "test device", 1)

    def dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return self.native

    def emulated_dtypes(self, index: int = 0) -> Sequence[torch.dtype]:
        return self.emulated or []

    def fast_dtypes(self, index: int = 0) -> Sequence[torch.dtype] | None:
        return self.fast  # None: the backend does not know, hal decides


@contextmanager
def selected(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    class Plugin:
        @hal.hookimpl
        def hal_backends(self) -> list[Backend]:
            return [backend]

    with registered(Plugin(), f"test-{backend.name}"):
        monkeypatch.setenv("HAL_DEVICE", backend.name)
        selection.reset()
        assert hal.get_backend() is backend
        yield backend
    selection.reset()


BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.mark.parametrize("value", ["fp64", "int4", "garbage", "", "float64", "int8"])
def test_bad_hal_precision_is_a_one_line_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_precision(value)
    message = str(info.value)
    assert repr(value) in message and "auto, fp32, fp16, bf16" in message
    assert "\n" not in message


def test_bad_hal_precision_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PRECISION", "fp64")
    with pytest.raises(ConfigError, match="HAL_PRECISION='fp64'"):
        policy()
    with pytest.raises(ConfigError):
        hal.autocast()


@pytest.mark.parametrize("value,expected", [("AUTO", "auto"), (" bf16 ", "bf16"),
                                            ("bfloat16", "bf16"), ("half", "fp16"),
                                            ("float32", "fp32"), (None, "auto")])
def test_precision_aliases(value: str | None, expected: str) -> None:
    assert parse_precision(value) == expected


@pytest.mark.parametrize("native,dtype,scaler", [
    ([FP16, FP32], FP16, True),          # V100: compute capability 7.0, no native bf16
    ([BF16, FP16, FP32], BF16, False),   # A100 / H100
    ([FP16, FP32], FP16, True),          # Ascend 310P: fp16 only
    ([FP32], FP32, False),               # an accelerator without low precision
])
def test_policy_follows_native_dtypes(native: list[torch.dtype], dtype: torch.dtype,
                                      scaler: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with selected(FakeDevice("accel", "meta", native), monkeypatch):
        pol = policy()
    assert (pol.compute_dtype, pol.needs_scaler) == (dtype, scaler)
    assert pol.autocast_dtype == (None if dtype == FP32 else dtype)
    assert pol.device_type == "meta" and pol.reason


@pytest.mark.parametrize("spec,dtype,scaler", [("V100-32GB", FP16, True),
                                                 ("A100-80GB", BF16, False)])
def test_policy_of_fake_cuda_devices(spec: str, dtype: torch.dtype, scaler: bool) -> None:
    """The real CUDA backend over a fake torch.cuda: V100 -> fp16 + scaler, A100 -> bf16."""
    fake_cuda = pytest.importorskip("hal.backends.cuda.testing")
    cuda = pytest.importorskip("hal.backends.cuda.backend")
    backend = cuda.CudaBackend(module=fake_cuda.make_cuda([spec]),
                               version=fake_cuda.make_version(cuda="12.4"))
    pol = policy(backend)
    assert (pol.compute_dtype, pol.needs_scaler) == (dtype, scaler)
    assert pol.device_type == "cuda"


def test_bf16_on_a_v100_is_emulated_a_warning_and_fp8_an_error() -> None:
    """V100 runs bf16 only by emulation (torch says is_bf16_supported, but not natively)."""
    from hal.backends.cuda import testing as fake_cuda
    from hal.backends.cuda.backend import CudaBackend

    backend = CudaBackend(module=fake_cuda.make_cuda(["V100-32GB"]),
                          version=fake_cuda.make_version(cuda="12.4"))
    assert list(backend.emulated_dtypes(0)) == [BF16]
    with pytest.warns(HalPrecisionWarning, match="only by emulation"):
        pol = policy(backend, requested="bf16")
    assert pol.compute_dtype == BF16
    a100 = CudaBackend(module=fake_cuda.make_cuda(["A100-80GB"]),
                       version=fake_cuda.make_version(cuda="12.4"))
    assert list(a100.emulated_dtypes(0)) == []


def test_policy_of_fake_ascend_310p() -> None:
    """The real Ascend backend over a fake torch_npu: 310P -> fp16 with a scaler."""
    fake_npu = pytest.importorskip("hal.backends.ascend.testing.fake_npu")
    ascend = pytest.importorskip("hal.backends.ascend.backend")
    fake = fake_npu.fake_npu(fake_npu.ASCEND_310P3)
    backend = ascend.AscendBackend(module=fake.module, loader=fake.loader,
                                   versions_of=fake.versions_of())
    pol = policy(backend)
    assert (pol.compute_dtype, pol.needs_scaler, pol.device_type) == (FP16, True, "npu")


def test_host_cpu_without_bf16_flags_is_fp32(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: SomeVendor\nmodel name\t: Old CPU\n"
        "flags\t\t: fpu sse2 avx2 avx512f\n")
    cpu = CpuBackend(root=str(tmp_path))
    assert BF16 not in cpu.dtypes()
    assert precision._fast(cpu, 0, list(cpu.dtypes()))[0] == []
    oldcpu = FakeDevice("oldcpu", "cpu", list(cpu.dtypes()))
    with selected(oldcpu, monkeypatch), precision._forget_measurements():
        result = policy()
        assert precision._measured == {}  # nothing native to measure
    assert result.compute_dtype == FP32 and not result.needs_scaler
    assert "fp32" in result.reason


def test_host_cpu_with_native_but_slow_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Native bf16 instructions alone do not make bf16 pay: the measured ratio decides."""
    monkeypatch.setattr(precision, "measure_host_speedup", lambda dtype, **_: 0.6)
    slowcpu = FakeDevice("slowcpu", "cpu", [BF16, FP32])
    with selected(slowcpu, monkeypatch), precision._forget_measurements():
        pol = policy()
    assert pol.compute_dtype == FP32
    assert "0.60x" in pol.reason and "measured" in pol.reason


def test_this_cpu_follows_the_measurement() -> None:
    """On this machine the CPU policy is what the bf16-vs-fp32 matmul measured.

    With AMX the backend declares bf16 fast (bench: 3.5-7x fp32); where the flags do not
    settle it, hal measures, and the measured ratio decides.
    """
    with precision._forget_measurements():
        pol = policy()
        assert pol.device_type == "cpu"
        backend = hal.get_backend()
        declared = backend.fast_dtypes()
        if declared is not None:
            expected = BF16 if BF16 in declared else FP16 if FP16 in declared else FP32
            assert pol.compute_dtype == expected
            assert "fast_dtypes" in pol.reason
            assert precision._measured == {}  # declared: nothing was timed
        elif BF16 in backend.dtypes():
            ratio, note = precision._measured[(str(BF16), 0)]
            assert note in pol.reason
            assert pol.compute_dtype == (BF16 if ratio >= precision.HOST_SPEEDUP else FP32)
        else:
            assert pol.compute_dtype == FP32
    assert not pol.needs_scaler or pol.compute_dtype == FP16


def test_backend_declared_fast_dtypes_win_over_measuring(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> float:
        raise AssertionError("must not measure when the backend says")

    monkeypatch.setattr(precision, "measure_host_speedup", boom)
    with selected(FakeDevice("amxcpu", "cpu", [BF16, FP32], fast=[BF16]), monkeypatch):
        assert policy().compute_dtype == BF16
    with selected(FakeDevice("plaincpu", "cpu", [BF16, FP32], fast=[]), monkeypatch):
        assert policy().compute_dtype == FP32


def test_requested_dtype_native_emulated_or_impossible(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = FakeDevice("v100ish", "meta", [FP16, FP32], emulated=[BF16])
    with selected(dev, monkeypatch):
        monkeypatch.setenv("HAL_PRECISION", "fp16")
        pol = policy()
        assert pol.compute_dtype == FP16 and pol.needs_scaler and pol.requested == "fp16"
        monkeypatch.setenv("HAL_PRECISION", "bf16")
        with pytest.warns(HalPrecisionWarning, match="emulation"):
            pol = policy()
        assert pol.compute_dtype == BF16 and not pol.needs_scaler
        monkeypatch.setenv("HAL_PRECISION", "fp32")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert policy().compute_dtype == FP32
    with selected(FakeDevice("fp32only", "meta", [FP32]), monkeypatch):
        monkeypatch.setenv("HAL_PRECISION", "bf16")
        with pytest.raises(ConfigError, match="cannot run bf16") as info:
            policy()
        assert "fp32" in str(info.value)


def test_autocast_is_a_noop_for_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    a = torch.randn(4, 4)
    with hal.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == FP32


def test_autocast_uses_the_policy_dtype_and_device_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PRECISION", "bf16")
    if BF16 not in hal.get_backend().dtypes():
        pytest.skip("this CPU has no native bf16")
    a = torch.randn(4, 4)
    with hal.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == BF16
        assert (a @ a).dtype == BF16
    assert (a @ a).dtype == FP32
    with hal.autocast(torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with hal.autocast(BF16, enabled=False):
        assert not torch.is_autocast_enabled("cpu")


def test_grad_scaler_is_for_the_selected_device_and_only_fp16(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAL_PRECISION", "fp32")
    scaler = hal.grad_scaler()
    assert isinstance(scaler, torch.amp.GradScaler)
    assert not scaler.is_enabled()
    assert scaler._device == "cpu"
    if FP16 in hal.get_backend().dtypes():
        monkeypatch.setenv("HAL_PRECISION", "fp16")
        scaler = hal.grad_scaler()
        assert scaler.is_enabled() and scaler._device == "cpu"


@pytest.mark.parametrize("value,expected", [("BF16", "bf16"), ("torch.bfloat16", "bf16"),
                                            ("Float16", "fp16"), ("float", "fp32")])
def test_precision_names_come_from_the_dtype_registry(value: str, expected: str) -> None:
    assert parse_precision(value) == expected


@pytest.mark.parametrize("value", ["fp8", "float8_e4m3fnuz", "int4", "nf4", "tf32"])
def test_known_dtypes_that_are_not_compute_dtypes_say_so(value: str) -> None:
    with pytest.raises(ConfigError, match="not a mixed-precision compute dtype"):
        parse_precision(value)


def test_a_huge_hal_precision_value_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_precision("9" * 5000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("name", ["bf16", "bfloat16", "BF16", "torch.bfloat16", "brain16"])
def test_autocast_takes_hals_own_dtype_names(name: str) -> None:
    # Issue 20: hal.autocast(dtype='bf16') raised torch's TypeError from inside torch.
    with hal.autocast(dtype=name, device="cpu"):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype == torch.bfloat16
    with hal.autocast(dtype="fp32", device="cpu"):  # fp32: autocast off
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("bad", ["float64", torch.int8, torch.float64, "fp8", "int4", "warp9",
                                 42, 1.5])
def test_autocast_refuses_what_is_not_an_autocast_dtype_in_one_line(bad: object) -> None:
    # Issue 20: 'float64' raised a raw TypeError; torch.int8 was accepted silently.
    with pytest.raises(ConfigError, match=r"autocast dtype .*(fp16, bf16|expected one of)") as info:
        hal.autocast(dtype=bad, device="cpu")  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_the_host_speedup_takes_hal_names_too() -> None:
    from hal.precision import measure_host_speedup

    assert measure_host_speedup("bf16", size=16, repeats=1) > 0
    with pytest.raises(ConfigError, match="'bool'"):
        measure_host_speedup("bool", size=16, repeats=1)

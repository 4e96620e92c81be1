"""hal.calibration: what ``hal bench --save`` writes, written atomically, and a bad file ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hal import calibration
from hal.errors import HalError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(calibration.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration.json"


def test_save_and_load_round_trip(cache: Path) -> None:
    assert calibration.load("cuda", "NVIDIA H200") is None
    saved = calibration.save("cuda", "NVIDIA H200", {"bfloat16": 788.0, "fp32": 60.5}, 4.3e12)
    assert cache.exists()
    loaded = calibration.load("cuda", "NVIDIA H200")
    assert loaded == saved
    assert loaded.tflops == {"bf16": 788.0, "fp32": 60.5}  # names through hal.dtypes
    assert loaded.bandwidth == 4.3e12 and loaded.hal_version and loaded.measured_at[:2] == "20"
    assert calibration.load("cuda", "NVIDIA H100") is None
    assert calibration.load("rocm", "NVIDIA H200") is None


def test_fp8_variants_are_saved_under_the_family_the_catalogue_uses(cache: Path) -> None:
    calibration.save("rocm", "MI300X", {"float8_e4m3fnuz": 1000.0}, None)
    cal = calibration.load("rocm", "MI300X")
    assert cal is not None and cal.tflops == {"fp8": 1000.0} and cal.bandwidth is None


def test_a_second_device_keeps_the_first_and_a_new_run_replaces_its_own(cache: Path) -> None:
    calibration.save("cpu", "A", {"fp32": 1.0}, 1e9)
    calibration.save("cpu", "B", {"fp32": 2.0}, 2e9)
    calibration.save("cpu", "A", {"fp32": 3.0}, 3e9)
    a, b = calibration.load("cpu", "A"), calibration.load("cpu", "B")
    assert a is not None and b is not None and (a.tflops["fp32"], b.tflops["fp32"]) == (3.0, 2.0)
    assert len(json.loads(cache.read_text())["entries"]) == 2


@pytest.mark.parametrize("content", [
    "", "{", "[]", '{"schema": "other", "entries": []}', '{"schema": "hal.calibration/1"}',
    '{"schema": "hal.calibration/1", "entries": [{"backend": "cpu"}]}',
    '{"schema": "hal.calibration/1", "entries": [{"backend": "cpu", "device_name": "A", '
    '"tflops": {"fp32": -1}}]}',
    '{"schema": "hal.calibration/1", "entries": [{"backend": "cpu", "device_name": "A", '
    '"tflops": {"warp9": 1}}]}',
    '{"schema": "hal.calibration/1", "entries": [{"backend": "cpu", "device_name": "A", '
    '"bandwidth": NaN}]}',
    "\x00\xff garbage",
])
def test_a_corrupt_file_is_ignored_with_a_warning(cache: Path, content: str) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content.encode("latin-1"))
    with pytest.warns(UserWarning, match="calibration ignored: calibration file") as record:
        assert calibration.load("cpu", "A") is None
    assert len(record) == 1 and "\n" not in str(record[0].message)


def test_a_fifo_or_a_huge_file_is_ignored_without_reading_it(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    os.mkfifo(cache)
    with pytest.warns(UserWarning, match="FIFO"):
        assert calibration.load("cpu", "A") is None
    cache.unlink()
    with open(cache, "wb") as f:
        f.truncate(2**30)
    with pytest.warns(UserWarning, match="cap is 1 MiB"):
        assert calibration.load("cpu", "A") is None


def test_save_replaces_a_corrupt_file(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text("{ not json")
    with pytest.warns(UserWarning, match=r"is not JSON .*moved to .*calibration\.json\.bad"):
        calibration.save("cpu", "A", {"fp32": 1.0}, None)
    assert calibration.load("cpu", "A") is not None
    assert (cache.parent / "calibration.json.bad").read_text() == "{ not json"  # kept, not lost


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calibration.save("cpu", "A", {"fp32": 1.0}, None)
    before = cache.read_bytes()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(HalError, match=r"cannot write the calibration file .*No space left"):
        calibration.save("cpu", "A", {"fp32": 9.0}, None)
    assert cache.read_bytes() == before
    assert not [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(calibration.CACHE_ENV, str(blocker / "sub"))  # a folder under a file
    with pytest.raises(HalError, match="cannot write the calibration file") as info:
        calibration.save("cpu", "A", {"fp32": 1.0}, None)
    assert "\n" not in str(info.value)


def test_the_default_place_is_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(calibration.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert calibration.path() == tmp_path / "hal" / "calibration.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert calibration.path() == tmp_path / ".cache" / "hal" / "calibration.json"


def test_concurrent_saves_never_leave_a_half_written_file(cache: Path) -> None:
    """Four processes save at once, many times; every read in between parses, no entry is lost."""
    code = ("import sys\nfrom hal import calibration\n"
            "for i in range(30): calibration.save('cpu', sys.argv[1], {'fp32': i + 1.0}, 1e9)\n")
    env = {**os.environ, calibration.CACHE_ENV: str(cache.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], env=env)
             for name in ("A", "B", "C", "D")]
    reads = 0
    while any(p.poll() is None for p in procs):
        if cache.exists():
            json.loads(cache.read_text())  # never a partial file
            reads += 1
    assert all(p.wait(timeout=120) == 0 for p in procs)
    finals = [calibration.load("cpu", name) for name in "ABCD"]  # no save lost another's entry
    assert [c.tflops["fp32"] if c else None for c in finals] == [30.0] * 4
    assert not [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_the_module_does_not_import_torch() -> None:
    code = ("import sys, os, tempfile\nos.environ['HAL_CACHE_DIR'] = tempfile.mkdtemp()\n"
            "from hal import calibration\ncalibration.save('cpu', 'A', {'bf16': 1.0}, None)\n"
            "calibration.load('cpu', 'A')\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _file(cache: Path, *entries: dict[str, object], schema: str = calibration.SCHEMA) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"schema": schema, "entries": list(entries)}))


H100 = {"backend": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "tflops": {"bf16": 700.0},
        "bandwidth": 2.9e12, "measured_at": "2026-12-01T00:00:00+00:00", "hal_version": "0.9"}
NEWER = {"backend": "cuda", "device_name": "NVIDIA B300", "tflops": {"mxfp4": 14000.0},
         "bandwidth": 7e12, "future_field": [1, 2], "hal_version": "9.0"}
NAMELESS = {"tflops": {"fp32": 1.0}, "note": "written by some other tool"}


@pytest.mark.parametrize("unknown", [NEWER, NAMELESS], ids=["newer-dtype", "no-device-name"])
def test_save_keeps_every_other_entry_also_one_this_hal_cannot_read(
        cache: Path, unknown: dict[str, object]) -> None:
    # Issue 20: one unreadable entry made save() drop every other device's entry, silently.
    _file(cache, H100, unknown)
    calibration.save("cpu", "A", {"fp32": 1.0}, 1e9)
    entries = json.loads(cache.read_text())["entries"]
    assert entries[:2] == [H100, unknown]  # byte for byte what was there
    assert entries[2]["device_name"] == "A"
    h100 = calibration.load("cuda", "NVIDIA H100 80GB HBM3") if unknown is NEWER else None
    assert unknown is NAMELESS or (h100 is not None and h100.tflops == {"bf16": 700.0})
    calibration.save("cuda", "NVIDIA H100 80GB HBM3", {"bf16": 710.0}, None)  # replaces its own
    entries = json.loads(cache.read_text())["entries"]
    assert [e.get("device_name") for e in entries] == [unknown.get("device_name"), "A",
                                                       "NVIDIA H100 80GB HBM3"]


def test_another_hal_versions_file_is_not_replaced(cache: Path) -> None:
    _file(cache, H100, schema="hal.calibration/2")
    before = cache.read_bytes()
    with pytest.raises(HalError, match=r"'hal.calibration/2'.*another hal version.*not replaced"):
        calibration.save("cpu", "A", {"fp32": 1.0}, None)
    assert cache.read_bytes() == before
    assert sorted(p.name for p in cache.parent.iterdir()) == [".calibration.lock",
                                                              "calibration.json"]


@pytest.mark.parametrize("figures", [
    {"tflops": {"fp32": 1e308}}, {"tflops": {"bf16": 1e-308}}, {"tflops": {"fp32": 2e5}},
    {"tflops": {"fp32": 1.0}, "bandwidth": 1e308}, {"tflops": {"fp32": 1.0}, "bandwidth": 1e-308},
    {"bandwidth": 10.0},
])
def test_implausible_measured_figures_are_not_trusted(cache: Path,
                                                      figures: dict[str, object]) -> None:
    # Issue 20: a file claiming 1e308 TFLOPS made hal plan print 298-digit speeds; 1e-308 Infinity.
    _file(cache, {"backend": "cpu", "device_name": "A", **figures}, H100)
    with pytest.warns(UserWarning, match=r"calibration ignored: cpu/A .* is outside .*spec sheet") \
            as record:
        assert calibration.load("cpu", "A") is None
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert calibration.load("cuda", "NVIDIA H100 80GB HBM3") is not None  # the others stand


def test_plausible_extremes_are_kept(cache: Path) -> None:
    _file(cache, {"backend": "cpu", "device_name": "A", "tflops": {"fp8": 0.003, "fp32": 9e4},
                  "bandwidth": 8e12})
    cal = calibration.load("cpu", "A")
    assert cal is not None and cal.tflops == {"fp8": 0.003, "fp32": 9e4}

"""Measured speed of the local device, saved by ``hal bench --save`` and read by ``hal plan``.

One JSON file holds one entry per (backend, device name): matmul TFLOPS per dtype (keys are
:mod:`hal.dtypes` family names, ``fp8`` for every 8-bit float, so they line up with the
catalogue's peaks) and device-memory copy bandwidth.  Writes are atomic (a temporary file in
the same folder, then a rename), and a file that cannot be read or is corrupt is ignored with a
warning, never a traceback.  Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hal.errors import ConfigError, HalError

CACHE_ENV = "HAL_CACHE_DIR"
FILENAME = "calibration.json"
SCHEMA = "hal.calibration/1"
#: A calibration file holds a few entries; anything larger is not one.
MAX_BYTES = 1 * 2**20


@dataclass(frozen=True)
class Calibration:
    """What ``hal bench --save`` measured on one device: TFLOPS by dtype, bytes/s, when, by which hal."""

    backend: str
    device_name: str
    tflops: Mapping[str, float] = field(default_factory=dict)
    bandwidth: float | None = None  # device-memory copy, bytes/s (read + write counted)
    measured_at: str = ""  # ISO 8601, UTC
    hal_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of one entry."""
        return {"backend": self.backend, "device_name": self.device_name,
                "tflops": dict(self.tflops), "bandwidth": self.bandwidth,
                "measured_at": self.measured_at, "hal_version": self.hal_version}


def path() -> Path:
    """The calibration file: ``$HAL_CACHE_DIR/calibration.json``, else under XDG's cache (~/.cache/hal)."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "hal")
    return Path(folder) / FILENAME


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and value > 0


def _entry(raw: Any) -> Calibration:
    """One entry of the file, validated; ConfigError names what is wrong."""
    from hal import dtypes

    if not isinstance(raw, Mapping):
        raise ConfigError("an entry is not an object")
    backend, name = raw.get("backend"), raw.get("device_name")
    if not isinstance(backend, str) or not isinstance(name, str) or not backend or not name:
        raise ConfigError("an entry lacks its backend or device_name")
    tflops = raw.get("tflops") or {}
    if not isinstance(tflops, Mapping) or not all(_positive(v) for v in tflops.values()):
        raise ConfigError(f"entry {backend}/{name}: tflops must map dtypes to positive numbers")
    bandwidth = raw.get("bandwidth")
    if bandwidth is not None and not _positive(bandwidth):
        raise ConfigError(f"entry {backend}/{name}: bandwidth {bandwidth!r} must be positive bytes/s")
    return Calibration(
        backend=backend, device_name=name,
        tflops={dtypes.parse(k, what="calibration dtype").kind: float(v) for k, v in tflops.items()},
        bandwidth=None if bandwidth is None else float(bandwidth),
        measured_at=str(raw.get("measured_at", "")), hal_version=str(raw.get("hal_version", "")))


def _read(file: Path) -> list[Calibration]:
    """Every entry of ``file``; [] when absent; ConfigError when unreadable or corrupt."""
    from hal.planner.configfile import read_json_file

    if not file.exists():
        return []
    data = read_json_file(str(file), what="calibration file", max_bytes=MAX_BYTES, max_depth=8)
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA \
            or not isinstance(data.get("entries"), list):
        raise ConfigError(f"calibration file {str(file)!r} is not a {SCHEMA} file")
    try:
        return [_entry(e) for e in data["entries"]]
    except ConfigError as exc:
        raise ConfigError(f"calibration file {str(file)!r}: {exc}") from None


def load(backend: str, device_name: str) -> Calibration | None:
    """The saved calibration of this device, or None; a bad file is ignored with a warning."""
    file = path()
    try:
        entries = _read(file)
    except (ConfigError, OSError) as exc:
        if not isinstance(exc, ConfigError):
            exc = ConfigError(f"calibration file {str(file)!r} cannot be read: {exc.strerror or exc}")
        warnings.warn(f"calibration ignored: {exc} (run 'hal bench --save' to write it again)",
                      UserWarning, stacklevel=2)
        return None
    return next((e for e in entries if e.backend == backend and e.device_name == device_name), None)


def save(backend: str, device_name: str, tflops: Mapping[str, float],
         bandwidth: float | None) -> Calibration:
    """Record a measurement (replacing this device's earlier one) atomically; HalError if unwritable."""
    from hal import __version__, dtypes

    entry = _entry({
        "backend": backend, "device_name": device_name,
        "tflops": {dtypes.parse(k).kind: v for k, v in tflops.items()}, "bandwidth": bandwidth,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hal_version": __version__})
    file = path()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with _locked(file.parent):
            _write(file, entry)
    except OSError as exc:
        raise HalError(f"cannot write the calibration file {str(file)!r}: "
                       f"{exc.strerror or exc} (set {CACHE_ENV} to a writable folder)") from None
    return entry


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder's lock file: two saves at once lose no entry."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the rename alone keeps the file whole
        yield
        return
    fd = os.open(folder / ".calibration.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(file: Path, entry: Calibration) -> None:
    """Merge ``entry`` into ``file`` (replacing its device's) through a temporary file and a rename."""
    try:
        others = [e for e in _read(file)
                  if (e.backend, e.device_name) != (entry.backend, entry.device_name)]
    except (ConfigError, OSError):
        others = []  # a corrupt file is replaced, not merged
    text = json.dumps({"schema": SCHEMA, "entries": [e.as_dict() for e in (*others, entry)]},
                      indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".calibration-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the user's other tools
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


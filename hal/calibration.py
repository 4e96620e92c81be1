"""Measured speed of the local device, saved by ``hal bench --save`` and read by ``hal plan``.

One JSON file holds one entry per (backend, device name): matmul TFLOPS per dtype (keys are
:mod:`hal.dtypes` family names, ``fp8`` for every 8-bit float, so they line up with the
catalogue's peaks) and device-memory copy bandwidth.  Writes are atomic (a temporary file in
the same folder, then a rename) and keep every other entry as it is, also one this hal cannot
read; a file that cannot be read, is corrupt or claims implausible figures is ignored with a
warning, never a traceback, and never replaced without saying so.  Torch-free.
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


#: Plausible measured figures: anything outside is a broken measurement or an edited file (the
#: fastest card's dense peak is ~10^4 TFLOPS, the fastest memory ~10^13 bytes/s; a slow host's
#: emulated matmul ~10^-3 TFLOPS).  Outside them an entry is not trusted: the spec sheet is used.
TFLOPS_RANGE = (1e-6, 1e5)
BANDWIDTH_RANGE = (1e6, 1e14)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and value > 0


def _implausible(cal: Calibration) -> str | None:
    """Which figure of ``cal`` is outside the plausible ranges (None when all are inside)."""
    for key, value in cal.tflops.items():
        lo, hi = TFLOPS_RANGE
        if not lo <= value <= hi:
            return f"{key} {value:.3g} TFLOPS is outside {lo:g}..{hi:g}"
    if cal.bandwidth is not None and not BANDWIDTH_RANGE[0] <= cal.bandwidth <= BANDWIDTH_RANGE[1]:
        lo, hi = BANDWIDTH_RANGE
        return f"bandwidth {cal.bandwidth:.3g} bytes/s is outside {lo:g}..{hi:g}"
    return None


def _key(raw: Any) -> tuple[str, str] | None:
    """(backend, device_name) of a raw entry, or None when it has no usable pair."""
    if not isinstance(raw, Mapping):
        return None
    backend, name = raw.get("backend"), raw.get("device_name")
    if not isinstance(backend, str) or not isinstance(name, str) or not backend or not name:
        return None
    return backend, name


def _entry(raw: Any) -> Calibration:
    """One entry of the file, validated; ConfigError names what is wrong."""
    from hal import dtypes

    if not isinstance(raw, Mapping):
        raise ConfigError("an entry is not an object")
    key = _key(raw)
    if key is None:
        raise ConfigError("an entry lacks its backend or device_name")
    backend, name = key
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


def _read_raw(file: Path) -> list[Any]:
    """The raw entries of ``file`` (as JSON gave them); [] when absent; ConfigError when the
    file cannot be read or is not a calibration file at all."""
    from hal.planner.configfile import read_json_file

    if not file.exists() and not file.is_symlink():
        return []
    data = read_json_file(str(file), what="calibration file", max_bytes=MAX_BYTES, max_depth=8)
    if not isinstance(data, Mapping) or not isinstance(data.get("entries"), list):
        raise ConfigError(f"calibration file {str(file)!r} is not a {SCHEMA} file")
    schema = data.get("schema")
    if schema != SCHEMA:
        newer = isinstance(schema, str) and schema.startswith(SCHEMA.rsplit("/", 1)[0] + "/")
        raise _OtherSchema(f"calibration file {str(file)!r} is a {str(schema)[:40]!r} file, "
                           f"not {SCHEMA}" + (" (written by another hal version)" if newer else ""),
                           newer)
    return list(data["entries"])


class _OtherSchema(ConfigError):
    """The file holds another schema; ``versioned`` when it is another hal's calibration schema."""

    def __init__(self, message: str, versioned: bool) -> None:
        super().__init__(message)
        self.versioned = versioned


def load(backend: str, device_name: str) -> Calibration | None:
    """The saved calibration of this device, or None.  A bad file, an entry this hal cannot
    read and a figure outside the plausible ranges are each ignored with a warning."""
    file = path()
    try:
        raws = _read_raw(file)
        if any(_key(r) is None for r in raws):
            raise ConfigError(f"calibration file {str(file)!r}: an entry lacks its backend or "
                              "device_name")
        mine = [r for r in raws if _key(r) == (backend, device_name)]
        try:
            cal = _entry(mine[-1]) if mine else None
        except ConfigError as exc:
            raise ConfigError(f"calibration file {str(file)!r}: {exc}") from None
    except (ConfigError, OSError) as exc:
        if not isinstance(exc, ConfigError):
            exc = ConfigError(f"calibration file {str(file)!r} cannot be read: {exc.strerror or exc}")
        warnings.warn(f"calibration ignored: {exc} (run 'hal bench --save' to write it again)",
                      UserWarning, stacklevel=2)
        return None
    problem = _implausible(cal) if cal is not None else None
    if problem is not None:
        warnings.warn(f"calibration ignored: {backend}/{device_name} in {str(file)!r}: {problem}, "
                      "not a real measurement; using the spec sheet (run 'hal bench --save' to "
                      "measure again)", UserWarning, stacklevel=2)
        return None
    return cal


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
    """Merge ``entry`` into ``file`` (replacing its device's) through a temporary file and a rename.

    Every other entry is kept as it is, also one this hal cannot read (a newer hal's dtype, say).
    A file that is not a calibration file at all is moved aside to ``<name>.bad`` with a
    warning; another hal version's schema is not touched (HalError).
    """
    aside: str | None = None
    try:
        raws = _read_raw(file)
    except _OtherSchema as exc:
        if exc.versioned:
            raise HalError(f"{exc}; not replaced: set {CACHE_ENV} to another folder for this "
                           "hal, or remove the file") from None
        aside = str(exc)
        raws = []
    except (ConfigError, OSError) as exc:
        aside = str(exc) if isinstance(exc, ConfigError) else f"cannot be read: {exc.strerror or exc}"
        raws = []
    others = [r for r in raws if _key(r) != (entry.backend, entry.device_name)]
    text = json.dumps({"schema": SCHEMA, "entries": [*others, entry.as_dict()]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".calibration-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the user's other tools
        if aside is not None:
            backup = file.with_name(file.name + ".bad")
            os.replace(file, backup)
            warnings.warn(f"{aside}; it was moved to {str(backup)!r} and a new one written",
                          UserWarning, stacklevel=4)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

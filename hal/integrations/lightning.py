"""Lightning on hal: ``Trainer(accelerator="hal")`` once this module is imported.

Lightning finds accelerators only in its ``AcceleratorRegistry`` (it has no entry-point
discovery for them), so the import is what registers ``"hal"``; the ``"hal_ddp"`` strategy is
Lightning's own ``DDPStrategy`` on the selected backend's process-group backend.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import Accelerator, AcceleratorRegistry
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, StrategyRegistry

from hal.errors import ConfigError
from hal.integrations import device_count, selected
from hal.parse import parse_int
from hal.validate import MAX_DEVICES

NAME = "hal"
DDP_NAME = "hal_ddp"
#: hal's policy (compute dtype short name) -> Lightning's ``precision`` value.
PRECISIONS = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}

__all__ = ["DDP_NAME", "NAME", "PRECISIONS", "HalAccelerator", "HalDDPStrategy", "precision"]


def precision(device: Any = None) -> str:
    """Lightning's ``precision`` value for hal's policy on ``device`` (HAL_PRECISION respected)."""
    from hal.precision import policy

    return PRECISIONS[policy(device).name]


def _host_ranks() -> int:
    """Processes per node on the host: the launcher's LOCAL_WORLD_SIZE under torchrun, else 1."""
    from hal.parse import parse_int

    raw = os.environ.get("LOCAL_WORLD_SIZE")
    return 1 if raw is None else max(parse_int("LOCAL_WORLD_SIZE", raw, hi=1 << 16), 1)


def _indices(devices: int | str | list[int]) -> list[int]:
    """Lightning's ``devices`` flag as device indices of the selected backend."""
    count = HalAccelerator.auto_device_count()
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return list(range(count))
        parts = [p for p in text.split(",") if p.strip()]
        try:
            numbers = [parse_int("devices", p, hi=MAX_DEVICES) for p in parts]
        except ConfigError:
            numbers = []
        if not numbers:
            raise ConfigError(f"Trainer(devices={devices!r}): expected 'auto', a count or indices "
                              "such as '0,1'") from None
        # "2" is a count, "1," or "0,1" are indices (Lightning's own convention).
        wanted = numbers if "," in text else list(range(numbers[0]))
    elif isinstance(devices, bool) or not isinstance(devices, (int, list)):
        raise ConfigError(f"Trainer(devices={devices!r}): expected 'auto', a count or a list of indices")
    elif isinstance(devices, int):
        wanted = list(range(count)) if devices == -1 else list(range(devices))
    else:
        wanted = [int(i) for i in devices]
    if not wanted:
        raise ConfigError(f"Trainer(devices={devices!r}) asks for no device")
    bad = [i for i in wanted if i < 0 or i >= count]
    if bad:
        backend, _ = selected()
        raise ConfigError(f"Trainer(devices={devices!r}): index {bad[0]} is out of range; "
                          f"{backend.name} has {count} device(s) here")
    return wanted


class HalAccelerator(Accelerator):  # type: ignore[misc]
    """Lightning's accelerator for whatever device hal selected (HAL_DEVICE, fallback, LOCAL_RANK)."""

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current; it must be a device of hal's selected backend."""
        backend, _ = selected()
        if device.type != backend.device_type:
            raise MisconfigurationException(
                f"hal selected {backend.name} ({backend.device_type}), got {device} instead")
        if device.index is not None:
            backend.set_device(device.index)

    def setup(self, trainer: pl.Trainer) -> None:
        """Put Lightning's device-blind defaults on hal's device: a single-device strategy Lightning
        placed on the CPU, and a mixed-precision plugin it made for another device type."""
        backend, index = selected()
        strategy = trainer.strategy
        if isinstance(strategy, SingleDeviceStrategy) and strategy.root_device.type != backend.device_type:
            strategy._root_device = backend.torch_device(index)
        plugin = strategy.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.device != backend.device_type:
            plugin.device = backend.device_type
            if plugin.scaler is not None:
                from hal.precision import grad_scaler

                plugin.scaler = grad_scaler(backend.torch_device(index), enabled=True)

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """hal's memory figures of ``device`` (bytes; the same keys on every vendor)."""
        from hal.memory import info

        mem = info(device)
        return {f"hal/{k}": getattr(mem, k) for k in ("total", "free", "allocated", "reserved", "peak")}

    def teardown(self) -> None:
        """Give cached device memory back, as Lightning's own accelerators do."""
        from hal.memory import empty_cache

        empty_cache()

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> int | list[int]:
        """A count on the host (one process each), device indices on an accelerator."""
        backend, _ = selected()
        if backend.device_type == "cpu":
            if isinstance(devices, str) and devices.strip() in ("auto", "-1"):
                return HalAccelerator.auto_device_count()
            if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
                return devices
            if isinstance(devices, str):
                with contextlib.suppress(ConfigError):
                    return parse_int("devices", devices, lo=1, hi=MAX_DEVICES)
            raise ConfigError(f"Trainer(devices={devices!r}) on the host: expected 'auto' or a "
                              "positive count of processes")
        return _indices(devices)

    @staticmethod
    def get_parallel_devices(devices: int | list[int]) -> list[torch.device]:
        """One ``torch.device`` a process."""
        backend, _ = selected()
        if isinstance(devices, int):
            return [backend.torch_device(None)] * devices
        return [backend.torch_device(i) for i in devices]

    @staticmethod
    def auto_device_count() -> int:
        """The selected backend's device count; on the host, the launcher's processes per node."""
        backend, _ = selected()
        return _host_ranks() if backend.device_type == "cpu" else device_count()

    @staticmethod
    def is_available() -> bool:
        """hal always selects something (the CPU last)."""
        return True

    @staticmethod
    def name() -> str:
        """The registry name: ``Trainer(accelerator="hal")``."""
        return NAME

    @classmethod
    def register_accelerators(cls, accelerator_registry: Any) -> None:
        """Register as ``"hal"``."""
        accelerator_registry.register(cls.name(), cls, description=cls.__doc__, override=True)


class HalDDPStrategy(DDPStrategy):  # type: ignore[misc]
    """Lightning's DDP with hal's process-group backend (gloo on the host; beside it the backend's
    own: the vendor's collective library) unless one is given."""

    strategy_name = DDP_NAME

    def _get_process_group_backend(self) -> str:
        if self._process_group_backend:
            return str(self._process_group_backend)
        from hal.distributed.env import backend_string

        return backend_string(selected()[0])

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        """Register as ``"hal_ddp"``."""
        strategy_registry.register(cls.strategy_name, cls, description=cls.__doc__, override=True)


HalAccelerator.register_accelerators(AcceleratorRegistry)
HalDDPStrategy.register_strategies(StrategyRegistry)

"""A toy accelerator backend, as an outside vendor would write it from docs/plugins.md.

Its "devices" are announced by the TOYACCEL_DEVICES environment variable (a count) and run
on torch's meta device, so hal's tests can exercise a real third-party plugin end to end.
"""

from __future__ import annotations

import os

import hal


class ToyAccelBackend(hal.Backend):
    name = "toyaccel"
    device_type = "meta"
    priority = 50
    visible_devices_env = ("TOYACCEL_DEVICES",)

    def probe(self) -> hal.Probe:
        count = int(os.environ.get("TOYACCEL_DEVICES", "0") or 0)
        if count <= 0:
            return hal.Probe(False, "TOYACCEL_DEVICES is not set: no toy devices", 0)
        return hal.Probe(True, f"{count} toy device(s) announced", count)


@hal.hookimpl
def hal_backends():
    return [ToyAccelBackend()]

"""On the PrivateUse1 test device (halsim): what each integration gives, as JSON on stdout."""

import json

import lightning.pytorch as pl

import hal
import hal.integrations.lightning as hl
from hal.integrations.accelerate import accelerator
from hal.integrations.transformers import from_pretrained_kwargs

acc = hl.HalAccelerator()
trainer = pl.Trainer(accelerator="hal", precision="bf16-mixed", logger=False, max_steps=1)
trainer.accelerator.setup(trainer)  # what Trainer.fit does first, before it moves the model
ddp = hl.HalDDPStrategy(accelerator=acc, parallel_devices=acc.get_parallel_devices(acc.parse_devices("auto")))
plugin = trainer.strategy.precision_plugin
kwargs = from_pretrained_kwargs()
a = accelerator(mixed_precision="no")
print(json.dumps({
    "device": str(hal.get_device()),
    "accelerator": type(trainer.accelerator).__name__,
    "root_device": str(trainer.strategy.root_device),
    "autocast_device": plugin.device,
    "parallel": [str(d) for d in acc.get_parallel_devices(acc.parse_devices("auto"))],
    "ddp_backend": ddp._get_process_group_backend(),
    "accelerate_device": str(a.device),
    "device_map": kwargs["device_map"],
    "max_memory": sorted(map(str, kwargs.get("max_memory", {}))),
}))

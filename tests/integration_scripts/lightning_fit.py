"""A real ``Trainer(accelerator="hal").fit`` of a small model for five steps; prints one RESULT line.

argv[1]: the strategy (default ``auto``: Lightning's own choice).
"""

import json
import sys

import lightning.pytorch as pl
import torch

import hal.integrations.lightning as hl


class Tiny(pl.LightningModule):
    """A linear regression to y = sum(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.losses: list[float] = []

    def training_step(self, batch, index):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.losses.append(float(loss))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


gen = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=gen)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
trainer = pl.Trainer(accelerator="hal", strategy=sys.argv[1] if len(sys.argv) > 1 else "auto",
                     precision=hl.precision(), max_steps=5, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
model = Tiny()
trainer.fit(model, data)
dist = torch.distributed
print("RESULT " + json.dumps({
    "rank": trainer.global_rank, "world": trainer.world_size, "strategy": type(trainer.strategy).__name__,
    "device": str(trainer.strategy.root_device), "precision": trainer.precision,
    "pg": dist.get_backend() if dist.is_initialized() else None, "steps": trainer.global_step,
    "param_device": str(next(model.parameters()).device), "learned": model.losses[-1] < model.losses[0]}))

"""A real Accelerate training loop on ``hal.integrations.accelerate.accelerator()``; one RESULT line."""

import json

import torch

from hal.integrations.accelerate import accelerator

acc = accelerator()
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=gen)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
model, opt, data = acc.prepare(model, opt, data)
losses = []
for xb, yb in data:
    with acc.autocast():
        loss = torch.nn.functional.mse_loss(model(xb), yb)
    acc.backward(loss)
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
dist = torch.distributed
print("RESULT " + json.dumps({
    "rank": acc.process_index, "world": acc.num_processes, "device": str(acc.device),
    "mixed_precision": acc.mixed_precision, "type": str(acc.distributed_type),
    "pg": dist.get_backend() if dist.is_initialized() else None, "steps": len(losses),
    "learned": losses[-1] < losses[0]}))

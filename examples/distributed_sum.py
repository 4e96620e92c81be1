"""Data-parallel sum and training that gives the same answer as 1 process or under ``hal run``.

    python examples/distributed_sum.py          # one process: a world of one
    hal run -n 2 examples/distributed_sum.py    # two ranks, same printed result

Each rank takes every world_size-th sample; all_reduce adds the partial sums, and the wrapped
model averages gradients, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import torch

from hal import distributed as hd

SAMPLES = 1024
STEPS = 20


def main() -> None:
    world = hd.init(timeout=120)
    data = torch.arange(SAMPLES, dtype=torch.float64)
    mine = data[world.rank::world.world_size].to(world.device)

    total = hd.all_reduce(mine.square().sum(), "sum")

    torch.manual_seed(0)
    model = hd.wrap(torch.nn.Linear(1, 1, dtype=torch.float64))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = (mine / SAMPLES).unsqueeze(1)
    y = 3.0 * x + 1.0
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    w = model.module.weight.item()
    b = model.module.bias.item()
    if world.is_main:
        print(f"sum of squares 0..{SAMPLES - 1} = {total.item():.0f}; "
              f"fit y = {w:.6f} x + {b:.6f}", flush=True)
    hd.shutdown()


if __name__ == "__main__":
    main()

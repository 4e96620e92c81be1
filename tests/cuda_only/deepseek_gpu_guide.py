"""The CUDA snippets of a DeepSeek-R1 GPU-selection guide, assembled into one training script.

Written for NVIDIA only, as such guides are: DDP over NCCL with one GPU per rank, mixed precision
through torch.cuda.amp, activation checkpointing, empty_cache/memory_summary, and a dynamic-batch
loop that grows the batch while CUDA memory use stays under a budget.  hal's tests run this file
unchanged (``hal run --cuda-compat -n 2``); never edit it to make a backend pass.

Prints one JSON line per rank: its device, the all-reduced sums and the batch sizes it chose.
"""

import json
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint


def setup():
    if not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: this guide needs an NVIDIA GPU")
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return local_rank


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        return x + checkpoint(self.ff, x, use_reentrant=False)


class Model(nn.Module):
    def __init__(self, width=64, depth=2):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.blocks(x))


def memory_fraction():
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return torch.cuda.memory_allocated() / total


def main():
    local_rank = setup()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank)
    torch.manual_seed(0)
    model = Model().cuda(local_rank)
    model = DDP(model, device_ids=[local_rank], output_device=local_rank)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()

    # the guide's check that every GPU takes part: all-reduce of the ranks and of a vector
    ranks = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(ranks, op=dist.ReduceOp.SUM)
    vector = torch.arange(4, dtype=torch.float32, device="cuda") * (rank + 1)
    dist.all_reduce(vector)

    # dynamic batch: double while memory use stays under the budget
    budget, batch, chosen = 0.9, 4, []
    for _ in range(3):
        x = torch.randn(batch, 64, device=device)
        y = torch.randn(batch, 1).to("cuda")
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.amp.autocast():
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize()
        chosen.append(batch)
        if memory_fraction() < budget:
            batch *= 2
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.empty_cache()

    # DDP keeps the replicas equal: the parameter sum is the same on every rank
    param_sum = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum()
    gathered = [torch.zeros_like(param_sum) for _ in range(world)]
    dist.all_gather(gathered, param_sum)
    summary = torch.cuda.memory_summary(device=device, abbreviated=True)
    print(json.dumps({
        "rank": rank, "world": world, "device": str(vector.device),
        "current_device": torch.cuda.current_device(), "rank_sum": ranks.item(),
        "vector": vector.tolist(), "batches": chosen, "peak": peak,
        "replicas_equal": all(torch.equal(g, gathered[0]) for g in gathered),
        "loss": loss.item(), "summary_lines": len(summary.splitlines()),
    }), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

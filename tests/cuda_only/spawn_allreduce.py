"""A CUDA-only DDP tutorial in its torch.multiprocessing.spawn form: one process per GPU.

hal's tests run it unchanged under ``python -m hal.cuda_compat`` on the CPU; never edit it to
make a backend pass.  Rank 0 prints the all-reduced sum as JSON.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world_size, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = port
    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    torch.cuda.set_device(rank)
    value = torch.full((3,), float(rank + 1)).cuda(rank)
    dist.all_reduce(value)
    if rank == 0:
        print(json.dumps({"sum": value.tolist(), "device": str(value.device),
                          "backend": dist.get_backend()}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    world = int(sys.argv[1])
    mp.spawn(worker, args=(world, sys.argv[2]), nprocs=world, join=True)

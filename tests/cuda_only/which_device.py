"""A CUDA-only probe: what this rank's "cuda" is, as plain torch reports it.

Prints one JSON line; hal's tests run it with and without the cuda-compat mode, unchanged.
"""

import json
import os

import torch

rank = int(os.environ.get("LOCAL_RANK", "0"))
report = {"rank": rank, "is_available": torch.cuda.is_available(),
          "torch_cuda": type(torch.cuda).__name__}
if torch.cuda.is_available():
    torch.cuda.set_device(rank)
    report["current_device"] = torch.cuda.current_device()
    report["device"] = str(torch.ones(1, device=f"cuda:{rank}").device)
print(json.dumps(report), flush=True)

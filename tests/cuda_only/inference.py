"""A CUDA-only inference script: a small classifier moved to the GPU, run in eval mode.

Written for NVIDIA only.  hal's tests run it unchanged under ``python -m hal.cuda_compat`` on
a PrivateUse1 device; never edit it to make a backend pass.  Prints one JSON line.
"""

import json

import torch
import torch.nn as nn

if not torch.cuda.is_available():
    raise SystemExit("no CUDA device")
torch.cuda.set_device(0)
print("GPU:", torch.cuda.get_device_name(0), "of", torch.cuda.device_count())
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
inputs = torch.randn(8, 16)
expected = model(inputs).argmax(-1)  # on the host, before the move

model = model.cuda().eval()
with torch.no_grad():
    batch = inputs.to("cuda", non_blocking=True)
    logits = model(batch)
    probs = torch.softmax(logits, dim=-1)
torch.cuda.synchronize()
labels = probs.argmax(-1).cpu()
torch.cuda.empty_cache()
print(json.dumps({"device": str(logits.device), "labels": labels.tolist(),
                  "expected": expected.tolist(),
                  "probs_sum": round(float(probs.sum().cpu()), 4)}))

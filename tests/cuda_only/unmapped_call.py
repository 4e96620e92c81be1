"""A CUDA-only script whose profiling ranges use NVTX, which only NVIDIA's tools read.

hal's tests run it unchanged under the cuda-compat mode on the CPU, where torch.cuda.nvtx has no
equivalent: the run must stop with one line naming the call, not a traceback.
"""

import torch

x = torch.randn(8, 8, device="cuda")
torch.cuda.nvtx.range_push("matmul")
y = x @ x
torch.cuda.nvtx.range_pop()
print(y.sum().item())

"""CUDA-only use of libraries that branch on torch.cuda.is_available(): transformers and accelerate.

A tiny randomly initialised model (no download) built and run on "cuda" the way their docs show.
Prints one JSON line; hal's tests run it unchanged under the cuda-compat mode.
"""

import json

import torch
from accelerate import PartialState
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import is_torch_cuda_available

config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
device = "cuda" if torch.cuda.is_available() else "cpu"
model = LlamaForCausalLM(config).to(device).eval()
ids = torch.tensor([[1, 2, 3, 4]], device=device)
with torch.no_grad(), torch.autocast("cuda"):
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
print(json.dumps({
    "transformers_cuda": is_torch_cuda_available(),
    "accelerate_device": str(PartialState().device),
    "pipeline_device": str(out.device),
    "pipeline_ok": out.shape == (1, 7),
}))

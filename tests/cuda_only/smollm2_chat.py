"""A CUDA-only chat script: a GGUF instruct model on the GPU with transformers, one answer.

    python smollm2_chat.py MODEL_DIR GGUF_FILE "What is the capital of France?"

Written for NVIDIA only (``device_map="cuda"``, ``torch.cuda`` memory and timing calls).  hal's
tests run it unchanged under ``python -m hal.cuda_compat``; never edit it to make a backend pass.
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, gguf_file, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
assert torch.cuda.is_available(), "this script needs a CUDA GPU"
tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file,
                                             device_map="cuda").eval()
inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                       add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True).to("cuda")
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
torch.cuda.reset_peak_memory_stats()
start.record()
with torch.inference_mode():
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
end.record()
torch.cuda.synchronize()
answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(f"answer: {answer}")
print(f"device: {model.device}; peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB; "
      f"{start.elapsed_time(end):.0f} ms")

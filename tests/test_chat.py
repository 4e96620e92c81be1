"""examples/chat.py's bad input: one line on stderr and exit 2, before any model is loaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ISOLATED_VARS, read_terminal

CHAT = Path(__file__).resolve().parents[1] / "examples" / "chat.py"


@pytest.mark.parametrize("args, words", [
    (["--prompts", "/nonexistent/prompts.txt"], "not a regular file"),
    (["--prompts", "EMPTY"], "no prompts"),
    (["-n", "0", "hi"], "--max-new-tokens=0"),
    (["--max-batch", "lots", "hi"], "--max-batch='lots'"),
    (["--prompts", "EMPTY", "hi"], "not both"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    argv = [str(empty) if a == "EMPTY" else a for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    done = subprocess.run([sys.executable, str(CHAT), *argv], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stdout == ""


# A real run of chat.py, its stdout a pseudo-terminal; this wrapper only records what reaches
# the terminal (each write, as the real line-buffered stdout makes it) and each forward pass of
# the model, in order, so "shown while generating" is an order of events, not a timing.
RECORD = """
import io, json, os, runpy, sys
import torch

events = []

class Terminal(io.RawIOBase):
    def writable(self): return True
    def isatty(self): return os.isatty(1)
    def fileno(self): return 1
    def write(self, data):
        data = bytes(data)
        events.append(["write", data.decode("utf-8", "replace")])
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
        return len(data)

sys.stdout = io.TextIOWrapper(io.BufferedWriter(Terminal()), encoding="utf-8",
                              line_buffering=True)

def forward(module, args, output):
    if type(module).__name__.endswith("ForCausalLM"):
        events.append(["forward", ""])

torch.nn.modules.module.register_module_forward_hook(forward)
log, chat, *argv = sys.argv[1:]
sys.argv = [chat, *argv]
code = 0
try:
    runpy.run_path(chat, run_name="__main__")
except SystemExit as exc:
    code = exc.code
finally:
    sys.stdout.flush()
    with open(log, "w") as f:
        json.dump(events, f)
sys.exit(code)
"""

PROMPT = "What is the capital of France?"


def _model_or_skip() -> None:
    sys.path.insert(0, str(CHAT.parent))
    import realmodel

    try:
        realmodel.check_available()
    except realmodel.ModelUnavailable as exc:
        pytest.skip(str(exc))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env.update(HAL_PRECISION="fp32", HAL_DEVICE="cpu", OMP_NUM_THREADS="1")
    return env


def _on_terminal_and_piped(args: list[str], tmp_path: Path
                           ) -> tuple[str, list[list[str]], str]:
    """chat.py with ``args`` twice at once: stdout a pseudo-terminal (its text, and the recorded
    events), and stdout a pipe (its text)."""
    import pty

    script, log = tmp_path / "record.py", tmp_path / "events.json"
    script.write_text(RECORD)
    master, slave = pty.openpty()
    with open(tmp_path / "tty-stderr.txt", "w") as err:
        on_tty = subprocess.Popen([sys.executable, str(script), str(log), str(CHAT), *args],
                                  stdin=subprocess.DEVNULL, stdout=slave, stderr=err,
                                  env=_env())
    os.close(slave)
    piped = subprocess.Popen([sys.executable, str(CHAT), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
    seen = read_terminal(master)
    assert on_tty.wait(timeout=900) == 0, (tmp_path / "tty-stderr.txt").read_text()[-3000:]
    out, err_text = piped.communicate(timeout=900)
    assert piped.returncode == 0, err_text[-3000:]
    events = json.loads(log.read_text())
    return seen.decode().replace("\r\n", "\n"), events, out


def _writes(events: list[list[str]]) -> list[str]:
    return [text for kind, text in events if kind == "write"]


PIPED_HEAD = (r"model:  SmolLM2-135M-Instruct\.Q4_1\.gguf, 134\.52M parameters, loaded in "
              r"\d+\.\d s\ndevice: cpu \(hal\.get_device\(\)\)\n"
              r"dtype:  float32 \(hal's precision policy: HAL_PRECISION=fp32: native on cpu\)\n\n")
TAIL = r"\n\d+ tokens in \d+\.\d\d s: \d+\.\d tokens/s{}\nmemory: cpu \(cpu\) memory\n(  .*\n)+$"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_on_a_terminal_the_load_steps_show_and_the_answer_streams(tmp_path: Path) -> None:
    _model_or_skip()
    tty, events, piped = _on_terminal_and_piped([PROMPT, "-n", "8"], tmp_path)
    # Piped: exactly the output chat.py always printed, the answer once it is whole.
    match = re.fullmatch(PIPED_HEAD + re.escape(f"> {PROMPT}\n") + r"(.*)\n" + TAIL.format(""),
                         piped)
    assert match, piped
    answer = match.group(1)
    assert "Paris" in answer and "load:" not in piped
    # The terminal: each load step's line is written as it begins (before its seconds), all
    # before the model's first forward pass; then the same lines as piped.
    writes = _writes(events)
    first_forward = next(i for i, (kind, _) in enumerate(events) if kind == "forward")
    for step in ("torch, hal", "tokenizer", "config", "weights (dequantising)", "to cpu, float32"):
        assert f"load: {step} ..." in writes, writes
        assert events.index(["write", f"load: {step} ..."]) < first_forward
    steps, rest = tty.split("model:  ", 1)
    assert re.fullmatch(r"(load: [^\n]+ \.\.\. \d+\.\d s\n){5}", steps), steps
    assert re.fullmatch(PIPED_HEAD + re.escape(f"> {PROMPT}\n{answer}\n") + TAIL.format(""),
                        "model:  " + rest), rest
    # The answer reaches the terminal in pieces while the model is still generating: model
    # forward passes come between its first and its last piece.
    start = next(i for i, (kind, text) in enumerate(events) if text.endswith(f"> {PROMPT}\n"))
    end = next(i for i, (kind, text) in enumerate(events) if i > start and "tokens in" in text)
    pieces = [i for i in range(start + 1, end) if events[i][0] == "write"]
    assert "".join(events[i][1] for i in pieces).strip() == answer
    between = [kind for kind, _ in events[pieces[0]:pieces[-1]]]
    assert len(pieces) >= 3 and between.count("forward") >= 2, events[start:end]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_on_a_terminal_prompts_answers_show_as_each_is_done(tmp_path: Path) -> None:
    _model_or_skip()
    prompts = ["What is 2+2?", "Name a colour.", "What is the capital of Italy?"]
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n")
    tty, events, piped = _on_terminal_and_piped(
        ["--prompts", str(file), "-n", "3", "--max-batch", "1"], tmp_path)
    batches = re.escape(", batch sizes tried [1], settled at 1")
    answers = r"".join(re.escape(f"[{i}] {p}\n  -> ") + r"[^\n]*\n" for i, p in enumerate(prompts))
    match = re.fullmatch(PIPED_HEAD + f"({answers})" + TAIL.format(batches), piped)
    assert match and "load:" not in piped, piped
    steps, rest = tty.split("model:  ", 1)
    assert re.fullmatch(r"(load: [^\n]+ \.\.\. \d+\.\d s\n){5}", steps), steps
    assert re.fullmatch(PIPED_HEAD + re.escape(match.group(1)) + TAIL.format(batches),
                        "model:  " + rest), rest  # the same answers, in input order
    # Each answer is written once it is done, before the next prompt's forward passes.
    at = [next(i for i, (kind, text) in enumerate(events) if text.startswith(f"[{n}] "))
          for n in range(len(prompts))]
    for n in range(len(prompts) - 1):
        assert "forward" in [kind for kind, _ in events[at[n]:at[n + 1]]], events

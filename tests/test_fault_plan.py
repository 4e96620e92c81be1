"""Fault injection for ``hal plan``'s inputs: special files, huge and deep JSON, impossible shapes.

The CLI cases run the real ``hal plan`` in a subprocess; a hang would hit the subprocess
timeout.  The error text itself proves nothing was read (a device or FIFO is refused by its
type, a large file by its size), so the tests do not time anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import run_hal

from hal.errors import ConfigError
from hal.planner.configfile import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    check_config,
    nesting_depth,
    parse_count,
    read_json_config,
    read_json_file,
)

LLAMA: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 32000, "max_position_embeddings": 4096,
}


def _one_line_exit_2(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hal: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_plan_dev_zero_is_refused_unread() -> None:
    line = _one_line_exit_2(run_hal("plan", "/dev/zero", "--no-local", timeout=60))
    assert "character device, not a regular file" in line


def test_plan_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    line = _one_line_exit_2(run_hal("plan", str(fifo), "--no-local", timeout=60))
    assert "FIFO" in line


def test_plan_a_folder_holding_a_fifo_named_config_json(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.json")
    line = _one_line_exit_2(run_hal("plan", str(tmp_path), "--no-local", timeout=60))
    assert "FIFO" in line


def test_plan_a_sparse_gigabyte_file_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(2**30)  # sparse: nothing is written
    line = _one_line_exit_2(run_hal("plan", str(big), "--no-local", timeout=60))
    assert "1024 MiB" in line and "cap is 4 MiB" in line


def test_plan_100k_deep_json_is_refused_before_parsing(tmp_path: Path) -> None:
    deep = tmp_path / "config.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    line = _one_line_exit_2(run_hal("plan", str(deep), "--no-local", timeout=60))
    assert "nests 100000 levels deep; at most 64" in line


@pytest.mark.parametrize(("change", "words"), [
    ({"num_key_value_heads": -8}, "'num_key_value_heads'"),
    ({"num_key_value_heads": 5}, "does not divide num_attention_heads 32"),
    ({"num_attention_heads": 8192, "num_key_value_heads": 8192}, "does not divide hidden_size 4096"),
    ({"max_position_embeddings": -1}, "'max_position_embeddings'"),
    ({"hidden_size": 1e400}, "'hidden_size' is inf"),
])
def test_plan_impossible_configs_are_one_line_errors(tmp_path: Path, change: dict[str, Any],
                                                     words: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, **change}).replace("Infinity", "1e400"))
    line = _one_line_exit_2(run_hal("plan", str(path), "--no-local", timeout=60))
    assert words in line


def test_plan_a_count_of_400_nines_is_one_line() -> None:
    line = _one_line_exit_2(run_hal("plan", "9" * 400 + "B", "--no-local", timeout=60))
    assert "not a parameter count hal can plan" in line and len(line) < 800


# -- the reader and checks in-process ------------------------------------------------------


def test_reading_stays_small_whatever_the_file(tmp_path: Path) -> None:
    """/dev/zero, a FIFO and a 1 GB file are refused in a child whose peak memory stays small."""
    fifo, big = tmp_path / "fifo", tmp_path / "big.json"
    os.mkfifo(fifo)
    with open(big, "wb") as f:
        f.truncate(2**30)
    # The child reports its own peak, VmHWM of its address space: RUSAGE_CHILDREN would be the
    # largest child this pytest process ever reaped, and even the child's own ru_maxrss keeps the
    # forked copy of pytest's RSS across exec (a real model loaded by another test, say).
    code = ("import re, sys\nfrom hal.planner.configfile import read_json_file\n"
            "for p in sys.argv[1:]:\n"
            "    try: read_json_file(p)\n"
            "    except ValueError as e: print(e)\n"
            "status = open('/proc/self/status').read()\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n")
    out = subprocess.run([sys.executable, "-c", code, "/dev/zero", str(fifo), str(big)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    *errors, peak = out.stdout.splitlines()
    assert len(errors) == 3
    assert int(peak) < 512 * 1024  # KiB: a read of /dev/zero or the 1 GB file would pass 1 GiB


def test_a_file_over_the_cap_by_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(" " * (MAX_CONFIG_BYTES - 2) + "{}")
    assert read_json_config(str(path)) == {}
    path.write_text(" " * (MAX_CONFIG_BYTES - 1) + "{}")
    with pytest.raises(ConfigError, match="cap is 4 MiB"):
        read_json_config(str(path))


def test_nesting_is_counted_outside_strings_only(tmp_path: Path) -> None:
    assert nesting_depth('{"a": "[[[[[[", "b": [[1], {"c": "\\"]]]"}]}') == 3
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"layer_types": ["[" * 1000]}))
    assert read_json_file(str(ok))["layer_types"][0] == "[" * 1000
    deep = tmp_path / "deep.json"
    deep.write_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ConfigError, match=f"nests {MAX_DEPTH + 1} levels"):
        read_json_file(str(deep))


@pytest.mark.parametrize(("text", "words"), [
    ("{\"a\": NaN}", "NaN, which is not a number"),
    ("{\"a\": 1,}", "is not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("\udcff", "not UTF-8"),
])
def test_bad_json_is_a_config_error(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=words):
        read_json_config(str(path))


def test_huge_numbers_do_not_overflow(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": ' + "9" * 5000 + ', "vocab_size": 1e400}')
    cfg = read_json_config(str(path))
    with pytest.raises(ConfigError, match="'hidden_size' is inf"):
        check_config(cfg)


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        read_json_config(str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="cannot be read"):
        read_json_config("bad\0name")


def test_a_real_config_passes_the_checks() -> None:
    check_config(LLAMA)
    check_config({"text_config": LLAMA})
    check_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
                  "vocab_size": 50257, "n_positions": 1024, "n_inner": None})
    check_config({**LLAMA, "num_attention_heads": 24, "head_dim": 128})  # head_dim given


@pytest.mark.parametrize(("change", "words"), [
    ({"num_key_value_heads": 0}, "'num_key_value_heads'=0 is out of range"),
    ({"num_hidden_layers": -3}, "'num_hidden_layers'=-3 is out of range"),
    ({"num_key_value_heads": 12}, "does not divide"),
    ({"num_attention_heads": 5000, "num_key_value_heads": 5000}, "does not divide hidden_size"),
    ({"n_routed_experts": 8, "num_experts_per_tok": 9}, "'num_experts_per_tok' is 9, more than"),
    ({"first_k_dense_replace": 99}, "'first_k_dense_replace' is 99, more than the 32 layers"),
    ({"hidden_size": 4096.5}, "'hidden_size' is 4096.5"),
    ({"hidden_size": "4096"}, "'hidden_size' is '4096'"),
    ({"hidden_size": True}, "'hidden_size' is True"),
    ({"vocab_size": 2**40}, "'vocab_size'=1099511627776 is out of range"),
    ({"tie_word_embeddings": "no"}, "'tie_word_embeddings' is 'no'; expected true or false"),
])
def test_impossible_shapes_name_the_field(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config({**LLAMA, **change}, where="c.json")
    text = str(info.value)
    assert words in text and text.startswith("c.json: ") and "\n" not in text


@pytest.mark.parametrize(("text", "count"), [
    ("7B", 7 * 10**9), ("13b", 13 * 10**9), ("1.5T", 15 * 10**11), ("350M", 350 * 10**6),
    (" 125 k ", 125_000), ("1000T", 10**15),
])
def test_parse_count(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["9" * 400 + "B", "1e400B", "0B", "1001T", "-5B", "abc", "B",
                                  "1.2.3B", "inf B", "nanB", "9" * 5000])
def test_parse_count_refuses_without_overflow(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_count(text)
    assert len(str(info.value)) < 300

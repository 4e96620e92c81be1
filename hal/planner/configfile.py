"""Reading a model's config.json safely, and refusing configs no model can have.

``hal plan PATH`` reads whatever path it is given: ``/dev/zero``, a FIFO or a gigabyte file
must end at once with one line, and 100k nested brackets must not reach json's recursion.
:func:`read_json_file` opens regular files only (checked before and after opening, non-blocking),
caps the size, and bounds the nesting before parsing.  :func:`check_config` refuses impossible
shapes (negative or zero counts, KV heads that do not divide the heads, top-k above the experts)
with one line naming the field; every number goes through :mod:`hal.parse`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

from hal.errors import ConfigError
from hal.parse import parse_float, parse_int

#: A config.json is kilobytes; DeepSeek-V3's is 1.7 KB.  Anything above this is not one.
MAX_CONFIG_BYTES = 4 * 2**20
#: Nesting of arrays and objects allowed before json's recursion is reached.
MAX_DEPTH = 64
#: Largest parameter count :func:`parse_count` accepts (1000T).
MAX_PARAMS = 10**15

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")


def _size_text(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _kind(mode: int) -> str:
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def _check_stat(path: str, st: os.stat_result, what: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path!r} is {_kind(st.st_mode)}, not a regular file; "
                          "expected a JSON file")
    if st.st_size > max_bytes:
        raise ConfigError(f"{what} {path!r} is {_size_text(st.st_size)}; the cap is "
                          f"{_size_text(max_bytes)} (a config.json is kilobytes)")


def _read_bytes(path: str, what: str, max_bytes: int) -> bytes:
    try:
        _check_stat(path, os.stat(path), what, max_bytes)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
            | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL
        raise ConfigError(f"{what} {path!r} cannot be read: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        _check_stat(path, os.fstat(fd), what, max_bytes)  # replaced between stat and open?
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ConfigError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # grew while being read
        raise ConfigError(f"{what} {path!r} is over the cap of {_size_text(max_bytes)} "
                          "(a config.json is kilobytes)")
    return data


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[]``/``{}`` in JSON ``text``, brackets inside strings ignored."""
    brackets = _BRACKETS.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ConfigError(f"the JSON holds {name}, which is not a number; expected finite values")


def _json_int(text: str) -> int | float:
    # Over 30 digits no field is meaningful; avoid int()'s quadratic cost and digit limit.
    if len(text.lstrip("-")) > 30:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def read_json_file(path: str, *, what: str = "config", max_bytes: int = MAX_CONFIG_BYTES,
                   max_depth: int = MAX_DEPTH) -> Any:
    """Parse the JSON file at ``path`` safely (regular file, size cap, nesting cap); ConfigError."""
    data = _read_bytes(path, what, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path!r} is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}); expected a JSON file") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ConfigError(f"{what} {path!r} nests {depth} levels deep; at most {max_depth} "
                          "are accepted")
    try:
        return json.loads(text, parse_int=_json_int, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise ConfigError(f"{what} {path!r}: {exc}") from None
        hint = "; expected a Hugging Face config.json" if what == "config" else ""
        raise ConfigError(f"{what} {path!r} is not JSON ({exc}){hint}") from None


def read_json_config(path: str) -> dict[str, Any]:
    """A model's ``config.json`` (or a folder holding one) as a dict, read safely; ConfigError."""
    try:
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
    except (OSError, ValueError) as exc:  # embedded NUL, too long a name
        raise ConfigError(f"config {path!r} cannot be read: {exc}") from None
    data = read_json_file(path, what="config")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path!r}: expected a JSON object, got {type(data).__name__}")
    return data


# -- semantic checks ---------------------------------------------------------------------

_SIZE = 2**24  # widths: hidden, intermediate, vocabulary (16M)
_COUNT = 2**16  # layers, heads, experts
_POSITIONS = 2**31 - 1
#: Count fields hal's planner reads, with their lowest meaningful value and a bound.
FIELDS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, _SIZE), "num_hidden_layers": (1, _COUNT),
    "num_attention_heads": (1, _COUNT), "num_key_value_heads": (1, _COUNT),
    "head_dim": (1, _SIZE), "vocab_size": (1, _SIZE), "intermediate_size": (1, _SIZE),
    "moe_intermediate_size": (1, _SIZE), "shared_expert_intermediate_size": (0, _SIZE),
    "max_position_embeddings": (1, _POSITIONS), "sliding_window": (0, _POSITIONS),
    "max_window_layers": (0, _COUNT), "num_experts_per_tok": (1, _COUNT),
    "n_routed_experts": (0, _COUNT), "num_local_experts": (0, _COUNT), "num_experts": (0, _COUNT),
    "n_shared_experts": (0, _COUNT), "first_k_dense_replace": (0, _COUNT),
    "kv_lora_rank": (1, _SIZE), "q_lora_rank": (0, _SIZE), "qk_rope_head_dim": (1, _SIZE),
    "qk_nope_head_dim": (1, _SIZE), "v_head_dim": (1, _SIZE),
    # GPT-2 names
    "n_embd": (1, _SIZE), "n_layer": (1, _COUNT), "n_head": (1, _COUNT), "n_inner": (1, _SIZE),
    "n_positions": (1, _POSITIONS),
    # Falcon names (hal.planner.families.ALIASES)
    "ffn_hidden_size": (1, _SIZE), "num_kv_heads": (1, _COUNT),
}
_FLAGS = ("tie_word_embeddings", "attention_bias", "use_sliding_window")


def _field(cfg: Mapping[str, Any], key: str, where: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    lo, hi = FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, int):  # 1e400 was read as inf
        shown = type(value).__name__ if isinstance(value, (list, dict)) else repr(value)[:40]
        raise ConfigError(f"{where}: field {key!r} is {shown}; expected a whole number {lo}..{hi}")
    return parse_int(f"{where}: field {key!r}", value, lo=lo, hi=hi)


def check_config(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Refuse a config no model can have; one-line ConfigError naming the field.

    Counts are whole, positive and bounded; KV heads divide the attention heads; without
    ``head_dim`` the heads divide the hidden size; top-k is at most the experts.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    text_cfg = cfg.get("text_config")
    if isinstance(text_cfg, Mapping) and "hidden_size" not in cfg:
        cfg, where = text_cfg, f"{where} (text_config)"
    from hal.planner.families import canonical

    cfg = canonical(cfg)
    v = {key: _field(cfg, key, where) for key in FIELDS}
    for key in _FLAGS:
        if cfg.get(key) is not None and not isinstance(cfg.get(key), bool):
            raise ConfigError(f"{where}: field {key!r} is {cfg.get(key)!r}; expected true or false")
    mla = v["kv_lora_rank"] is not None
    for hidden_key, heads_key, kv_key in (("hidden_size", "num_attention_heads", "num_key_value_heads"),
                                          ("n_embd", "n_head", None)):
        hidden, heads = v[hidden_key], v[heads_key]
        kv = v[kv_key] if kv_key else None
        if heads is not None and kv is not None and not mla and heads % kv:
            raise ConfigError(f"{where}: field 'num_key_value_heads' is {kv}, which does not divide "
                              f"num_attention_heads {heads}")
        if hidden is not None and heads is not None and v["head_dim"] is None and not mla \
                and hidden % heads:
            raise ConfigError(f"{where}: field {heads_key!r} is {heads}, which does not divide "
                              f"{hidden_key} {hidden} (and no head_dim is given)")
    experts = max(v[k] or 0 for k in ("n_routed_experts", "num_local_experts", "num_experts"))
    top_k = v["num_experts_per_tok"]
    if experts > 1 and top_k is not None and top_k > experts:
        raise ConfigError(f"{where}: field 'num_experts_per_tok' is {top_k}, more than the "
                          f"{experts} experts")
    layers = v["num_hidden_layers"]
    dense = v["first_k_dense_replace"]
    if layers is not None and dense is not None and dense > layers:
        raise ConfigError(f"{where}: field 'first_k_dense_replace' is {dense}, more than the "
                          f"{layers} layers")


_COUNT_RE = re.compile(r"\A\s*([0-9][0-9.eE+-]*)\s*([KMBT])\s*\Z", re.IGNORECASE)
_SCALE = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def is_count(text: str) -> bool:
    """Whether ``text`` is shaped like a parameter count (``7B``, ``1.5T``), valid or not."""
    return len(text) <= 1000 and _COUNT_RE.match(text) is not None


def parse_count(text: str, *, hint: str = "") -> int:
    """``"13B"`` -> 13_000_000_000 (K, M, B, T, decimals); bounded, one-line ConfigError otherwise."""
    shown = text.strip() if len(text.strip()) <= 40 else text.strip()[:37] + "..."
    m = _COUNT_RE.match(text) if len(text) <= 1000 else None
    accepted = f"expected e.g. '13B', '350M', '1.5B'{hint}"
    if m is None:
        raise ConfigError(f"model {shown!r} is not a parameter count; {accepted}")
    unit = m.group(2).upper()
    limit = MAX_PARAMS / _SCALE[unit]
    try:
        number = parse_float("model", m.group(1), lo=0.0, hi=limit, lo_inclusive=False)
    except ConfigError:
        raise ConfigError(f"model {shown!r} is not a parameter count hal can plan; expected a "
                          f"positive count up to 1000T, e.g. '13B'{hint}") from None
    count = round(number * _SCALE[unit])
    if count < 1:
        raise ConfigError(f"model {shown!r}: a parameter count must be at least 1")
    return count

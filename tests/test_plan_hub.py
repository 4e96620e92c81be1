"""Hugging Face ids in ``hal plan``: read offline from a real Hub cache layout the test builds."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hal.planner import preset
from hal.planner.models import PRESETS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("huggingface_hub") is None,
                                reason="needs huggingface_hub (installed with transformers)")

REPO = "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"


def _cache(root: Path, repo: str, config: dict[str, object]) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<hash>/}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return root


def _plan(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(cache.parent / "hf-home")}
    return subprocess.run([sys.executable, "-m", "hal", "plan", *args, "--no-local", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_a_hub_id_resolves_from_the_local_cache_offline(tmp_path: Path) -> None:
    cfg = dict(PRESETS["deepseek-r1-distill-qwen-14b"][0])
    cache = _cache(tmp_path / "hub", REPO, cfg)
    out = _plan(cache, REPO, "--dtype", "int4", "--context", "32768")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"]["params_total"] == preset("deepseek-r1-distill-qwen-14b").params_total
    assert data["model"]["name"] == "DeepSeek-R1-Distill-Qwen-14B"
    assert "Hub cache" in data["model"]["source"]


def test_offline_with_nothing_cached_says_how_to_get_the_config(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    out = _plan(tmp_path / "hub", "meta-llama/Llama-2-7b-hf")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "HF_HUB_OFFLINE" in lines[0] and "hf download meta-llama/Llama-2-7b-hf config.json" \
        in lines[0]


def test_a_cached_config_with_an_impossible_shape_is_refused(tmp_path: Path) -> None:
    cfg = dict(PRESETS["deepseek-r1-distill-qwen-14b"][0])
    cfg["num_key_value_heads"] = 7  # does not divide 40 heads
    cache = _cache(tmp_path / "hub", REPO, cfg)
    out = _plan(cache, REPO)
    assert out.returncode == 2 and "num_key_value_heads" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


@pytest.mark.parametrize("repo", [REPO, "meta-llama/Llama-2-7b-hf"])
def test_an_unreachable_hub_is_said_in_one_line_and_a_same_named_preset_stands_in(
        tmp_path: Path, repo: str) -> None:
    # Issue 20: offline without HF_HUB_OFFLINE took 24 s, printed 11 lines of retries, then
    # claimed the model "has no config.json on the Hub".
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY",
                                                           "https_proxy", "ALL_PROXY", "all_proxy")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_CACHE=str(tmp_path / "hub"),
               HF_HOME=str(tmp_path / "hf-home"))
    out = subprocess.run([sys.executable, "-m", "hal", "plan", repo, "--no-local", "--json"],
                         capture_output=True, text=True, timeout=120, env=env)
    (line,) = out.stderr.strip().splitlines()
    assert "cannot be reached" in line and "no config.json on the Hub" not in line
    if repo == REPO:  # hal has a preset of that name: it stands in, with a warning
        assert out.returncode == 0 and line.startswith("hal: warning: ")
        assert "using hal's built-in preset 'deepseek-r1-distill-qwen-14b'" in line
        data = json.loads(out.stdout)
        assert data["model"]["params_total"] == preset("deepseek-r1-distill-qwen-14b").params_total
    else:
        assert out.returncode == 2 and line.startswith("hal: error: ")
        assert "hf download meta-llama/Llama-2-7b-hf config.json" in line

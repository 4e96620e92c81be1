"""No vendor name in hal's core (hal/ outside hal/testing/), checked token by token."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENDOR_WORDS = ("cuda", "hip", "rocm", "npu", "ascend", "xpu", "nccl", "hccl",
                "nvidia", "amd", "intel", "huawei")
_CHECKED = (tokenize.NAME, tokenize.STRING, tokenize.COMMENT)
if hasattr(tokenize, "FSTRING_MIDDLE"):  # Python 3.12+: f-string text is its own token
    _CHECKED = (*_CHECKED, tokenize.FSTRING_MIDDLE)


def word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole-word-ish, case-insensitive: ``cuda``, ``torch.cuda``, ``CUDA_VISIBLE``, ``is_cuda``
    match; ``chip``, ``amdahl`` or ``intelligent`` do not (letters or digits around the word)."""
    return re.compile(r"(?<![a-z0-9])(" + "|".join(words) + r")(?![a-z0-9])", re.IGNORECASE)


def find_names(source: str, words: tuple[str, ...] = VENDOR_WORDS) -> list[tuple[int, str, str]]:
    """(line, word, token text) for every vendor word in a NAME, STRING or COMMENT token."""
    pattern = word_pattern(words)
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _CHECKED:
            hits.extend((tok.start[0], m.group(1).lower(), tok.string)
                        for m in pattern.finditer(tok.string))
    return hits


#: The one package in hal/ that names torch's CUDA API (the opt-in cuda-compat mode); it may name
#: that API's words and no other vendor's.
TORCH_CUDA_API_PACKAGE = ROOT / "hal" / "cuda_compat"
TORCH_CUDA_API_WORDS = ("cuda", "nccl")
#: The mode's own name (``--cuda-compat``, ``hal.cuda_compat``, ``HAL_CUDA_COMPAT``) may appear in
#: any module that offers or starts the mode; it names hal's feature, not a vendor's API.
MODE_NAME = re.compile(r"cuda[-_]compat", re.IGNORECASE)


def core_files() -> list[Path]:
    return sorted(p for p in (ROOT / "hal").rglob("*.py") if "testing" not in p.parts)


def allowed_words(path: Path) -> tuple[str, ...]:
    """The vendor words ``path`` must not contain."""
    if TORCH_CUDA_API_PACKAGE in path.parents:
        return tuple(w for w in VENDOR_WORDS if w not in TORCH_CUDA_API_WORDS)
    return VENDOR_WORDS


def core_problems(path: Path) -> list[tuple[int, str, str]]:
    """Vendor words in one core file, the mode's name left out."""
    source = MODE_NAME.sub("MODE", path.read_text(encoding="utf-8"))
    return find_names(source, allowed_words(path))


def test_checker_catches_planted_violations() -> None:
    sample = (
        "import torch\n"
        "x = torch.cuda.is_available()  # ask the NPU too\n"
        "name = 'HIP_VISIBLE_DEVICES'\n"
        "def use_xpu(): return 'nccl'\n"
        "msg = f'running on {dev} with hccl'\n"
    )
    words = {w for _, w, _ in find_names(sample)}
    assert words == {"cuda", "npu", "hip", "xpu", "nccl", "hccl"}
    assert find_names("chip = 'amdahl intelligent ship'\nroc = 1\n") == []
    assert find_names("ok = 1  # an Intel CPU\n")[0][1] == "intel"


def test_core_has_no_vendor_names() -> None:
    files = core_files()
    assert len(files) > 10, files
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {word!r} in {text[:60]!r}"
        for path in files
        for line, word, text in core_problems(path)
    ]
    assert not problems, "vendor names in hal/ (move them to backends/):\n" + "\n".join(problems)


@pytest.mark.parametrize("word", VENDOR_WORDS)
def test_each_word_is_detected(word: str) -> None:
    assert [w for _, w, _ in find_names(f"x = '{word.upper()}_THING'\n")] == [word]


def test_the_cuda_compat_package_names_torchs_cuda_api_and_no_other_vendor(tmp_path: Path) -> None:
    package = sorted(TORCH_CUDA_API_PACKAGE.glob("*.py"))
    assert package, "hal/cuda_compat/ is the allow-listed package"
    assert any(w == "cuda" for p in package
               for _, w, _ in find_names(p.read_text(encoding="utf-8"))), "it maps torch.cuda"
    planted = TORCH_CUDA_API_PACKAGE / "planted.py"  # checked by path only, never written
    assert allowed_words(planted) == ("hip", "rocm", "npu", "ascend", "xpu", "hccl", "nvidia",
                                      "amd", "intel", "huawei")
    other = ROOT / "hal" / "commands" / "run.py"
    assert "cuda" in allowed_words(other)
    sample = tmp_path / "x.py"
    sample.write_text("flag = '--cuda-compat'  # hal.cuda_compat, HAL_CUDA_COMPAT\nx = 'cuda:0'\n")
    assert [w for _, w, _ in core_problems(sample)] == ["cuda"]

"""A byte-level tokenizer for the embedded default model: every UTF-8 byte is a token."""

from __future__ import annotations

from collections.abc import Sequence


class ByteTokenizer:
    """Bytes 0..255 are tokens 0..255; then pad, begin-of-sequence and end-of-sequence."""

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        """BOS followed by the UTF-8 bytes of ``text``."""
        return [self.bos_id, *text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the byte tokens in ``ids``; special tokens are dropped."""
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """Adapter over a Hugging Face tokenizer (used when a model directory ships one)."""

    def __init__(self, tok: object) -> None:
        self.tok = tok
        bos = getattr(tok, "bos_token_id", None)
        eos = getattr(tok, "eos_token_id", None)
        pad = getattr(tok, "pad_token_id", None)
        self.bos_id = bos
        self.eos_id = eos if eos is not None else -1
        self.pad_id = pad if pad is not None else (eos if eos is not None else 0)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with the tokenizer's own special tokens."""
        ids: list[int] = self.tok.encode(text)  # type: ignore[attr-defined]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""
        text: str = self.tok.decode(list(ids), skip_special_tokens=True)  # type: ignore[attr-defined]
        return text

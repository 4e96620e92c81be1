"""Terminal output every command shares: encoding fallbacks, one-line messages, the rich console.

The CLI calls :func:`setup_streams` once, so no command can die on the terminal's encoding (an
ISO-8859-1 locale, ``PYTHONIOENCODING=ascii``); :func:`one_line` escapes and bounds anything
echoed in a message; :func:`console` is rich with a closed pipe ending the way every command ends.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import sys
from typing import Any

#: Longest message line hal prints; longer ones keep the start and say how much was cut.
MAX_LINE = 400
#: What a character the terminal's encoding lacks becomes (bars, sparks, ellipsis, dashes).
ASCII_FALLBACK = {
    "█": "#", "░": ".", "▁": "_", "▂": "_", "▃": "-", "▄": "-", "▅": "=", "▆": "=", "▇": "#",
    "…": "...", "—": "-", "–": "-", "→": "->", "←": "<-", "≈": "~", "×": "x", "±": "+-",
    "≤": "<=", "≥": ">=", "°": " deg", "µ": "u", "‘": "'", "’": "'", "“": '"', "”": '"',
    "•": "*", "✓": "ok", "✗": "x",
}
ERRORS = "hal-ascii"


def _fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start:exc.end]
    return "".join(ASCII_FALLBACK.get(ch, "?") for ch in text), exc.end


codecs.register_error(ERRORS, _fallback)


def _is_utf(encoding: str | None) -> bool:
    return (encoding or "").lower().replace("-", "").replace("_", "").startswith("utf")


def setup_streams() -> None:
    """Make stdout and stderr write what their encoding lacks as ASCII look-alikes, not raise."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None or _is_utf(getattr(stream, "encoding", None)):
            continue
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a stream a lower layer owns: leave it
                reconfigure(errors=ERRORS)


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` as one printable line of at most about ``limit`` characters.

    Control characters (newlines, escape sequences) are written as escapes, so a value from the
    user or the environment can neither split a message nor drive the terminal.
    """
    s = str(text)
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    line = "".join(out)
    if len(line) > limit:
        cut = len(line) - limit
        line = f"{line[:limit]}... ({cut} more characters)"
    return line


def console(**kwargs: Any) -> Any:
    """A rich Console whose closed pipe raises BrokenPipeError (exit 141 in the CLI), not exit 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    return _Console(**kwargs)


def install_hint(extra: str) -> str:
    """The command that installs hal's optional ``extra`` from where this hal is, quoted for any shell.

    From a source checkout that is ``pip install -e '<checkout>[extra]'``; from an installed
    distribution, the extra's own requirements (the distribution need not be on a registry).
    """
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "hal" / "cli.py").is_file():
        here = Path.cwd().resolve()
        where = "." if here == root else str(root)
        return f"pip install -e {shlex.quote(f'{where}[{extra}]')}"
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = [r.split(";")[0].strip() for r in requires("torch-hal") or ()
                if f'extra == "{extra}"' in r.replace("'", '"')]
    except PackageNotFoundError:
        reqs = []
    return "pip install " + " ".join(shlex.quote(r) for r in reqs or [f"torch-hal[{extra}]"])

"""torch/gloo failures turned into one-line DistributedErrors that name the rank and the cause.

A peer that crashed, stalled or never arrived, and ranks that disagree about a collective
(found by torch's own fingerprint check under ``TORCH_DISTRIBUTED_DEBUG=DETAIL``), become
``DistributedError``; anything else (a user's own mistake) passes through unchanged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NoReturn

from hal.errors import DistributedError, HalError

if TYPE_CHECKING:
    from hal.distributed.state import World

_GLOO_PREFIX_RE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*")
_GLOO_ADVICE_RE = re.compile(r"\.? This is typically caused by .*$")
_PEER_MARKERS = ("Timed out", "timed out", "Connection reset", "Connection closed",
                 "closed by peer", "Broken pipe", "Connection refused")
#: What torch's ProcessGroupWrapper (TORCH_DISTRIBUTED_DEBUG=DETAIL) says when ranks disagree.
_MISMATCH_MARKER = "Detected mismatch between collectives on ranks"
_FINGERPRINT_RE = re.compile(
    r"Rank (\d+) is running collective: CollectiveFingerPrint\(([^)]*)\)")
_FIELD_RE = re.compile(r"(\w+)=((?:\[[^\]]*\](?:, )?)+|[^,]*)")


def first_line(exc: BaseException) -> str:
    """The first line of a torch/gloo error without source locations or boilerplate advice."""
    lines = str(exc).strip().splitlines()
    line = _GLOO_PREFIX_RE.sub("", lines[0] if lines else type(exc).__name__)
    return _GLOO_ADVICE_RE.sub("", line)


def describe_peer_failure(exc: BaseException) -> str:
    """The cause of a failed collective in words, followed by torch's first line."""
    text = first_line(exc)
    if "Timed out" in text or "timed out" in text:
        return f"a peer rank did not take part in time (stalled, crashed or never called it): {text}"
    if "Connection reset" in text or "Connection closed" in text or "closed by peer" in text:
        return f"a peer rank closed its connection (it crashed or exited): {text}"
    return text


#: torch's names for the calls hal makes, as hal's API names them.
_OP_NAMES = {"allreduce": "all_reduce", "_allgather_base": "all_gather", "allgather": "all_gather",
             "_reduce_scatter_base": "reduce_scatter", "reduce_scatter": "reduce_scatter",
             "broadcast": "broadcast", "barrier": "barrier", "send": "send", "recv": "recv"}


def _fingerprint(body: str) -> str:
    """``OpType=ALLREDUCE, TensorShape=[[4]], TensorDtypes=Float, ...`` in a few words."""
    fields = {k: v.strip().rstrip(",").strip() for k, v in _FIELD_RE.findall(body)}
    op = fields.get("OpType", "?").lower()
    parts = [_OP_NAMES.get(op, op)]
    if "TensorShape" in fields:
        parts.append(f"shape {fields['TensorShape']}")
    if "TensorDtypes" in fields:
        parts.append(fields["TensorDtypes"])
    return " ".join(parts)


def mismatch_error(name: str, exc: BaseException, w: World | None) -> DistributedError | None:
    """torch's collective-fingerprint mismatch as one line naming both ranks' calls, else None."""
    text = str(exc)
    if _MISMATCH_MARKER not in text:
        return None
    calls = [f"rank {r} called {_fingerprint(body)}" for r, body in _FINGERPRINT_RE.findall(text)]
    me = f"rank {w.rank} of {w.world_size}" if w else "this rank"
    detail = "; ".join(dict.fromkeys(calls)) or first_line(exc)
    return DistributedError(f"{name} on {me}: the ranks disagree about this collective "
                            f"({detail}); every rank must call the same collectives in the same "
                            f"order with the same shapes and dtypes")


def peer_error(name: str, exc: RuntimeError, w: World | None) -> RuntimeError:
    """A collective's failure: a DistributedError naming rank and cause if a peer is at fault."""
    if isinstance(exc, HalError):
        return exc
    mismatch = mismatch_error(name, exc, w)
    if mismatch is not None:
        return mismatch
    text = str(exc)
    if not any(m in text for m in _PEER_MARKERS):
        return exc
    me = f"rank {w.rank} of {w.world_size}" if w else "this rank"
    timeout = f" (timeout {w.timeout_s:g} s)" if w else ""
    return DistributedError(f"{name} failed on {me}{timeout}: {describe_peer_failure(exc)}")


def reraise(name: str, exc: RuntimeError, w: World | None) -> NoReturn:
    """Raise ``peer_error(...)`` from ``exc``, or ``exc`` itself when it is the user's own."""
    error = peer_error(name, exc, w)
    if error is exc:
        raise exc
    raise error from exc

"""Hugging Face model ids (``org/name``) to their config.json: the local Hub cache first.

Only ``config.json`` is ever downloaded, and only when the Hub is reachable and allowed
(``HF_HUB_OFFLINE`` unset).  ``huggingface_hub`` is optional (it comes with transformers);
without it, or offline with nothing cached, one line says how to get the config.  An unreachable
Hub (an air-gapped cluster) is found out in seconds, without huggingface_hub's retry noise, and
a built-in preset of the same name stands in for the config (with a warning).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hal.errors import ConfigError

T = TypeVar("T")

#: Seconds to find out whether the Hub's host answers at all (name lookup and TCP connect).
REACH_TIMEOUT = 4.0
#: Seconds the whole config.json download may take, retries included.
FETCH_TIMEOUT = 15.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _how(repo_id: str) -> str:
    return (f"fetch it once online with `hf download {repo_id} config.json` "
            "(or pass the path of a config.json)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _bounded(fn: Callable[[], T], seconds: float) -> T:
    """``fn()`` in a daemon thread for at most ``seconds`` (name lookups cannot be timed out
    otherwise); TimeoutError when it has not answered, its exception when it raised."""
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed to the caller
            box.append((False, exc))

    thread = threading.Thread(target=target, name="hal-hub", daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        raise TimeoutError(f"no answer within {seconds:g} s")
    ok, value = box[0]
    if not ok:
        raise value
    result: T = value
    return result


def _unreachable(endpoint: str) -> str | None:
    """Why the Hub's host cannot be reached (None when it answers, or a proxy is set: the proxy
    decides, and the bounded download finds out)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)

    def connect() -> None:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT):
            pass

    try:
        _bounded(connect, REACH_TIMEOUT + 1)
    except OSError as exc:  # socket.gaierror, ConnectionRefusedError, TimeoutError
        return exc.strerror or _first_line(exc)
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """huggingface_hub's retry warnings and Python warnings silenced for one call."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _preset_instead(repo_id: str, why: str) -> tuple[dict[str, Any], str] | None:
    """hal's built-in preset named like ``repo_id``'s model, with a warning saying why."""
    from hal.planner.models import PRESETS

    key = repo_id.split("/")[-1].lower()
    if key not in PRESETS:
        return None
    cfg, source = PRESETS[key]
    warnings.warn(f"model {repo_id!r}: {why}; using hal's built-in preset {key!r} "
                  f"(from {source})", UserWarning, stacklevel=2)
    return dict(cfg), f"preset {key} ({source}; {why})"


def _fetch(repo_id: str) -> str:
    """Download config.json (short timeouts, no retry noise); its path, or ConfigError."""
    import huggingface_hub
    from huggingface_hub import constants, hf_hub_download

    errors = huggingface_hub.errors
    cache = f"not in the local cache ({constants.HF_HUB_CACHE})"
    why = _unreachable(constants.ENDPOINT)
    if why is not None:
        raise _Unreachable(f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached "
                           f"({why}) and its config.json is {cache}")
    try:
        with _quiet():
            return _bounded(lambda: hf_hub_download(repo_id, "config.json", etag_timeout=5),
                            FETCH_TIMEOUT)
    except TimeoutError:
        raise _Unreachable(f"the Hugging Face Hub ({constants.ENDPOINT}) did not answer "
                           f"within {FETCH_TIMEOUT:g} s and its config.json is {cache}") from None
    except errors.GatedRepoError:
        raise ConfigError(f"model {repo_id!r} is gated on the Hub: accept its licence and log "
                          f"in (`hf auth login`), then retry; or {_how(repo_id)}") from None
    except errors.RepositoryNotFoundError:
        raise ConfigError(f"model {repo_id!r} is not on the Hugging Face Hub (or is private); "
                          "check the id, or pass the path of a config.json") from None
    except errors.LocalEntryNotFoundError as exc:  # before EntryNotFoundError: it subclasses it
        raise _Unreachable(f"the Hugging Face Hub ({constants.ENDPOINT}) could not be reached "
                           f"({_first_line(exc)}) and its config.json is {cache}") from None
    except errors.EntryNotFoundError:
        raise ConfigError(f"model {repo_id!r} has no config.json on the Hub; pass the path of "
                          "a config.json") from None
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as exc:
        raise ConfigError(f"model {repo_id!r}: config.json could not be fetched "
                          f"({_first_line(exc)}); " + _how(repo_id)) from None


class _Unreachable(ConfigError):
    """The Hub could not be asked (no network, no answer): a preset may stand in."""


def hub_config(repo_id: str) -> tuple[dict[str, Any], str]:
    """The config.json of ``repo_id`` as a dict, and where it was read; ConfigError otherwise."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        raise ConfigError(f"model {repo_id!r} looks like a Hugging Face id, and reading it needs "
                          "huggingface_hub (pip install huggingface_hub); or pass the path of "
                          "its config.json") from None
    from hal.planner.configfile import read_json_config

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return read_json_config(cached), f"{repo_id} (Hub cache: {cached})"
    if constants.HF_HUB_OFFLINE:
        why = (f"its config.json is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
               "and HF_HUB_OFFLINE is set")
        instead = _preset_instead(repo_id, why)
        if instead is not None:
            return instead
        raise ConfigError(f"model {repo_id!r}: {why}; " + _how(repo_id))
    try:
        path = _fetch(repo_id)
    except _Unreachable as exc:
        instead = _preset_instead(repo_id, str(exc))
        if instead is not None:
            return instead
        raise ConfigError(f"model {repo_id!r}: {exc}; " + _how(repo_id)) from None
    return read_json_config(path), f"{repo_id} (downloaded: {path})"

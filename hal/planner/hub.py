"""Hugging Face model ids (``org/name``) to their config.json: the local Hub cache first.

Only ``config.json`` is ever downloaded, and only when the Hub is reachable and allowed
(``HF_HUB_OFFLINE`` unset).  ``huggingface_hub`` is optional (it comes with transformers);
without it, or offline with nothing cached, one line says how to get the config.
"""

from __future__ import annotations

from typing import Any

from hal.errors import ConfigError


def _how(repo_id: str) -> str:
    return (f"fetch it once online with `hf download {repo_id} config.json` "
            "(or pass the path of a config.json)")


def hub_config(repo_id: str) -> tuple[dict[str, Any], str]:
    """The config.json of ``repo_id`` as a dict, and where it was read; ConfigError otherwise."""
    try:
        import huggingface_hub
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise ConfigError(f"model {repo_id!r} looks like a Hugging Face id, and reading it needs "
                          "huggingface_hub (pip install huggingface_hub); or pass the path of "
                          "its config.json") from None
    from hal.planner.configfile import read_json_config

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return read_json_config(cached), f"{repo_id} (Hub cache: {cached})"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"model {repo_id!r}: its config.json is not in the Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; "
                          + _how(repo_id))
    errors = huggingface_hub.errors
    try:
        path = hf_hub_download(repo_id, "config.json")
    except errors.GatedRepoError:
        raise ConfigError(f"model {repo_id!r} is gated on the Hub: accept its licence and log "
                          f"in (`hf auth login`), then retry; or {_how(repo_id)}") from None
    except errors.RepositoryNotFoundError:
        raise ConfigError(f"model {repo_id!r} is not on the Hugging Face Hub (or is private); "
                          "check the id, or pass the path of a config.json") from None
    except errors.EntryNotFoundError:
        raise ConfigError(f"model {repo_id!r} has no config.json on the Hub; pass the path of "
                          "a config.json") from None
    except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, errors.HFValidationError,
            OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model {repo_id!r}: config.json could not be fetched ({reason}); "
                          + _how(repo_id)) from None
    return read_json_config(path), f"{repo_id} (downloaded: {path})"

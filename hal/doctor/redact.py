"""Redaction of credentials: nothing that looks like a token, key or password leaves the doctor.

Two layers: variables whose *name* says secret lose their whole value, and every string in the
report is scrubbed of secret-shaped *values* (userinfo in URLs, known token formats, key=value
pairs, long mixed-case base64 runs).  Device ids, paths and versions stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "<redacted>"

#: Words in a variable name that mean its value is a credential.
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW|PASSPHRASE|PWD|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE"
    r"|(^|_)PASS($|_)|(^|_)(API|ACCESS|SECRET|PRIVATE|ENCRYPTION|SIGNING)?_?KEY($|_)|APIKEY)",
    re.IGNORECASE,
)

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s:]*:[^/@\s]*)@")
_URL_USER_ONLY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s:]{16,})@")
_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w.\-]*?(?:token|secret|passw(?:or)?d|pwd|passphrase|api[_\-]?key"
    r"|access[_\-]?key|private[_\-]?key|secret[_\-]?key|auth|authorization|sig|signature"
    r"|credentials?)s?)(?![\w\-])"
    r"(?P<sep>['\"]?\s*[=:]\s*)(?P<quote>['\"]?)(?P<value>[^\s'\"&;,]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(
    r"\b(?P<kind>Bearer|Basic|Token)\s+(?=[A-Za-z._~+/=\-]*\d)(?P<value>[A-Za-z0-9._~+/=\-]{8,})"
)
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL
)
_TOKEN_FORMATS = re.compile(
    r"\b("
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # source-forge personal/app tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r"|hf_[A-Za-z0-9]{20,}"  # model-hub tokens
    r"|sk-[A-Za-z0-9_\-]{20,}"  # API secret keys
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # chat bot tokens
    r"|A(?:KIA|SIA)[0-9A-Z]{16}"  # cloud access key ids
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_\-]{40,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r")"
)
# A long run of base64 characters with upper, lower and digits mixed: random secrets look like
# this; hex hashes, device UUIDs and file paths (single case, or with separators) do not.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9+/=_\-])")


def _random(run: str) -> bool:
    return (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    )


def _looks_random(run: str) -> bool:
    """A path (leading slash) is secret only if one of its segments is long and random; other
    runs if a part between separators is (device UUIDs have short hex parts and stay)."""
    if run.startswith("/"):
        return any(len(seg) >= 24 and _random(seg) for seg in run.split("/"))
    return any(len(part) >= 16 and _random(part) for part in re.split(r"[-_]", run))


def is_secret_name(name: str) -> bool:
    """Does the variable name say its value is a credential (``HAL_API_TOKEN``, ``..._PASSWORD``)?"""
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """Replace every secret-shaped part of ``text`` with ``<redacted>``; the rest stays."""
    if not text:
        return text
    out = _PEM.sub(MASK, text)
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
    out = _URL_USER_ONLY.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
    out = _BEARER.sub(lambda m: f"{m.group('kind')} {MASK}", out)
    out = _KEY_VALUE.sub(
        lambda m: m.group(0) if m.group("value") == MASK or m.group("value").startswith(MASK)
        else f"{m.group('key')}{m.group('sep')}{m.group('quote')}{MASK}",
        out,
    )
    out = _TOKEN_FORMATS.sub(MASK, out)
    out = _OPAQUE.sub(lambda m: MASK if _looks_random(m.group(0)) else m.group(0), out)
    return out


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Redact an environment mapping: secret-named variables wholly, the others by value."""
    return {
        name: (MASK if value and is_secret_name(name) else redact_text(value))
        for name, value in env.items()
    }


def redact_tree(value: Any) -> Any:
    """Redact every string inside a JSON-able structure (dict keys included)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {redact_tree(k) if isinstance(k, str) else k: redact_tree(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value

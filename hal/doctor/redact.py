"""Redaction of credentials: nothing that looks like a token, key or password leaves the doctor.

Three layers: variables whose *name* says secret lose their whole value; the values of every
secret-named variable in the environment are masked wherever they appear (as CI systems do);
and every string in the report is scrubbed of secret-shaped *values* (userinfo in URLs and
``user:pw@host``, password flags and words followed by a value, known token formats, key=value
pairs, long hex and mixed-case base64 runs).  Device ids, paths and versions stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "<redacted>"

#: Words in a variable name that mean its value is a credential.
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW|PASSPHRASE|PWD|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE"
    r"|(^|_)PASS($|_)|(^|_)PW($|_)|(^|_)(API|ACCESS|SECRET|PRIVATE|ENCRYPTION|SIGNING)?_?KEY($|_)"
    r"|APIKEY|(^|_)CREDS?($|_))",
    re.IGNORECASE,
)

_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s:]*:[^/@\s]*)@")
_URL_USER_ONLY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s:]+)@")
# ``admin:pw@10.0.0.1`` without a scheme: the part between the colon and the @ is a password.
_USER_PW_HOST = re.compile(r"(?P<user>(?<![\w.+\-/])[\w.+\-]+):(?P<pw>[^\s@/:'\"]+)@(?=[\w.\-\[])")
# ``--password hunter2``, ``--wandb-key X``, ``-p=X``-like flags naming a secret, then a value.
_SECRET_FLAG = re.compile(
    r"(?P<flag>(?<![\w\-])--?[\w\-]*?(?:password|passwd|passphrase|pw|pass|secret|token|key|apikey"
    r"|credentials?|auth)s?)(?P<sep>\s+|=)(?P<quote>['\"]?)(?P<value>(?!-)[^\s'\"]+)",
    re.IGNORECASE,
)
# ``password hunter2`` / ``pw: x`` (netrc, config dumps, prose): the word, then one value.
_SECRET_WORD = re.compile(
    r"(?P<word>\b(?:password|passwd|passphrase|pw)\b)(?P<sep>\s*[:=]?\s+|\s*[:=]\s*)"
    r"(?P<quote>['\"]?)(?P<value>[^\s'\"]+)",
    re.IGNORECASE,
)
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
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


#: Names the pattern would catch that are not credentials (the shell's working directories).
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})


def is_secret_name(name: str) -> bool:
    """Does the variable name say its value is a credential (``HAL_API_TOKEN``, ``..._PASSWORD``)?"""
    return name.upper() not in _NOT_SECRET_NAMES and bool(_SECRET_NAME.search(name))


def _masked(m: re.Match[str], head: str) -> str:
    value = m.group("value")
    if value.startswith(MASK):
        return m.group(0)
    return f"{m.group(head)}{m.group('sep')}{m.group('quote')}{MASK}"


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace every secret-shaped part of ``text`` with ``<redacted>``; the rest stays.

    ``secrets``: values to mask wherever they appear (see ``secret_values``), longest first.
    """
    if not text:
        return text
    out = text
    for value in secrets:
        if value in out:
            out = out.replace(value, MASK)
    out = _PEM.sub(MASK, out)
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
    out = _URL_USER_ONLY.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
    out = _USER_PW_HOST.sub(lambda m: f"{m.group('user')}:{MASK}@", out)
    out = _BEARER.sub(lambda m: f"{m.group('kind')} {MASK}", out)
    out = _SECRET_FLAG.sub(lambda m: _masked(m, "flag"), out)
    out = _KEY_VALUE.sub(lambda m: _masked(m, "key"), out)
    out = _SECRET_WORD.sub(lambda m: _masked(m, "word"), out)
    out = _TOKEN_FORMATS.sub(MASK, out)
    out = _HEX.sub(MASK, out)
    out = _OPAQUE.sub(lambda m: MASK if _looks_random(m.group(0)) else m.group(0), out)
    return out


#: Secret values shorter than this are not masked by value (they would mask ordinary words).
MIN_SECRET_VALUE = 5
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The values of every secret-named variable in ``environ``, longest first, to be masked
    wherever they appear; too short or switch-like values are left out."""
    values = {v.strip() for k, v in environ.items() if is_secret_name(k)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_VALUE
                   and v.lower() not in _NOT_SECRET_VALUES and not v.isdigit()),
                  key=len, reverse=True)


def redact_env(env: Mapping[str, str], secrets: Sequence[str] = ()) -> dict[str, str]:
    """Redact an environment mapping: secret-named variables wholly, the others by value."""
    return {
        name: (MASK if value and is_secret_name(name) else redact_text(value, secrets))
        for name, value in env.items()
    }


#: Keys whose value is a source-control commit id: a hex hash there is not a secret.
_COMMIT_KEYS = frozenset({"git_version"})
_COMMIT_RE = re.compile(r"\A[0-9a-f]{40}\Z")


def redact_tree(value: Any, secrets: Sequence[str] = ()) -> Any:
    """Redact every string inside a JSON-able structure (dict keys included)."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = redact_text(k, secrets) if isinstance(k, str) else k
            if k in _COMMIT_KEYS and isinstance(v, str) and _COMMIT_RE.match(v) \
                    and not any(s in v for s in secrets):
                out[key] = v
            else:
                out[key] = redact_tree(v, secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, secrets) for v in value]
    return value

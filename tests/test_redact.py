"""Redaction: no credential from the corpus survives; device ids, paths and versions do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.doctor.redact import MASK, is_secret_name, redact_env, redact_text, redact_tree, secret_values

# (text that carries a secret, the secret part that must vanish)
CORPUS: list[tuple[str, str]] = [
    ("https://alice:hunter2horse@pypi.example.com/simple", "hunter2horse"),
    ("mysql://root:pa55w0rd@db.internal:3306/app", "pa55w0rd"),
    ("git+https://x-access-token:tok3nValue99@example.org/o/r.git", "tok3nValue99"),
    ("https://0123456789abcdef0123456789abcdef@sentry.example.com/42",
     "0123456789abcdef0123456789abcdef"),
    ("ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("glpat-AbCdEfGhIjKlMnOpQrStUv", "glpat-AbCdEfGhIjKlMnOpQrStUv"),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("sk-proj-Abc123Def456Ghi789Jkl012Mno345", "sk-proj-Abc123Def456Ghi789Jkl012Mno345"),
    ("xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("Authorization: Bearer abc123def456ghi789", "abc123def456ghi789"),
    ("password=s3cr3t!x", "s3cr3t!x"),
    ("db_password: 'Tr0ub4dor&3'", "Tr0ub4dor"),
    ('{"api_key": "k3y-v4lue-1234"}', "k3y-v4lue-1234"),
    ("https://h.example.com/x?token=qwe123rty&x=1", "qwe123rty"),
    ("--secret=Zx9Yw8Vu7", "Zx9Yw8Vu7"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
     "MIIEowIBAAKCAQEA7"),
    ("pypi-AgEIcHlwaS5vcmcCJGE0ZjM5YzQ1LTk5OGYtNDYzOC1hZWI0LTE0ZGI3YjA0",
     "pypi-AgEIcHlwaS5vcmcCJGE0ZjM5YzQ1LTk5OGYtNDYzOC1hZWI0LTE0ZGI3YjA0"),
    ("Q2xhdWRlU2VjcmV0S2V5MTIzNDU2Nzg5MGFiY2RlZg==", "Q2xhdWRlU2VjcmV0S2V5MTIzNDU2Nzg5MGFiY2RlZg"),
    # issue 12: values in harmless-looking places
    ("train.py --password hunter2 --lr 3e-4", "hunter2"),
    ("train.py --wandb-key 0123456789abcdef0123456789abcdef01234567 --epochs 3",
     "0123456789abcdef0123456789abcdef01234567"),
    ("--db-pass=letmein99", "letmein99"),
    ("machine api.example.com login bob password s3cretNetrc", "s3cretNetrc"),
    ("the pw opensesame7 was used", "opensesame7"),
    ("https://tok9user@git.example.com/org/repo.git", "tok9user"),
    ("admin:pw4admin@10.0.0.1", "pw4admin"),
    ("tcp://root:r00tpw@[fe80::1]:29500", "r00tpw"),
    ("commit deadbeefdeadbeefdeadbeefdeadbeef0123 failed", "deadbeefdeadbeefdeadbeefdeadbeef0123"),
    ("xoxp-1234567890-abcdefghij", "xoxp-1234567890-abcdefghij"),
    ("key ASIAIOSFODNN7EXAMPLE here", "ASIAIOSFODNN7EXAMPLE"),
]

# Values that look technical but are not secrets: they must come through unchanged.
KEEP = [
    "GPU-5e6f6d1c-3a5b-4b7a-9c1e-2f3a4b5c6d7e",
    "0,1,2,3",
    "/usr/local/lib:/opt/vendor/lib64:/work/venv/lib/python3.11/site-packages/torch/lib",
    "expandable_segments:True,max_split_size_mb:128",
    "2.13.0+cpu",
    "ghp_short",
    "MASTER_ADDR=10.0.0.1",
    "git@github.com:org/repo.git",
    "probe did not answer within 10 s",
    "level_zero:0",
    "https://download.pytorch.org/whl/cpu",
    "Basic information about the device",
    "signal=9",
    "token_type=bearer",
    "the host CPU is always available",
]

#: Environment variables (allowlisted prefixes) whose values must never be printed.
SECRET_ENV = {
    "HAL_API_TOKEN": "plainvalue-no-shape-1",
    "TORCH_HUB_PASSWORD": "correcthorsebattery",
    "HAL_SECRET_KEY": "abc",
    "PYTORCH_DOWNLOAD_URL": "https://bob:sw0rdf1sh@mirror.example.com/whl",
    "HAL_NOTE": "see ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 for access",
    "TORCH_EXTRA": "Authorization: Bearer zzz999yyy888xxx777",
}
SECRET_VALUES = ["plainvalue-no-shape-1", "correcthorsebattery", "sw0rdf1sh",
                 "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "zzz999yyy888xxx777"]


@pytest.mark.parametrize(("text", "secret"), CORPUS)
def test_secret_is_redacted(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert MASK in out


@pytest.mark.parametrize("text", KEEP)
def test_non_secret_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_a_commit_id_under_git_version_is_kept_elsewhere_masked() -> None:
    sha = "cf30153c4c131c8164ee7798e5022d810682e2cb"
    out = redact_tree({"version_attributes": {"git_version": sha}, "note": f"key {sha}"})
    assert out["version_attributes"]["git_version"] == sha
    assert sha not in out["note"]


def test_values_of_secret_named_variables_are_masked_anywhere() -> None:
    env = {"MY_DB_PW": "plain-looking-value", "HF_TOKEN": "abc", "TOKENIZERS_PARALLELISM": "false",
           "HAL_DEVICE": "cpu"}
    secrets = secret_values(env)
    assert secrets == ["plain-looking-value"]  # too short or switch-like values are not masked
    out = redact_tree({"reason": "connect failed for plain-looking-value at host"}, secrets)
    assert out == {"reason": f"connect failed for {MASK} at host"}


def test_url_keeps_host_and_path() -> None:
    out = redact_text("https://alice:hunter2horse@pypi.example.com/simple")
    assert out == f"https://{MASK}@pypi.example.com/simple"


@pytest.mark.parametrize("name", ["HAL_API_TOKEN", "TORCH_HUB_PASSWORD", "HAL_SECRET_KEY",
                                  "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "HAL_API_KEY",
                                  "MY_PASS", "HAL_CREDENTIALS", "DB_PW", "MY_CREDS"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["CUDA_VISIBLE_DEVICES", "HAL_DEVICE", "LD_LIBRARY_PATH",
                                  "NCCL_IB_PKEY", "TORCH_HOME", "PYTORCH_CUDA_ALLOC_CONF",
                                  "HAL_PRECISION", "KEYBOARD"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_env_redaction_by_name_and_by_value() -> None:
    out = redact_env({**SECRET_ENV, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert out["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert out["HAL_API_TOKEN"] == MASK
    assert out["PYTORCH_DOWNLOAD_URL"] == f"https://{MASK}@mirror.example.com/whl"
    blob = repr(out)
    for secret in SECRET_VALUES:
        assert secret not in blob


def test_tree_redaction_reaches_nested_strings_and_keys() -> None:
    tree = {"a": [{"b": "password=hunter22"}], "https://u:p4ssw0rd@h/x": 1, "n": 3}
    out = redact_tree(tree)
    assert "hunter22" not in repr(out) and "p4ssw0rd" not in repr(out)
    assert out["n"] == 3


@given(prefix=st.text(max_size=30), suffix=st.text(max_size=30),
       pair=st.sampled_from(CORPUS))
def test_secret_vanishes_in_any_context(prefix: str, suffix: str,
                                        pair: tuple[str, str]) -> None:
    text, secret = pair
    out = redact_text(f"{prefix} {text} {suffix}")
    assert secret not in out


@given(st.text(max_size=80))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once

"""Secrets in a stack file: every key the program reads as a secret must be a `secure:` value.

A value written in clear is in git history and every clone the moment it is committed, so it is
refused naming the key and the command that stores it encrypted. model/load.py runs this on each
config file it reads; components/config.py reads the same keys as Pulumi secrets.
"""

from __future__ import annotations

from typing import Any

from .errors import Problem

PROJECT = "hypha-infra"
# Keys of this project read with require_secret (components/config.py reads this list) and the
# providers' own secret keys.
PROJECT_SECRET_KEYS = (
    "deployPrivateKey",
    "alertSmtpPassword",
    "alertMatrixWebhookUrl",
    "pveExporterToken",
    "monitoringUiPasswordHashes",
)
PROVIDER_SECRET_KEYS = ("proxmoxve:apiToken", "proxmoxve:password")


def _full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


SECRET_KEYS = frozenset({f"{PROJECT}:{k}" for k in PROJECT_SECRET_KEYS} | set(PROVIDER_SECRET_KEYS))


def clear_text_secrets(config: Any, file_name: str) -> list[Problem]:
    """A problem for each secret key of `config` (a file's `config:` map) whose value is not `secure:`."""
    if not isinstance(config, dict):
        return []
    out = []
    for key, value in config.items():
        if not isinstance(key, str) or _full_key(key) not in SECRET_KEYS:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        out.append(
            Problem(
                _full_key(key),
                f"is a secret but {file_name} holds it in clear; it is exposed to everyone with the repository, "
                f"so rotate it, delete this entry, and store the new one encrypted with "
                f"`pulumi config set --secret {key} <value>`",
            )
        )
    return out


def clear_text_secrets_from_engine(keys, is_secret) -> list[Problem]:
    """The same check for the program under the engine: `keys` as `pulumi.Config` holds them
    (`project:key`), `is_secret` pulumi.runtime.config.is_config_secret. For components/config.py.

    The engine hands the program its config and the list of secret keys as PULUMI_CONFIG and
    PULUMI_CONFIG_SECRET_KEYS; the Python language host's pulumi-language-python-exec (pulumi/pulumi
    sdk/python/cmd/pulumi-language-python-exec, main) passes both to set_all_config, which is what
    is_config_secret reads.
    """
    return [
        Problem(key, f"is a secret but the engine received it in clear; store it with `pulumi config set --secret {key} <value>` "
                "(and rotate it: a clear value sits in the stack file and its history)")
        for key in sorted(keys)
        if key in SECRET_KEYS and not is_secret(key)
    ]

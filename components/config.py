"""Reads the stack model and the secrets from `pulumi.Config`; the only place the program reads config."""

from __future__ import annotations

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

from spec.errors import ConfigError
from spec.secrets import clear_text_secrets_from_engine
from spec.load import PROJECT, build_stack
from spec.model import Stack

# Project keys that are secrets: read as Pulumi secret Outputs below, never part of the model.
SECRET_KEYS = (
    "deployPrivateKey",
    # Monitoring (components/monitoring.py): SMTP login, Matrix webhook URL, pve-exporter token, UI logins.
    "alertSmtpPassword", "alertMatrixWebhookUrl", "pveExporterToken", "monitoringUiPasswordHashes",
)


def _project_keys() -> set[str]:
    """Every `hypha-infra:*` key the engine handed us, so a misspelt section is an error, not ignored."""
    keys = set(CONFIG.get()) | set(get_config_env())
    return {k.split(":", 1)[1] for k in keys if k.startswith(f"{PROJECT}:")} - set(SECRET_KEYS)


def stack_from_config() -> Stack:
    """The validated model of the current stack. Raises ConfigError before any resource exists."""
    if leaked := clear_text_secrets_from_engine(set(CONFIG.get()) | set(get_config_env()), is_config_secret):
        raise ConfigError(pulumi.get_stack(), leaked)
    cfg = pulumi.Config(PROJECT)
    raw = {key: cfg.get_object(key) for key in sorted(_project_keys())}
    return build_stack({k: v for k, v in raw.items() if v is not None}, pulumi.get_stack())


def deploy_private_key() -> pulumi.Output[str]:
    """The deploy key's private half: a Pulumi secret, never part of the model."""
    return pulumi.Config(PROJECT).require_secret("deployPrivateKey")


def proxmox_api_token() -> pulumi.Output[str]:
    return pulumi.Config("proxmoxve").require_secret("apiToken")

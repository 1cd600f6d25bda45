"""Reads the stack model and the secrets from `pulumi.Config`; the only place the program reads config."""

from __future__ import annotations

import pulumi

from spec.load import KNOWN_SECTIONS, PROJECT, build_stack
from spec.model import Stack


def stack_from_config() -> Stack:
    """The validated model of the current stack. Raises ConfigError before any resource exists."""
    cfg = pulumi.Config(PROJECT)
    raw = {}
    for key in KNOWN_SECTIONS:
        value = cfg.get_object(key)
        if value is not None:
            raw[key] = value
    return build_stack(raw, pulumi.get_stack())


def deploy_private_key() -> pulumi.Output[str]:
    """The deploy key's private half: a Pulumi secret, never part of the model."""
    return pulumi.Config(PROJECT).require_secret("deployPrivateKey")


def proxmox_api_token() -> pulumi.Output[str]:
    return pulumi.Config("proxmoxve").require_secret("apiToken")

"""Reads the stack model and the secrets from `pulumi.Config`; the only place the program reads config."""

from __future__ import annotations

import json

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

from model.errors import ConfigError
from model.load import PROJECT, ROOT, build_stack, namespace_problem, spelling_problems
from model.secrets import PROJECT_SECRET_KEYS, clear_text_secrets_from_engine
from model.stack import Stack

# Project keys that are secrets: read as Pulumi secret Outputs below, never part of the model. One
# list, in model/secrets.py, which also refuses them given in clear.
SECRET_KEYS = PROJECT_SECRET_KEYS


def _project_keys() -> set[str]:
    """Every `hypha-infra:*` key the engine handed us, so a misspelt section is an error, not ignored."""
    keys = set(CONFIG.get()) | set(get_config_env())
    return {k.split(":", 1)[1] for k in keys if k.startswith(f"{PROJECT}:")} - set(SECRET_KEYS)


def _spelling_problems(stack_name: str) -> list:
    """One spelling per section, as the engine runs us.

    The engine hands every key as `namespace:key`, so a foreign project prefix (`hypha-infa:backup`)
    is visible here and refused. A section given twice (`hypha-infra:access` and `access`) reaches
    us as one key, the other value gone, so the stack file the CLI read (next to this program, as
    `pulumi` runs it from the project directory) is checked too, the same way `make plan` does.
    """
    keys = sorted(set(CONFIG.get()) | set(get_config_env()))
    problems = [p for p in (namespace_problem(k, f"config key {k}") for k in keys) if p is not None]
    stack_file = ROOT / f"Pulumi.{stack_name}.yaml"
    if stack_file.exists():
        problems += spelling_problems(stack_file, stack_name)
    return problems


def stack_from_config() -> Stack:
    """The validated model of the current stack. Raises ConfigError before any resource exists."""
    problems = _spelling_problems(pulumi.get_stack())
    problems += clear_text_secrets_from_engine(set(CONFIG.get()) | set(get_config_env()), is_config_secret)
    if problems:
        raise ConfigError(pulumi.get_stack(), problems)
    cfg = pulumi.Config(PROJECT)
    raw = {key: _value(cfg.get(key)) for key in sorted(_project_keys())}
    return build_stack({k: v for k, v in raw.items() if v is not None}, pulumi.get_stack())


def _value(text: str | None):
    """A config value as the stack file wrote it. The engine hands maps and lists as JSON and plain
    strings as they are; `Config.get_object` raises ConfigTypeError on a plain string such as
    `tls: hello{`, which must be a config error with its key path (the model says "must be a map")."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, a number too long for int(), nesting too deep
        return text


def deploy_private_key() -> pulumi.Output[str]:
    """The deploy key's private half: a Pulumi secret, never part of the model."""
    return pulumi.Config(PROJECT).require_secret("deployPrivateKey")


def proxmox_api_token() -> pulumi.Output[str]:
    return pulumi.Config("proxmoxve").require_secret("apiToken")
